"""What controllers need from experiment tracking (MLflow), as a protocol, plus an in-memory fake for tests.

Controllers never import mlflow: the composition root gives them a Tracker (shipyard.tracking.MlflowTracker
against the tracking server `shipyard up` starts, or an external one), or none — then nothing is tracked and
everything else works. Every call may fail (the server starting, restarting, unreachable): callers treat a
TrackingError as "try again on a later reconcile", never as a reason to fail a training job. A TrackingRejected
is the one failure that retrying cannot cure (the server answered and refused): whoever waits on the call
(a Sweep registering its best trial) stops waiting and says why.

`experiment` is the project: how it is named in the tracker is the tracker's business (MLflow: `shipyard/<project>`).
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

RunStatus = Literal["RUNNING", "FINISHED", "FAILED", "KILLED"]


class TrackingError(Exception):
    """The tracker could not do it now (server down, not ready yet): retry later."""


class TrackingRejected(TrackingError):
    """The tracker answered and refused (an invalid name, no permission, a run that does not exist): the same
    call will fail again."""


@dataclass(frozen=True)
class Metric:
    key: str
    value: float
    step: int
    timestamp_ms: int


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    run_id: str | None
    # Where the files are, as the platform mounts them: a project volume and a path inside it.
    volume: str
    path: str
    aliases: tuple[str, ...] = ()
    # The project whose volume holds the files (volume names are per project); None when it is not known.
    project: str | None = None


class Tracker(Protocol):
    def ensure_run(self, key: str, experiment: str, run_name: str, params: dict[str, str], tags: dict[str, str],
                   parent_run_id: str | None = None) -> str:
        """The id of the run tagged with `key` (e.g. "TrainingJob/default/llm/uid"), created if absent.
        Idempotent: a controller restarted mid-way finds its run instead of making a second one."""

    def log_metrics(self, run_id: str, metrics: list[Metric]) -> None: ...

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """Overwrite these tags of a run (some change over its life, such as a job's restart count)."""

    def set_terminated(self, run_id: str, status: RunStatus) -> None: ...

    def set_parent(self, run_id: str, parent_run_id: str) -> None:
        """Nest a run under another after the fact (a run created before its parent existed). Idempotent."""

    def register_model(self, name: str, run_id: str | None, volume: str, path: str,
                       aliases: tuple[str, ...] = (), project: str | None = None) -> ModelVersion:
        """A new version of registered model `name` whose files are `path` on project volume `volume`.
        The project is the run's (its `shipyard.project` tag) unless given."""

    def get_model_version(self, name: str, version_or_alias: str) -> ModelVersion:
        """`version_or_alias`: "3", or an alias such as "champion"; TrackingError if there is none."""

    def list_models(self) -> list[ModelVersion]: ...


@dataclass
class FakeTracker:
    """Records everything in memory; `fail` makes every call raise TrackingError (a server that is down), and
    the calls named in `refuse` raise TrackingRejected (a server that says no)."""

    runs: dict[str, dict] = field(default_factory=dict)
    models: list[ModelVersion] = field(default_factory=list)
    fail: bool = False
    refuse: set[str] = field(default_factory=set)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _check(self, call: str = "") -> None:
        if self.fail:
            raise TrackingError("tracking server unavailable")
        if call in self.refuse:
            raise TrackingRejected(f"{call} refused")

    def ensure_run(self, key, experiment, run_name, params, tags, parent_run_id=None):
        self._check()
        with self._lock:
            for run_id, run in self.runs.items():
                if run["key"] == key:
                    return run_id
            run_id = f"run{next(self._ids)}"
            self.runs[run_id] = {"key": key, "experiment": experiment, "name": run_name, "params": dict(params),
                                 "tags": dict(tags), "parent": parent_run_id, "metrics": [], "status": "RUNNING"}
            return run_id

    def log_metrics(self, run_id, metrics):
        self._check()
        self.runs[run_id]["metrics"].extend(metrics)

    def set_tags(self, run_id, tags):
        self._check()
        self.runs[run_id]["tags"].update(tags)

    def set_terminated(self, run_id, status):
        self._check()
        self.runs[run_id]["status"] = status

    def set_parent(self, run_id, parent_run_id):
        self._check("set_parent")
        if run_id not in self.runs:
            raise TrackingRejected(f"run {run_id!r} does not exist")
        self.runs[run_id]["parent"] = parent_run_id

    def register_model(self, name, run_id, volume, path, aliases=(), project=None):
        self._check("register_model")
        with self._lock:
            if project is None and run_id in self.runs:
                project = self.runs[run_id]["tags"].get("shipyard.project")
            version = 1 + max((m.version for m in self.models if m.name == name), default=0)
            mv = ModelVersion(name, version, run_id, volume, path, tuple(aliases), project)
            # An alias names one version at a time: moving it takes it from the previous holder.
            self.models = [m if not set(m.aliases) & set(aliases) or m.name != name
                           else replace(m, aliases=tuple(a for a in m.aliases if a not in aliases))
                           for m in self.models]
            self.models.append(mv)
            return mv

    def get_model_version(self, name, version_or_alias):
        self._check()
        for m in self.models:
            if m.name == name and (str(m.version) == version_or_alias or version_or_alias in m.aliases):
                return m
        raise TrackingError(f"registered model {name!r} has no version or alias {version_or_alias!r}")

    def list_models(self):
        self._check()
        return list(self.models)
