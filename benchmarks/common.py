"""What the benchmarks share: an isolated daemon in a temporary SHIPYARD_HOME, process lookup, free ports,
Python start-up, progress-line parsing and small statistics.

Benchmarks print figures; they never assert on time. Everything a benchmark starts is stopped in `finally`,
and anything still carrying its marker afterwards is killed and reported, so a crashed run leaves nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SHIPYARD_CLI = [sys.executable, "-m", "shipyard.cli.main"]
PROGRESS_PREFIX = "SHIPYARD_PROGRESS "

# Variables that would leak a developer's own setup into an isolated run (another daemon, a token, a
# torchrun launch, a rank) — removed from every environment the benchmarks hand to a child.
_LEAKY_PREFIXES = ("SHIPYARD_", "PET_", "TORCHELASTIC_")
_LEAKY_NAMES = {"MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                "GROUP_RANK", "OMP_NUM_THREADS"}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(_LEAKY_PREFIXES) and k not in _LEAKY_NAMES}
    env.update(extra)
    return env


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- processes ----------------------------------------------------------------------------------------------

def find_processes(markers: dict[str, str], exclude_cmdline: bytes | None = None) -> list[int]:
    """Live processes whose initial environment holds every `markers` entry (read from /proc/PID/environ)."""
    wanted = {f"{k}={v}".encode() for k, v in markers.items()}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                environ = set(fh.read().split(b"\0"))
            if not wanted <= environ:
                continue
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
            if stat[stat.rfind(b")") + 2:].split()[0] in (b"Z", b"X"):
                continue  # a zombie waiting for its parent: already dead
            if exclude_cmdline is not None:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if exclude_cmdline in fh.read():
                        continue
        except OSError:
            continue
        found.append(int(entry))
    return found


def kill_processes(pids: Iterable[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _process_table() -> dict[int, tuple[int, float]]:
    """pid → (parent pid, CPU seconds used so far) for every live process."""
    tick = os.sysconf("SC_CLK_TCK")
    table: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return table


class ForeignLoad:
    """Measures the CPU that processes *not* started by this benchmark use while it runs (other users' jobs,
    a test suite in another terminal): on a 2-core machine even half a core of it swamps a 1% effect.

    A thread samples the process table every `interval` seconds; a process is ours when this process or one of
    `roots` (the daemon) is among its ancestors. Processes living shorter than one interval are missed, so the
    figure is a lower bound — good enough to flag a disturbed run.
    """

    def __init__(self, roots: Iterable[int] = (), interval: float = 1.0):
        import threading

        self._roots = {os.getpid(), *roots}
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="foreign-load", daemon=True)
        self._foreign_seconds = 0.0
        self._started = 0.0
        self.cores = 0.0  # average foreign CPU, in cores, once stopped

    def _ours(self, pid: int, table: dict[int, tuple[int, float]]) -> bool:
        seen = 0
        while pid > 1 and seen < 64:
            if pid in self._roots:
                return True
            pid = table.get(pid, (0, 0.0))[0]
            seen += 1
        return False

    def _run(self) -> None:
        previous = _process_table()
        while not self._stop.wait(self._interval):
            current = _process_table()
            for pid, (_, cpu) in current.items():
                if pid in previous and not self._ours(pid, current):
                    self._foreign_seconds += max(0.0, cpu - previous[pid][1])
            previous = current

    def __enter__(self) -> "ForeignLoad":
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.cores = self._foreign_seconds / max(1e-9, time.monotonic() - self._started)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def python_startup(samples: int = 7) -> list[float]:
    """Seconds from launching `python -c "import time; print(time.time())"` to the time it prints, per sample
    (the interpreter's own start-up, which no platform can remove, so latencies are reported without it)."""
    out = []
    for _ in range(samples):
        t0 = time.time()
        printed = subprocess.run([sys.executable, "-c", "import time; print(repr(time.time()))"],
                                 capture_output=True, text=True, check=True, env=clean_env()).stdout
        out.append(float(printed.strip()) - t0)
    return out


# --- an isolated daemon ---------------------------------------------------------------------------------------

class Instance:
    """A Shipyard daemon of its own in a temporary SHIPYARD_HOME, driven through the real CLI."""

    def __init__(self, home: Path):
        self.home = home
        self.env = clean_env(SHIPYARD_HOME=str(home), COLUMNS="200")
        self.daemon_pid: int | None = None
        self.url: str | None = None

    def cli(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*SHIPYARD_CLI, *args], env=self.env, cwd=ROOT, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"shipyard {' '.join(args)} exited {result.returncode}: "
                               f"{result.stdout.strip()} {result.stderr.strip()}")
        return result

    def up(self) -> None:
        self.cli("up", "--detach", "--port", "0", "--gateway-port", "0", timeout=120)
        info = json.loads((self.home / "daemon.json").read_text())
        self.daemon_pid, self.url = int(info["pid"]), str(info["url"])

    def down(self) -> None:
        self.cli("down", check=False, timeout=180)

    def client(self, timeout: float = 30.0) -> Any:
        from shipyard.client import Client  # imported late: `--help` must not need the package

        token = (self.home / "admin-token").read_text().strip()
        return Client(url=self.url, token=token, home=self.home, timeout=timeout)

    def processes(self, **env: str) -> list[int]:
        """Processes of this instance (they inherit SHIPYARD_HOME), filtered by further env values; the CLI
        itself (`shipyard down` while it runs) is not one of them."""
        return find_processes({"SHIPYARD_HOME": str(self.home), **env}, exclude_cmdline=b"shipyard.cli.main")

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.home / "daemon.log").read_text(errors="replace")
        except OSError:
            return "(no daemon log)"
        return "\n".join(text.splitlines()[-lines:])


@contextmanager
def shipyard_instance(prefix: str = "shipyard-bench-", env: dict[str, str] | None = None) -> Iterator[Instance]:
    """Start a daemon in a fresh temporary home (with `env` added to its environment); always stop it, kill
    anything left and remove the home."""
    home = Path(tempfile.mkdtemp(prefix=prefix)) / "home"
    instance = Instance(home)
    instance.env.update(env or {})
    try:
        instance.up()
        yield instance
    finally:
        try:
            instance.down()
        except Exception as exc:  # noqa: BLE001 - cleanup must go on
            log(f"warning: `shipyard down` failed: {exc}")
        leftovers = instance.processes()
        if leftovers:
            log(f"warning: processes left running after `shipyard down`: {leftovers}; killing them")
            kill_processes(leftovers)
        shutil.rmtree(home.parent, ignore_errors=True)


# --- progress lines -----------------------------------------------------------------------------------------

def progress_records(text: str) -> list[dict[str, Any]]:
    """Every parseable `SHIPYARD_PROGRESS {json}` line of a log, in order."""
    records = []
    for line in text.splitlines():
        at = line.find(PROGRESS_PREFIX)
        if at < 0:
            continue
        try:
            record = json.loads(line[at + len(PROGRESS_PREFIX):])
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def steady_throughput(records: list[dict[str, Any]], warmup_steps: int, window: int = 10) -> tuple[float, int]:
    """Tokens/s over steps warmup+1 … last, and how many steps that covers.

    examples/train_ddp.py prints, with every step s, the rate over its last `window` steps
    (steps s-window+1 … s). Taking the lines s = warmup + window, warmup + 2·window, … gives windows that
    tile the measured range exactly, each of the same token count, so total tokens / total time is the
    step-weighted harmonic mean of their rates — the true steady-state throughput, not a mean of rates.
    """
    by_step = {r["step"]: r for r in records}
    if warmup_steps < window:
        raise ValueError("the warm-up must cover at least one rate window")
    steps = 0
    seconds_per_token = 0.0
    s = warmup_steps + window
    while s in by_step:
        rate = float(by_step[s]["tokens_per_second"])
        steps += window
        seconds_per_token += window / rate
        s += window
    if steps == 0:
        raise ValueError(f"no progress line at step {warmup_steps + window} (is --log-every 1?)")
    return steps / seconds_per_token, steps


# --- statistics and printing --------------------------------------------------------------------------------

def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float]) -> float:
    """Relative spread (max - min) / median, a plain noise figure for a handful of samples."""
    m = median(values)
    return (max(values) - min(values)) / m if m else 0.0


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A plain-text table; `align` has one letter per column, l or r (default: first left, the rest right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(row, widths, align)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine() -> str:
    import platform

    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU cores ({cpu}), Python {platform.python_version()}, {platform.system()}"
