"""Enforced limits for local pods: one cgroup per pod, cgroup v1 or v2 behind one small interface.

Why: requests alone are only counted (capacity.py); a job that keeps allocating would grow until the
machine's global OOM killer picks a victim, which may be the control plane. So a pod's container limits
(`resources.limits`, default its requests) become a cgroup of its own: memory (swap off where the kernel
allows it), CPU (CFS quota over a 100 ms period, and a weight from the request) and pids. The kernel's OOM
killer then acts inside that cgroup only, and counts what it killed (v1 `memory.oom_control`, v2
`memory.events`: `oom_kill N`), which the shim turns into the `OOMKilled` reason.

Layout: `<root>/<controller>/shipyard/<daemon-id>/<pod-uid>` on v1, `<root>/shipyard/<daemon-id>/<pod-uid>`
on v2. The daemon id is derived from the runtime's directory, so a restarted daemon finds (and keeps) the
cgroups of the pods it re-adopts, while two daemons on one machine (tests run several) never touch each
other's cgroups.

What it must never do: put a control-plane process (daemon, gateway, shim) into a workload cgroup. Only the
workload's own process enters its pod's cgroup, from the child side of the fork before exec (`enter`); the
shim stays where the daemon is. Where neither version is writable (not root, or no controllers) the
implementation is `Cgroups` itself ("none"): nothing is enforced, and `describe()` says so and why.

Stdlib only (the shim imports it: it starts once per pod, on the critical path).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import time
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path("/sys/fs/cgroup")
MODE_ENV = "SHIPYARD_LOCAL_CGROUPS"  # "auto" (default): v2, else v1, else none; "off": none
PIDS_ENV = "SHIPYARD_POD_PIDS_LIMIT"
DEFAULT_PIDS = 32768  # per pod; threads count (torch starts one per core in each process)
CFS_PERIOD_US = 100_000
MIN_QUOTA_US = 1_000  # the kernel's minimum
SPEC_FILE = "cgroup.json"  # in the pod directory: what the shim needs (see write_spec)
BASE = "shipyard"
_V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")
_V2_CONTROLLERS = ("memory", "cpu", "pids")
_REMOVE_TRIES = 20


class Limits(NamedTuple):  # not a dataclass: the shim imports this module, and dataclasses costs it milliseconds
    memory: int | None = None  # bytes
    cpu_millis: int | None = None  # the quota (limit), in thousandths of a CPU
    cpu_request_millis: int | None = None  # the weight (request)
    pids: int | None = None

    def describe(self) -> str:
        parts = []
        if self.memory is not None:
            parts.append(f"memory {format_bytes(self.memory)}")
        if self.cpu_millis is not None:
            parts.append(f"cpu {self.cpu_millis}m")
        if self.pids is not None:
            parts.append(f"pids {self.pids}")
        return ", ".join(parts) or "none"


def format_bytes(amount: int) -> str:
    for unit, size in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if amount >= size and amount % size == 0:
            return f"{amount // size}{unit}"
    return str(amount)


def limits_of(container: dict[str, Any], pids: int | None = None) -> Limits:
    """A container's limits: `resources.limits`, each defaulting to its request (as the compilers emit)."""
    from shipyard.resources.quantity import parse_quantity  # not in the shim's path

    resources = container.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = {**requests, **(resources.get("limits") or {})}
    memory = int(parse_quantity(limits["memory"])) if limits.get("memory") is not None else None
    cpu = max(1, int(parse_quantity(limits["cpu"]) * 1000)) if limits.get("cpu") is not None else None
    request = requests.get("cpu", limits.get("cpu"))
    cpu_request = max(1, int(parse_quantity(request) * 1000)) if request is not None else None
    if pids is None:
        pids = int(os.environ.get(PIDS_ENV) or DEFAULT_PIDS)
    return Limits(memory=memory or None, cpu_millis=cpu, cpu_request_millis=cpu_request,
                  pids=pids if pids > 0 else None)


def daemon_id(runtime_root: Path) -> str:
    import hashlib  # not in the shim's path

    return hashlib.sha256(str(runtime_root.resolve()).encode()).hexdigest()[:12]


def _write(path: Path, value: str) -> None:
    # As a shell's `echo VALUE > FILE`: cgroupfs accepts O_CREAT|O_TRUNC on its files and refuses to create
    # others, so a missing interface file still fails; a plain directory (the tests' fake root) gets a file.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _try_write(path: Path, value: str) -> bool:
    try:
        _write(path, value)
        return True
    except OSError:
        return False


def _rmdir(path: Path) -> None:
    path.rmdir()  # a cgroup's interface files go with it (the tests' fake root replaces this)


def _kill_and_rmdir(path: Path) -> bool:
    """Kill what is left in a cgroup and remove it; False if it is still there (busy)."""
    for attempt in range(_REMOVE_TRIES):
        if not path.is_dir():
            return True
        try:
            pids = (path / "cgroup.procs").read_text().split()
        except OSError:
            pids = []
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        try:
            _rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY) or attempt == _REMOVE_TRIES - 1:
                return False
            time.sleep(0.01)  # killed processes leave the group once reaped
    return False


class Cgroups:
    """The interface, and the "none" implementation: nothing is enforced (not root, or no controllers)."""

    version = "none"

    def __init__(self, reason: str = "disabled"):
        self.reason = reason

    def describe(self) -> str:
        return f"none: resource limits are not enforced ({self.reason})"

    def create(self, uid: str, limits: Limits) -> dict[str, Any] | None:
        """Make (or reset) the pod's cgroup with these limits; the spec the shim needs, None when none."""
        return None

    def remove(self, uid: str) -> None:
        """Kill what is left in the pod's cgroup and remove it (retried later while still busy)."""

    def remove_stale(self, keep: set[str]) -> None:
        """Remove this daemon's pod cgroups whose pod uid is not in `keep` (at daemon start)."""

    def close(self) -> None:
        """Remove this daemon's own directory if no pod cgroup is left in it."""

    def cpu_usage_ns(self, uid: str) -> int | None:
        """CPU time the pod's processes used so far, in nanoseconds (None when not measured)."""
        return None

    def path(self, uid: str) -> Path | None:
        """The pod's cgroup (the memory controller's on v1)."""
        return None


class _Hierarchy(Cgroups):
    """What v1 and v2 share: a base directory per controller mount, pod cgroups below it."""

    def __init__(self, bases: dict[str, Path]):
        super().__init__("")
        self._bases = bases  # controller name -> this daemon's directory under it
        self._leftovers: set[Path] = set()
        self._ready = True  # the bases exist (detect made them); close() removes them while empty

    def _ensure_bases(self) -> None:
        if not self._ready:
            self._make_bases()
            self._ready = True

    def _make_bases(self) -> None:
        for base in self._bases.values():
            base.mkdir(parents=True, exist_ok=True)

    def _dirs(self, uid: str) -> list[Path]:
        seen: dict[str, Path] = {}
        for base in self._bases.values():
            seen.setdefault(os.path.realpath(base), base / uid)  # co-mounted controllers share a directory
        return list(seen.values())

    def remove(self, uid: str) -> None:
        for path in self._dirs(uid):
            if not _kill_and_rmdir(path):
                self._leftovers.add(path)
        self._retry_leftovers()

    def _retry_leftovers(self) -> None:
        for path in list(self._leftovers):
            if _kill_and_rmdir(path):
                self._leftovers.discard(path)

    def remove_stale(self, keep: set[str]) -> None:
        for base in {os.path.realpath(b): b for b in self._bases.values()}.values():
            try:
                children = [c for c in base.iterdir() if c.is_dir()]
            except OSError:
                continue
            for child in children:
                if child.name not in keep and not _kill_and_rmdir(child):
                    self._leftovers.add(child)

    def close(self) -> None:
        self._retry_leftovers()
        self._ready = False
        for base in self._bases.values():
            try:
                base.rmdir()
            except OSError:
                pass  # a pod's cgroup is still there (a re-adoptable pod), or already gone

    def describe(self) -> str:
        return f"cgroup {self.version} ({', '.join(self._bases)})"


class CgroupsV1(_Hierarchy):
    version = "v1"

    def create(self, uid: str, limits: Limits) -> dict[str, Any] | None:
        self._ensure_bases()
        dirs = {name: base / uid for name, base in self._bases.items()}
        for path in dirs.values():
            path.mkdir(exist_ok=True)
        memory = dirs["memory"]
        _write(memory / "memory.limit_in_bytes", str(limits.memory) if limits.memory is not None else "-1")
        _try_write(memory / "memory.swappiness", "0")
        # Memory+swap = memory: no swap. Set after the memory limit, which it may not be below; absent (refused)
        # without swap accounting, where swappiness 0 is what is left.
        _try_write(memory / "memory.memsw.limit_in_bytes", str(limits.memory) if limits.memory is not None else "-1")
        if "cpu" in dirs:
            _write(dirs["cpu"] / "cpu.cfs_period_us", str(CFS_PERIOD_US))
            quota = max(MIN_QUOTA_US, limits.cpu_millis * CFS_PERIOD_US // 1000) if limits.cpu_millis else -1
            _write(dirs["cpu"] / "cpu.cfs_quota_us", str(quota))
            if limits.cpu_request_millis:
                _write(dirs["cpu"] / "cpu.shares", str(max(2, limits.cpu_request_millis * 1024 // 1000)))
        if "pids" in dirs:
            _write(dirs["pids"] / "pids.max", str(limits.pids) if limits.pids else "max")
        return {"version": self.version, "procs": [str(p / "cgroup.procs") for p in self._dirs(uid)],
                "oomEvents": str(memory / "memory.oom_control"), "memoryLimit": limits.memory,
                "limits": limits.describe()}

    def cpu_usage_ns(self, uid: str) -> int | None:
        base = self._bases.get("cpuacct")
        try:
            return int((base / uid / "cpuacct.usage").read_text()) if base else None
        except (OSError, ValueError):
            return None

    def path(self, uid: str) -> Path | None:
        return self._bases["memory"] / uid


class CgroupsV2(_Hierarchy):
    version = "v2"

    def __init__(self, bases: dict[str, Path], root: Path, ident: str):
        super().__init__(bases)
        self._root, self._ident = root, ident

    def _make_bases(self) -> None:
        _setup_v2(self._root, self._ident, list(self._bases))

    def create(self, uid: str, limits: Limits) -> dict[str, Any] | None:
        self._ensure_bases()
        path = self._bases["memory"] / uid
        path.mkdir(exist_ok=True)
        _write(path / "memory.max", str(limits.memory) if limits.memory is not None else "max")
        _try_write(path / "memory.swap.max", "0")  # absent (refused) without swap accounting
        _try_write(path / "memory.oom.group", "1")  # an OOM kills the whole pod, as the kubelet sets it
        if "cpu" in self._bases:
            quota = max(MIN_QUOTA_US, limits.cpu_millis * CFS_PERIOD_US // 1000) if limits.cpu_millis else "max"
            _write(path / "cpu.max", f"{quota} {CFS_PERIOD_US}")
            if limits.cpu_request_millis:  # the kubelet's shares → weight conversion
                shares = max(2, limits.cpu_request_millis * 1024 // 1000)
                _write(path / "cpu.weight", str(1 + ((shares - 2) * 9999) // 262142))
        if "pids" in self._bases:
            _write(path / "pids.max", str(limits.pids) if limits.pids else "max")
        return {"version": self.version, "procs": [str(path / "cgroup.procs")],
                "oomEvents": str(path / "memory.events"), "memoryLimit": limits.memory,
                "limits": limits.describe()}

    def cpu_usage_ns(self, uid: str) -> int | None:
        try:
            for line in (self._bases["memory"] / uid / "cpu.stat").read_text().splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) * 1000
        except (OSError, ValueError):
            pass
        return None

    def path(self, uid: str) -> Path | None:
        return self._bases["memory"] / uid


def detect(runtime_root: Path, root: Path = ROOT, mode: str | None = None) -> Cgroups:
    """The implementation in force: v2 where the unified hierarchy has a memory controller, else v1 where a
    memory hierarchy is mounted, else none; either only if this process can create its directories."""
    mode = (mode if mode is not None else os.environ.get(MODE_ENV, "auto")).strip().lower() or "auto"
    if mode in ("off", "none", "0", "false"):
        return Cgroups(f"{MODE_ENV}={mode}")
    if mode != "auto":
        return Cgroups(f"{MODE_ENV}={mode!r} is neither 'auto' nor 'off'")
    ident = daemon_id(runtime_root)
    reasons = []
    try:
        available = (root / "cgroup.controllers").read_text().split()
    except OSError:
        available = None
    if available is not None:
        if "memory" in available:
            try:
                return _idle(_setup_v2(root, ident, [c for c in _V2_CONTROLLERS if c in available]))
            except OSError as exc:
                reasons.append(f"cgroup v2 is not writable: {exc.strerror or exc}")
        else:
            reasons.append("cgroup v2 has no memory controller")
    if (root / "memory" / "cgroup.procs").exists():
        try:
            return _idle(_setup_v1(root, ident))
        except OSError as exc:
            reasons.append(f"cgroup v1 is not writable: {exc.strerror or exc}")
    elif available is None:
        reasons.append(f"no cgroup hierarchy at {root}")
    return Cgroups("; ".join(reasons))


def _idle(found: _Hierarchy) -> _Hierarchy:
    """Made only to prove they can be: removed again until the first pod needs them (a runtime that never
    starts a pod, as in many tests, leaves nothing behind)."""
    found.close()
    return found


def _setup_v1(root: Path, ident: str) -> CgroupsV1:
    bases = {}
    for name in _V1_CONTROLLERS:
        if not (root / name / "cgroup.procs").exists():
            continue
        base = root / name / BASE / ident
        try:
            base.mkdir(parents=True, exist_ok=True)
        except OSError:
            if name == "memory":
                raise
            continue  # an optional controller we cannot use: not enforced, said in describe()
        bases[name] = base
    return CgroupsV1(bases)


def _setup_v2(root: Path, ident: str, controllers: list[str]) -> CgroupsV2:
    enable = " ".join(f"+{c}" for c in controllers)
    path = root
    for part in (BASE, ident):
        # A parent's subtree_control hands controllers to its children; the root's may already have them.
        if not set(controllers) <= set(_read(path / "cgroup.subtree_control").split()):
            _write(path / "cgroup.subtree_control", enable)
        path = path / part
        path.mkdir(exist_ok=True)
    _write(path / "cgroup.subtree_control", enable)
    return CgroupsV2({c: path for c in controllers}, root, ident)


# --- the shim's side (see shim.py) ------------------------------------------------------------------------

def write_spec(pod_dir: Path, spec: dict[str, Any] | None) -> None:
    pod_dir.mkdir(parents=True, exist_ok=True)
    path = pod_dir / SPEC_FILE
    if spec is None:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(SPEC_FILE + ".tmp")
    tmp.write_text(json.dumps(spec))
    os.replace(tmp, path)


def read_spec(pod_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((pod_dir / SPEC_FILE).read_text())
    except (OSError, ValueError):
        return None


def enter(spec: dict[str, Any]) -> None:
    """Move the calling process into the pod's cgroup: run in the child between fork and exec."""
    pid = str(os.getpid())
    for procs in spec["procs"]:
        _write(Path(procs), pid)


def oom_kills(spec: dict[str, Any] | None) -> int:
    """How many processes the OOM killer killed in the pod's cgroup so far (0 when not known)."""
    if not spec:
        return 0
    try:
        for line in Path(spec["oomEvents"]).read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    except (OSError, ValueError, KeyError):
        pass
    return 0
