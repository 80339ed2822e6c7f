"""`shipyard up` and `shipyard down`: start and stop the embedded control plane on this machine.

The daemon itself is `python -m shipyard.server` (the composition root); this module only launches it,
waits until it answers, and signals it. The daemon writes SHIPYARD_HOME/daemon.json once it listens and
removes it on exit, so that file plus a live pid is the definition of "running".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

import shipyard.config as config
from shipyard.client import Client, ShipyardError

from .common import CliError

START_SECONDS = 60.0
STOP_SECONDS = 120.0
POLL_SECONDS = 0.1


def _read_info(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, but not ours: still not a Shipyard daemon we may stop (checked below)
    # A recycled pid must not be mistaken for the daemon (and then signalled).
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            return b"shipyard" in cmdline.read_bytes()
        except OSError:
            return False
    return True


def _healthy(url: str) -> bool:
    try:
        with Client(url=url, timeout=2.0) as client:
            return client.health()
    except ShipyardError:
        return False


def _running(p: config.Paths) -> dict[str, Any] | None:
    info = _read_info(p.daemon_info)
    if info and _alive(info.get("pid")) and isinstance(info.get("url"), str) and _healthy(info["url"]):
        return info
    return None


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(tail) or "(empty log)"


def up(
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background.")] = False,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="API port (0: any free port).")]
    = config.DEFAULT_PORT,
    gateway_port: Annotated[int, typer.Option(
        "--gateway-port", min=0, max=65535, help="Gateway port, in front of endpoints and apps (0: any free port).")]
    = config.DEFAULT_GATEWAY_PORT,
    gateway_domain: Annotated[str, typer.Option(
        "--gateway-domain", help="Also route NAME.PROJECT.DOMAIN by Host (needs wildcard DNS to this machine).")]
    = "",
) -> None:
    """Start the Shipyard control plane (API, controllers, local runtime)."""
    p = config.paths()
    info = _running(p)
    if info:
        typer.echo(f"already running at {info['url']}")
        return
    argv = [sys.executable, "-m", "shipyard.server", "--host", host, "--port", str(port),
            "--gateway-port", str(gateway_port)] + (["--gateway-domain", gateway_domain] if gateway_domain else [])
    if not detach:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, argv)
    config.ensure_home(p)
    argv += ["--log-file", str(p.daemon_log)]  # the daemon rotates it (and points its stdout/stderr at it)
    p.daemon_info.unlink(missing_ok=True)  # stale (its pid is dead): the new daemon's file is the signal
    with open(p.daemon_log, "ab") as log:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        code = child.poll()
        if code is not None:
            raise CliError(f"the daemon exited with code {code} while starting: {_log_tail(p.daemon_log)}")
        info = _read_info(p.daemon_info)
        if info and info.get("pid") == child.pid and isinstance(info.get("url"), str) and _healthy(info["url"]):
            mlflow = f", MLflow at {info['mlflowUrl']}" if info.get("mlflowUrl") else ""
            typer.echo(f"Shipyard is up at {info['url']}, gateway at {info.get('gatewayUrl')}{mlflow} "
                       f"(logs: {p.daemon_log})")
            if info.get("podLimits"):
                typer.echo(f"pod limits: {info['podLimits']}")
            return
        time.sleep(POLL_SECONDS)
    child.terminate()
    raise CliError(f"the daemon did not become healthy within {START_SECONDS:g}s; stopped it "
                   f"(logs: {p.daemon_log})")


def down() -> None:
    """Stop the control plane; running jobs are stopped gracefully first."""
    p = config.paths()
    info = _read_info(p.daemon_info)
    pid = info.get("pid") if info else None
    if not info or not _alive(pid):
        if p.daemon_info.exists():
            p.daemon_info.unlink(missing_ok=True)
        typer.echo("no Shipyard daemon is running")
        return
    assert isinstance(pid, int)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        typer.echo("no Shipyard daemon is running")
        return
    except PermissionError:
        raise CliError(f"not allowed to stop the daemon (pid {pid}); it belongs to another user") from None
    deadline = time.monotonic() + STOP_SECONDS
    while time.monotonic() < deadline:
        # Reap it if it happens to be our child (started with `up --detach` in this process).
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not _alive(pid):
            p.daemon_info.unlink(missing_ok=True)
            typer.echo("Shipyard stopped")
            return
        time.sleep(POLL_SECONDS)
    raise CliError(f"the daemon (pid {pid}) did not stop within {STOP_SECONDS:g}s; see {p.daemon_log}")
