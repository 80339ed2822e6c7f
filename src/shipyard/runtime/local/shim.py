"""The per-pod supervisor (what conmon or containerd-shim are to a container).

Why it exists: the daemon may be killed (even with SIGKILL) while workloads run; they must keep running
and their exit codes must not be lost, so the daemon can re-adopt them on restart. The shim is started in
its own session, outlives the daemon, records the exit code atomically in the pod directory, and makes sure
no process of the pod survives its main process: it becomes a child subreaper, so descendants that escape
into new sessions (torchrun starts its workers that way) are still its to find and kill.

It also writes the pod's output: the workload's stdout and stderr are a pipe it copies into size-capped,
rotated log files (podlog.py), as conmon does for a container.

Limits (cgroups.py): when the pod has a cgroup, the workload's process enters it between fork and exec, so the
shim itself stays outside with the daemon; an exit after the cgroup's OOM killer acted is reported as
`OOMKilled`, as the kubelet does.

It must stay tiny and import only the standard library (podlog.py and cgroups.py do too): it starts once per
pod, on the critical path.
Usage: python -m shipyard.runtime.local.shim POD_DIR   (POD_DIR/launch.json describes what to run)
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from shipyard.runtime.local import cgroups
from shipyard.runtime.local.podlog import DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, RotatingLog

PR_SET_CHILD_SUBREAPER = 36
READ_BYTES = 1 << 16
DRAIN_SECONDS = 5.0


def write_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def descendants(root: int) -> list[int]:
    """All live descendants of `root`, from /proc (children before grandchildren)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        parents.setdefault(int(fields[1]), []).append(int(entry))
    out: list[int] = []
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        for child in parents.get(pid, []):
            out.append(child)
            frontier.append(child)
    return out


def signal_all(sig: int) -> None:
    for pid in descendants(os.getpid()):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _ignore(_signum: int, _frame: object) -> None:
    pass


def copy_output(fd: int, log: RotatingLog) -> None:
    """The pod's output, from its pipe to its rotated log files, until every writer has closed the pipe."""
    try:
        while True:
            try:
                data = os.read(fd, READ_BYTES)
            except InterruptedError:
                continue
            if not data:
                return
            try:
                log.write(data)
            except OSError:
                pass  # a full disk loses output, never the pod: keep draining so the workload never blocks
    finally:
        os.close(fd)
        log.close()


def main(pod_dir: Path) -> int:
    launch = json.loads((pod_dir / "launch.json").read_text())
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: descendants that escape to new sessions are then found by the runtime's env scan
    grace = float(launch.get("gracePeriodSeconds", 30))
    terminating = threading.Event()

    def on_term(_signum: int, _frame: object) -> None:
        # Forward once; after the grace period everything left is killed, as the kubelet does.
        if terminating.is_set():
            return
        terminating.set()
        signal_all(signal.SIGTERM)
        killer = threading.Timer(grace, signal_all, args=(signal.SIGKILL,))
        killer.daemon = True
        killer.start()

    signal.signal(signal.SIGTERM, on_term)
    # Caught, not ignored: an ignored signal stays ignored across exec, and the workload must keep its own
    # Ctrl-C/SIGHUP behaviour. The shim itself outlives a closed terminal or a Ctrl-C of `shipyard up`.
    signal.signal(signal.SIGINT, _ignore)
    signal.signal(signal.SIGHUP, _ignore)

    log = RotatingLog(Path(launch["logPath"]), int(launch.get("logMaxBytes", DEFAULT_MAX_BYTES)),
                      int(launch.get("logMaxFiles", DEFAULT_MAX_FILES)))
    # The workload writes into a pipe that only we read, so the log is capped and rotated by its one writer
    # (see podlog.py for why not a file handed to the workload).
    read_end, write_end = os.pipe()
    cgroup = cgroups.read_spec(pod_dir)
    ooms_before = cgroups.oom_kills(cgroup)
    try:
        child = subprocess.Popen(
            launch["argv"], env=launch["env"], cwd=launch["cwd"], stdin=subprocess.DEVNULL,
            stdout=write_end, stderr=subprocess.STDOUT, process_group=0,
            preexec_fn=(lambda: cgroups.enter(cgroup)) if cgroup else None,
        )
    except (OSError, subprocess.SubprocessError) as exc:  # the latter: it could not enter its cgroup
        os.close(read_end)
        os.close(write_end)
        why = getattr(exc, "strerror", None) or (
            f"{exc} (entering the pod's cgroup failed)" if isinstance(exc, subprocess.SubprocessError) else exc)
        log.write(f"shipyard: cannot start {launch['argv'][0]!r}: {why}\n".encode())
        log.close()
        code = 127 if isinstance(exc, FileNotFoundError) else 126
        write_atomic(pod_dir / "exit.json", {"exitCode": code, "reason": "StartError",
                                             "message": f"cannot start {launch['argv'][0]!r}: {why}",
                                             "finishedAt": time.time()})
        return 0
    os.close(write_end)
    copier = threading.Thread(target=copy_output, args=(read_end, log), daemon=True)
    copier.start()
    write_atomic(pod_dir / "started.json", {"pid": child.pid, "startedAt": time.time()})
    if terminating.is_set():  # SIGTERM arrived while starting
        signal_all(signal.SIGTERM)
    while True:
        try:
            status = child.wait()
            break
        except InterruptedError:
            continue
    # The main process is gone: like a container whose init exits, nothing of the pod may linger.
    signal_all(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)  # reap re-parented orphans
        except ChildProcessError:
            break
        if pid == 0:
            if not descendants(os.getpid()):
                break
            time.sleep(0.01)
    # Everything of the pod is gone, so the pipe is at its end: the log is whole before the exit is told.
    copier.join(timeout=DRAIN_SECONDS)
    code = status if status >= 0 else 128 - status
    result = {"exitCode": code, "finishedAt": time.time()}
    ooms = cgroups.oom_kills(cgroup) - ooms_before
    if ooms > 0 and code != 0 and not terminating.is_set():
        limit = cgroup.get("memoryLimit") if cgroup else None
        result["reason"] = "OOMKilled"
        result["message"] = (f"the out-of-memory killer stopped {ooms} process(es) of the container at its memory "
                             f"limit" + (f" of {cgroups.format_bytes(int(limit))}" if limit else ""))
        if status < 0:
            result["signal"] = -status
    elif status < 0:
        result["signal"] = -status
        result["reason"] = "Signaled"
        result["message"] = f"terminated by signal {signal.Signals(-status).name}"
    elif terminating.is_set():
        result["reason"] = "Terminated"
    else:
        result["reason"] = "Completed" if code == 0 else "Error"
    write_atomic(pod_dir / "exit.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
