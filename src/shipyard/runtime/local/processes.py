"""Starting, probing and stopping a pod's processes through its shim (see shim.py).

A pod's processes are identified three ways, from cheapest to most thorough: the shim's pid (checked
against its start time, so a recycled pid is never mistaken for it), the shim's `exit.json`, and the
SHIPYARD_POD_UID variable every process of the pod inherits, which finds even processes that escaped into
new sessions after their shim died.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .podlog import DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES

POD_UID_ENV = "SHIPYARD_POD_UID"


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def launch(pod_dir: Path, argv: list[str], env: dict[str, str], cwd: str, log_path: Path,
           grace_seconds: float, log_limits: tuple[int, int] = (DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES)
           ) -> subprocess.Popen[bytes]:
    """Start the pod's shim; its output goes to `log_path`, at most log_limits = (bytes a file, files)."""
    pod_dir.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for stale in ("exit.json", "started.json"):
        (pod_dir / stale).unlink(missing_ok=True)
    # It holds the pod's environment, which may hold secrets: private from its first byte.
    (pod_dir / "launch.json").unlink(missing_ok=True)
    fd = os.open(pod_dir / "launch.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps({"argv": argv, "env": env, "cwd": cwd, "logPath": str(log_path),
                             "gracePeriodSeconds": grace_seconds, "logMaxBytes": log_limits[0],
                             "logMaxFiles": log_limits[1]}))
    return subprocess.Popen(
        [sys.executable, "-m", "shipyard.runtime.local.shim", str(pod_dir)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True, cwd=str(pod_dir),
    )


@dataclass(frozen=True)
class Probe:
    state: str  # "running" | "exited" | "lost"
    exit: dict[str, Any] | None = None


def probe(pod_dir: Path, pid: int, ticks: int | None) -> Probe:
    exit_file = pod_dir / "exit.json"
    if exit_file.exists():
        try:
            return Probe("exited", json.loads(exit_file.read_text()))
        except ValueError:
            pass
    current = start_ticks(pid)
    if current is not None and (ticks is None or current == ticks):
        return Probe("running")
    if exit_file.exists():  # written between the two checks above
        return Probe("exited", json.loads(exit_file.read_text()))
    return Probe("lost")


def terminate(pid: int, ticks: int | None) -> None:
    """Ask the shim to stop the pod: it forwards SIGTERM and kills what is left after the grace period."""
    if start_ticks(pid) is not None and (ticks is None or start_ticks(pid) == ticks):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def pod_processes(pod_uid: str) -> list[int]:
    marker = f"{POD_UID_ENV}={pod_uid}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if marker in fh.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def kill_pod(pod_uid: str, shim_pid: int | None, ticks: int | None) -> int:
    """SIGKILL the shim and every process of the pod; returns how many processes were signalled."""
    victims = set(pod_processes(pod_uid))
    if shim_pid and start_ticks(shim_pid) is not None and (ticks is None or start_ticks(shim_pid) == ticks):
        victims.add(shim_pid)
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(victims)
