"""The composition root: the only place that picks a store and a runtime and starts everything.

`python -m shipyard.server` (what `shipyard up` runs) serves the API, runs the controllers over the SQLite
store, and runs workloads on the local runtime. A lock file makes one daemon per SHIPYARD_HOME; the kernel
drops it when the process dies, even by SIGKILL, so a crashed daemon never blocks the next `shipyard up`.
SIGTERM (`shipyard down`) stops workloads gracefully; SIGKILL leaves them running, to be re-adopted.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import logging.handlers
import os
import signal
import socket
import sys
import time
from importlib.metadata import version as package_version
from pathlib import Path
from typing import IO

import uvicorn

from shipyard.api.app import create_app
from shipyard.api.auth import hash_token, load_or_create_admin_token
from shipyard.compiler.common import GATEWAY_SERVICE_URL
from shipyard.config import DEFAULT_GATEWAY_PORT, Paths, ensure_home, log_limits, paths
from shipyard.controllers.manager import Manager
from shipyard.controllers.project import ProjectController
from shipyard.controllers.secret import SecretController
from shipyard.controllers.serving import ServingController
from shipyard.controllers.sweep import SweepController
from shipyard.controllers.trainingjob import TrainingJobController
from shipyard.controllers.workspace import WorkspaceController
from shipyard.ide_activity import HttpIdeActivity
from shipyard.runtime.local.runtime import LocalRuntime
from shipyard.pod_access import RuntimePortForward, RuntimeWorkspaceTokens
from shipyard.pod_logs import LocalPodLogs, PodLogs
from shipyard.store.projects import ensure_default_project
from shipyard.store.sqlite import SQLiteStore
from shipyard.gateway import GatewayServer, RouteTable, create_gateway_app
from shipyard.gateway_wiring import GatewayTraffic, StoreKeys, activator
from shipyard.tracking import setup as setup_tracking

log = logging.getLogger("shipyard.server")


class RuntimeLogs(PodLogs):
    """`shipyard logs KIND/NAME` here: the local runtime's log files of the pods pod_logs.choose picks."""

    def __init__(self, runtime: LocalRuntime):
        super().__init__(LocalPodLogs(runtime))


class DaemonLogHandler(logging.handlers.RotatingFileHandler):
    """daemon.log, size-rotated. The file is also the daemon's stdout and stderr (where a crash's traceback
    or a library's print lands): `shipyard up` opens it so, and each rotation points them at the new file, so
    nothing keeps writing to a rotated-away file."""

    def __init__(self, path: Path, max_bytes: int, max_files: int):
        super().__init__(path, maxBytes=max_bytes, backupCount=max_files - 1, delay=False)
        self._redirect()

    def doRollover(self) -> None:
        super().doRollover()
        self._redirect()

    def _redirect(self) -> None:
        if self.stream is not None:
            for fd in (1, 2):
                os.dup2(self.stream.fileno(), fd)


def configure_logging(log_file: Path | None) -> None:
    """The daemon's log: stderr (a terminal, for `shipyard up --foreground`), or daemon.log rotated at
    SHIPYARD_DAEMON_LOG_MAX_BYTES × SHIPYARD_DAEMON_LOG_MAX_FILES. The gateway's access log (a line per
    request) is off unless SHIPYARD_GATEWAY_ACCESS_LOG=1: a busy Endpoint would otherwise fill it."""
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if log_file is None:
        logging.basicConfig(level=logging.INFO, format=fmt)
    else:
        max_bytes, max_files = log_limits("SHIPYARD_DAEMON_LOG")
        handler = DaemonLogHandler(log_file, max_bytes, max_files)
        handler.setFormatter(logging.Formatter(fmt))
        logging.basicConfig(level=logging.INFO, handlers=[handler])
    if os.environ.get("SHIPYARD_GATEWAY_ACCESS_LOG", "").lower() not in ("1", "true", "yes"):
        logging.getLogger("shipyard.gateway.access").setLevel(logging.WARNING)


def acquire_lock(p: Paths) -> IO[str]:
    handle = open(p.daemon_lock, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"error: another Shipyard daemon is running for {p.home}") from None
    return handle


def write_daemon_info(p: Paths, url: str, gateway_url: str, mlflow_url: str | None = None,
                      pod_limits: str | None = None) -> None:
    tmp = p.daemon_info.with_suffix(".tmp")
    info = {"pid": os.getpid(), "url": url, "gatewayUrl": gateway_url, "started": time.time()}
    if mlflow_url:
        info["mlflowUrl"] = mlflow_url
    if pod_limits:
        info["podLimits"] = pod_limits  # the cgroup version enforcing pods' limits, or why none (`up` says it)
    tmp.write_text(json.dumps(info))
    os.replace(tmp, p.daemon_info)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shipyard-server", description="Shipyard's embedded control plane")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SHIPYARD_PORT", "7433")))
    parser.add_argument("--gateway-port", type=int, default=int(os.environ.get("SHIPYARD_GATEWAY_PORT", DEFAULT_GATEWAY_PORT)),
                        help="the gateway's port, in front of every Endpoint and App (0: any free port)")
    parser.add_argument("--gateway-domain", default=os.environ.get("SHIPYARD_GATEWAY_DOMAIN") or None,
                        help="also route by Host: NAME.PROJECT.DOMAIN (a wildcard DNS name pointing here)")
    parser.add_argument("--log-file", type=Path, default=None,
                        help="log to this file, size-rotated, instead of stderr (`shipyard up` gives daemon.log)")
    args = parser.parse_args(argv)
    try:
        configure_logging(args.log_file)
        pod_log_limits = log_limits("SHIPYARD_POD_LOG")
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None

    p = paths()
    ensure_home(p)
    lock = acquire_lock(p)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        raise SystemExit(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    sock.listen(128)
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}"

    store = SQLiteStore(p.database)
    routes = RouteTable()
    # activate() wakes the controller of a route that is asked for while scaled to zero; `manager` is bound
    # below (the gateway must listen first: its URL goes into the runtime's and controllers' wiring).
    activate = activator(routes, lambda kind, ns, name: manager.enqueue(kind, ns, name))
    gateway = GatewayServer(create_gateway_app(routes, StoreKeys(store.api_keys), activate,
                                               domain=args.gateway_domain), args.host, args.gateway_port)
    try:
        gateway.start()
    except OSError as exc:
        raise SystemExit(f"error: the gateway cannot listen on {args.host}:{args.gateway_port}: "
                         f"{exc.strerror}") from None
    traffic = GatewayTraffic(routes, gateway.url)
    runtime = LocalRuntime(p.runtime, p.volumes, p.logs, metrics=traffic,
                           service_urls={GATEWAY_SERVICE_URL: gateway.url}, log_limits=pod_log_limits)
    # Our own MLflow server (started below, in the background), an external one, or none (logged why).
    tracking = setup_tracking(p.home, p.volumes)
    tracker = tracking.tracker if tracking else None
    manager = Manager(store, runtime, [TrainingJobController(store, runtime, tracker=tracker),
                                       ServingController("Endpoint", store, runtime, traffic, keys=store.api_keys,
                                                         tracker=tracker),
                                       ServingController("App", store, runtime, traffic, keys=store.api_keys),
                                       SweepController(store, tracker=tracker),
                                       WorkspaceController(store, runtime, traffic, HttpIdeActivity()),
                                       SecretController(store, runtime), ProjectController(store, runtime)])
    ensure_default_project(store)
    token = load_or_create_admin_token(p.admin_token)
    app = create_app(store, RuntimeLogs(runtime), hash_token(token), package_version("shipyard"),
                     port_forward=RuntimePortForward(runtime), models=tracker,
                     workspace_tokens=RuntimeWorkspaceTokens(runtime))

    if tracking is not None:
        tracking.start()
    runtime.start()
    manager.start()
    write_daemon_info(p, url, gateway.url, tracking.url if tracking else None, runtime.cgroups.describe())
    log.info("Shipyard %s listening on %s, gateway on %s%s (home %s)", package_version("shipyard"), url,
             gateway.url, f", MLflow on {tracking.url}" if tracking else "", p.home)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5))
    # uvicorn re-raises the signal that stopped it once it has shut down, restoring the handler it found
    # first; a no-op handler here makes that re-raise harmless, so the cleanup below always runs.
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    try:
        server.run(sockets=[sock])
    finally:
        log.info("shutting down: stopping controllers and workloads")
        manager.stop()
        log.info("controllers stopped")
        if tracking is not None:
            tracking.terminate()  # it shuts down while the workloads do; waited for below
        gateway.stop()
        runtime.stop(stop_pods=True)
        log.info("workloads stopped")
        if tracking is not None:
            tracking.stop()
            log.info("tracking server stopped")
        store.close()
        try:
            if json.loads(p.daemon_info.read_text()).get("pid") == os.getpid():
                p.daemon_info.unlink()
        except (OSError, ValueError):
            pass
        lock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
