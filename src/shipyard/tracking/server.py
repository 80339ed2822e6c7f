"""The MLflow tracking server a daemon runs for itself: `mlflow server` over SQLite, as a child process.

- Started in the background: it takes 8–16 s to answer (imports, schema migrations on a new database), and the
  daemon's API must not wait for it. Until it answers /health, tracking calls fail and controllers retry.
- In a process group of its own, so stopping it reaches its uvicorn worker too, and Ctrl-C on a foreground
  `shipyard up` reaches the daemon first, which then stops it in order.
- MLflow's job runner (seven huey consumers for GenAI evaluation jobs) is switched off: nothing here uses it,
  and on a small machine those processes compete with training.
- MLflow's usage telemetry is off (MLFLOW_DISABLE_TELEMETRY=true, unless the daemon's environment sets it):
  the server and its UI would otherwise send usage events to MLflow's collector, and fetch their telemetry
  config from the internet — which this machine, or a user's cluster, often cannot reach, and which nobody
  here agreed to. Turning it on is documented in docs/experiments.md.
- Its pid and port are kept in `mlflow/server.json`: a daemon killed with SIGKILL leaves the server running
  (like its workloads), and the next daemon adopts it if it still answers, else stops it, instead of running
  a second server on the same database.
- If it exits on its own, it is restarted (a few times, with a pause), on the same port.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)
HEALTH_TIMEOUT = 1.0
READY_SECONDS = 120.0
POLL_SECONDS = 0.25
MAX_RESTARTS = 3
RESTART_PAUSE = 5.0


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def healthy(url: str, timeout: float = HEALTH_TIMEOUT) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as resp:
            return resp.status == 200
    except (OSError, ValueError):
        return False


# Set for the server unless the daemon's environment says otherwise (a user's MLFLOW_DISABLE_TELEMETRY=false wins).
SERVER_ENV_DEFAULTS = {"MLFLOW_DISABLE_TELEMETRY": "true"}
# Always set: Shipyard never runs MLflow's GenAI jobs.
SERVER_ENV_FIXED = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def server_environment(base: dict[str, str]) -> dict[str, str]:
    """The environment of the `mlflow server` process, from the daemon's."""
    return {**SERVER_ENV_DEFAULTS, **base, **SERVER_ENV_FIXED}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TrackingServer:
    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int | None = None):
        self.dir = directory
        self.host = host
        self._wanted_port = port
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._adopted_pid: int | None = None
        self._log: IO[bytes] | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("prepare() first")
        return f"http://{self.host}:{self.port}"

    @property
    def database(self) -> Path:
        return self.dir / "mlflow.db"

    @property
    def state_file(self) -> Path:
        return self.dir / "server.json"

    @property
    def log_file(self) -> Path:
        return self.dir / "server.log"

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "mlflow", "server",
                "--backend-store-uri", f"sqlite:///{self.database}",
                "--artifacts-destination", str(self.dir / "artifacts"),
                "--host", self.host, "--port", str(self.port), "--workers", "1"]

    # --- lifecycle -----------------------------------------------------------------------------------

    def prepare(self) -> str:
        """Settle the URL (quick): adopt a server a previous daemon left running, or pick the port for a new one."""
        self.dir.mkdir(parents=True, exist_ok=True)
        previous = self._previous()
        if previous is not None:
            pid, port = previous
            if self._wanted_port in (None, port) and healthy(f"http://{self.host}:{port}"):
                self._adopted_pid, self.port = pid, port
                log.info("adopted the MLflow tracking server a previous daemon left running (pid %d)", pid)
                return self.url
            log.info("stopping the MLflow tracking server a previous daemon left behind (pid %d)", pid)
            self._stop_group(pid, None, timeout=10.0)
        self.port = self._wanted_port or free_port(self.host)
        return self.url

    def start(self) -> None:
        """Launch the server (if not adopted) and watch it from a thread; returns at once."""
        if self.port is None:
            self.prepare()
        if self._adopted_pid is not None:
            self._ready.set()
        else:
            self._launch()
        self._watcher = threading.Thread(target=self._watch, name="mlflow-server", daemon=True)
        self._watcher.start()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM to its group) without waiting: the daemon stops other things meanwhile."""
        self._stopping.set()
        pid = self._pid()
        if pid is not None:
            try:
                os.killpg(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass

    def stop(self, timeout: float = 10.0) -> None:
        """Stop it and wait: SIGTERM, then SIGKILL to the whole group after `timeout` seconds."""
        self._stopping.set()
        with self._lock:
            pid = self._pid()
            if pid is not None:
                self._stop_group(pid, self._process, timeout)
            self._process = None
            self._adopted_pid = None
            if self._log is not None:
                self._log.close()
                self._log = None
        self.state_file.unlink(missing_ok=True)

    # --- internals -----------------------------------------------------------------------------------

    def _pid(self) -> int | None:
        if self._process is not None:
            return self._process.pid
        return self._adopted_pid

    def _previous(self) -> tuple[int, int] | None:
        try:
            state = json.loads(self.state_file.read_text())
            pid, port = int(state["pid"]), int(state["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        # A recycled pid must not be taken for the server: its command line names this database.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        if b"mlflow" not in cmdline or str(self.database).encode() not in cmdline:
            return None
        return pid, port

    def _launch(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            if self._log is None:
                self._log = open(self.log_file, "ab")
            self._process = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=self._log,
                                             stderr=subprocess.STDOUT, cwd=self.dir,
                                             env=server_environment(dict(os.environ)), start_new_session=True)
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"pid": self._process.pid, "port": self.port}))
            os.replace(tmp, self.state_file)
        log.info("starting the MLflow tracking server at %s (pid %d, log %s)", self.url, self._process.pid,
                 self.log_file)

    def _watch(self) -> None:
        restarts = 0
        started = time.monotonic()
        while not self._stopping.is_set():
            process = self._process
            if process is not None and process.poll() is not None:
                self._ready.clear()
                if self._stopping.is_set():
                    return
                log.error("the MLflow tracking server exited with code %s: %s", process.returncode, self._tail())
                if restarts >= MAX_RESTARTS:
                    log.error("not restarting the MLflow tracking server again; tracking stays unavailable")
                    return
                restarts += 1
                if self._stopping.wait(RESTART_PAUSE):
                    return
                self._launch()
                started = time.monotonic()
                continue
            if not self._ready.is_set():
                if healthy(self.url):
                    self._ready.set()
                    log.info("MLflow tracking server ready at %s after %.1fs", self.url, time.monotonic() - started)
                elif time.monotonic() - started > READY_SECONDS:
                    log.warning("the MLflow tracking server has not answered in %gs; see %s", READY_SECONDS,
                                self.log_file)
                    started = time.monotonic()
            self._stopping.wait(POLL_SECONDS if not self._ready.is_set() else 2.0)

    def _tail(self, lines: int = 5) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join([line for line in text.splitlines() if line.strip()][-lines:])

    @staticmethod
    def _stop_group(pid: int, process: subprocess.Popen[bytes] | None, timeout: float) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if process is not None:
                    if process.poll() is not None:
                        break
                elif not _alive(pid):
                    break
                time.sleep(0.05)
            else:
                continue
            break
        # The group may outlive its leader by a moment (uvicorn finishing): make sure none of it stays.
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
