"""Experiment tracking with MLflow: the tracking server a daemon runs and the Tracker controllers are given.

Only the composition root (`shipyard.server`) imports this package (an import-linter contract): controllers
see a `controllers.tracking.Tracker`, the API a model lister, and neither knows MLflow. mlflow itself is an
optional dependency (`shipyard[tracking]`), imported only when tracking is on, and then off the start-up path.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .mlflow_tracker import MlflowTracker
from .server import TrackingServer

__all__ = ["MlflowTracker", "Tracking", "TrackingServer", "setup"]
log = logging.getLogger(__name__)
EXTERNAL_URI_ENV = "SHIPYARD_MLFLOW_TRACKING_URI"
PORT_ENV = "SHIPYARD_MLFLOW_PORT"
SWITCH_ENV = "SHIPYARD_TRACKING"  # "off" runs the daemon without tracking


@dataclass
class Tracking:
    url: str
    tracker: MlflowTracker
    server: TrackingServer | None  # None when the server is someone else's

    def start(self) -> None:
        """Start our server (if any) and load the MLflow client, both in the background."""
        if self.server is not None:
            self.server.start()
        threading.Thread(target=self._load, name="mlflow-client", daemon=True).start()

    def _load(self) -> None:
        try:
            self.tracker.load()
        except Exception:  # noqa: BLE001 - a broken mlflow install must not take the daemon down
            log.exception("cannot load the MLflow client; experiment tracking is unavailable")

    def terminate(self) -> None:
        if self.server is not None:
            self.server.terminate()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def setup(home: Path, volumes: Path, host: str = "127.0.0.1", environ: dict[str, str] | None = None) \
        -> Tracking | None:
    """How this daemon tracks experiments: an external server (SHIPYARD_MLFLOW_TRACKING_URI), one of its own
    under `home` (this needs the full `mlflow` package, not only `mlflow-skinny`), or none — said once, why."""
    env = os.environ if environ is None else environ

    def local_path(project: str, volume: str, path: str) -> Path:
        return volumes / project / volume / path.lstrip("/")

    if env.get(SWITCH_ENV, "").lower() in ("off", "0", "false", "no"):
        log.info("experiment tracking is off (%s=%s)", SWITCH_ENV, env[SWITCH_ENV])
        return None
    if importlib.util.find_spec("mlflow") is None:
        log.info("experiment tracking is off: mlflow is not installed (pip install 'shipyard[tracking]')")
        return None
    external = env.get(EXTERNAL_URI_ENV)
    if external:
        log.info("experiment tracking with the MLflow tracking server at %s", external)
        return Tracking(external.rstrip("/"), MlflowTracker(external.rstrip("/"), local_path), None)
    if not _installed("mlflow"):
        log.info("experiment tracking is off: running a tracking server needs the full mlflow package "
                 "(pip install 'shipyard[tracking]'), or set %s to use an external one", EXTERNAL_URI_ENV)
        return None
    port = int(env[PORT_ENV]) if env.get(PORT_ENV) else None
    server = TrackingServer(home / "mlflow", host, port)
    url = server.prepare()
    return Tracking(url, MlflowTracker(url, local_path), server)
