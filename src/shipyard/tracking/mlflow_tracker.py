"""`controllers.tracking.Tracker` over MLflow's own client (`MlflowClient`), against any tracking server.

What MLflow holds and how Shipyard finds it again:
- one experiment per project, `shipyard/<project>`, created on demand: a bare project name put project
  `default` next to MLflow's own experiment `Default`. Experiments of the bare name that earlier versions
  made are renamed on first use (see _experiment_id): renaming keeps the experiment's id, so its runs, their
  ids (in TrainingJob and Sweep statuses), parent links and the model versions pointing at them stay valid,
  and a project's runs stay in one experiment, where ensure_run looks for them by key.
- a run per tracked object, found again by its tag `shipyard.key` (so ensure_run is idempotent across
  controller restarts); nesting by `mlflow.parentRunId`, which set_parent can also add to an existing run (a
  trial whose run was made before its sweep's, because the tracking server answered late).
- a model version per registration. Its files stay where a job wrote them, on a project volume: the version's
  tags `shipyard.project`, `shipyard.volume` and `shipyard.path` say what the platform mounts to serve it, and
  `shipyard.localUri` where the files are on this machine. The version's `source` is
  `shipyard-volume://PROJECT/VOLUME/PATH`: a tracking server refuses plain local paths as sources (unless
  they lie inside the run's artifact directory), so the source names the volume instead.

Every failure becomes a TrackingError. Controllers call this from their reconcile loops, so a server that is
down must cost little: MLflow's client retries for minutes by default, and here it fails after one attempt
(MLFLOW_HTTP_REQUEST_MAX_RETRIES, unless set) within MLFLOW_HTTP_REQUEST_TIMEOUT seconds, and after a
failure to connect every call fails at once for UNREACHABLE_SECONDS instead of each trying again. An answer
that refuses for good (REJECTED_CODES) is a TrackingRejected, so that nobody waits for it forever.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from shipyard.controllers.tracking import Metric, ModelVersion, RunStatus, TrackingError, TrackingRejected

log = logging.getLogger(__name__)
T = TypeVar("T")
LocalPath = Callable[[str, str, str], Path]  # (project, volume, path inside it) → the directory on this machine

KEY_TAG = "shipyard.key"
PARENT_TAG = "mlflow.parentRunId"
PROJECT_TAG, VOLUME_TAG, PATH_TAG, LOCAL_URI_TAG = "shipyard.project", "shipyard.volume", "shipyard.path", \
    "shipyard.localUri"
SOURCE_SCHEME = "shipyard-volume"
# MLflow's limits per log_batch call and per value.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_VALUE = 6000
MAX_KEY = 250
UNREACHABLE_SECONDS = 10.0
EXPERIMENT_PREFIX = "shipyard/"
# MLflow's error codes for a request that is wrong, not early: sending it again gets the same answer.
REJECTED_CODES = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
                            "PERMISSION_DENIED", "UNAUTHENTICATED", "BAD_REQUEST", "INVALID_STATE",
                            "ENDPOINT_NOT_FOUND"})
# The client's HTTP behaviour, no "View run at" line on stdout (the daemon's log) for every run that ends, and
# no usage telemetry from the daemon's client (often offline; see docs/experiments.md to turn it on).
CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                   "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")


def configure_client() -> None:
    """Short timeouts and no retries for MLflow's HTTP client (it reads them from the environment on every
    request). Values already set win. Processes this one starts inherit them, as they inherit its environment."""
    for name, value in CLIENT_DEFAULTS.items():
        os.environ.setdefault(name, value)


def experiment_name(project: str) -> str:
    return EXPERIMENT_PREFIX + project


def metric_key(key: str) -> str:
    """MLflow accepts letters, digits, `_-. /` in keys: anything else a script prints becomes `_`."""
    return _BAD_KEY_CHARS.sub("_", key)[:MAX_KEY] or "_"


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class MlflowTracker:
    def __init__(self, tracking_uri: str, local_path: LocalPath | None = None):
        self.tracking_uri = tracking_uri
        self._local_path = local_path
        self._client: Any = None
        self._loading = threading.Lock()
        self._experiments: dict[str, str] = {}
        self._unreachable_until = 0.0
        configure_client()

    # --- the client ------------------------------------------------------------------------------------

    def load(self) -> None:
        """Import mlflow and build the client (seconds: the composition root calls this off the start-up path)."""
        with self._loading:
            if self._client is None:
                from mlflow.tracking import MlflowClient

                self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        if self._client is None:
            # A reconcile must not wait seconds for the import: if someone is loading, fail now, retry later.
            if self._loading.locked():
                raise TrackingError("the MLflow client is still loading (the control plane has just started)")
            self.load()
        if time.monotonic() < self._unreachable_until:
            raise TrackingError(f"MLflow tracking server {self.tracking_uri} is unreachable (starting, or down)")
        try:
            return fn(self._client)
        except TrackingError:
            raise
        except Exception as exc:  # noqa: BLE001 - MlflowException, requests' errors, and whatever else mlflow raises
            if _unreachable(exc):
                self._unreachable_until = time.monotonic() + UNREACHABLE_SECONDS
                raise TrackingError(f"MLflow tracking server {self.tracking_uri} is unreachable (starting, or down)") \
                    from exc
            self._experiments.clear()  # an experiment deleted or renamed behind our back: look it up again
            error = TrackingRejected if _code(exc) in REJECTED_CODES else TrackingError
            raise error(f"MLflow {what}: {_message(exc)}") from exc

    # --- runs ----------------------------------------------------------------------------------------

    def _experiment_id(self, client: Any, project: str) -> str:
        cached = self._experiments.get(project)
        if cached is not None:
            return cached
        name = experiment_name(project)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            experiment = self._adopt_legacy(client, project)
        if experiment is None:
            try:
                experiment_id = client.create_experiment(name, tags={PROJECT_TAG: project})
            except Exception as exc:
                if _code(exc) != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment_id = client.get_experiment_by_name(name).experiment_id  # created in between
        else:
            experiment_id = experiment.experiment_id
            if experiment.lifecycle_stage == "deleted":
                client.restore_experiment(experiment_id)  # deleted in the UI: a project's runs go on there
        self._experiments[project] = experiment_id
        return experiment_id

    @staticmethod
    def _adopt_legacy(client: Any, project: str) -> Any:
        """The experiment named after the bare project, renamed `shipyard/<project>`, if Shipyard made it.

        Renaming rather than searching both names on every lookup: the experiment keeps its id, so everything
        that refers to its runs stays valid, and one rename on first use costs nothing afterwards. It is
        Shipyard's if it holds a run tagged with the project (every run Shipyard made is); MLflow's own
        `Default` (id 0, or a case-insensitive database's match for `default`) is never renamed."""
        legacy = client.get_experiment_by_name(project)
        if legacy is None or legacy.name != project or str(legacy.experiment_id) == "0":
            return None
        from mlflow.entities import ViewType

        ours = client.search_runs([legacy.experiment_id], filter_string=f"tags.`{PROJECT_TAG}` = '{project}'",
                                  run_view_type=ViewType.ALL, max_results=1)
        if not ours:
            return None
        try:
            client.rename_experiment(legacy.experiment_id, experiment_name(project))
        except Exception as exc:
            if _code(exc) != "RESOURCE_ALREADY_EXISTS":
                raise
            return client.get_experiment_by_name(experiment_name(project))  # another daemon made it meanwhile
        client.set_experiment_tag(legacy.experiment_id, PROJECT_TAG, project)
        log.info("renamed MLflow experiment %r (runs of project %s made by an earlier Shipyard) to %r", project,
                 project, experiment_name(project))
        return client.get_experiment(legacy.experiment_id)

    def ensure_run(self, key: str, experiment: str, run_name: str, params: dict[str, str], tags: dict[str, str],
                   parent_run_id: str | None = None) -> str:
        if "'" in key:
            raise TrackingError(f"run key {key!r} may not contain a quote")

        def ensure(client: Any) -> str:
            experiment_id = self._experiment_id(client, experiment)
            found = client.search_runs([experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'", max_results=1)
            if found:
                run = found[0]
                if params and not run.data.params:
                    self._log_params(client, run.info.run_id, params)  # created, then interrupted
                return str(run.info.run_id)
            all_tags = {**tags, KEY_TAG: key}
            if parent_run_id:
                all_tags[PARENT_TAG] = parent_run_id
            run = client.create_run(experiment_id, tags=all_tags, run_name=run_name)
            self._log_params(client, run.info.run_id, params)
            return str(run.info.run_id)

        return self._call("ensure_run", ensure)

    @staticmethod
    def _log_params(client: Any, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(metric_key(k), str(v)[:MAX_PARAM_VALUE]) for k, v in params.items()]
        for chunk in _chunks(items, MAX_PARAMS_PER_BATCH):
            client.log_batch(run_id, params=chunk, synchronous=True)

    def log_metrics(self, run_id: str, metrics: list[Metric]) -> None:
        if not metrics:
            return

        def send(client: Any) -> None:
            from mlflow.entities import Metric as MlflowMetric

            items = [MlflowMetric(metric_key(m.key), m.value, m.timestamp_ms, m.step) for m in metrics]
            for chunk in _chunks(items, MAX_METRICS_PER_BATCH):
                client.log_batch(run_id, metrics=chunk, synchronous=True)

        self._call("log_metrics", send)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        def send(client: Any) -> None:
            from mlflow.entities import RunTag

            client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True)

        self._call("set_tags", send)

    def set_terminated(self, run_id: str, status: RunStatus) -> None:
        self._call("set_terminated", lambda client: client.set_terminated(run_id, status))

    def set_parent(self, run_id: str, parent_run_id: str) -> None:
        self._call("set_parent", lambda client: client.set_tag(run_id, PARENT_TAG, parent_run_id))

    # --- the model registry --------------------------------------------------------------------------

    def register_model(self, name: str, run_id: str | None, volume: str, path: str,
                       aliases: tuple[str, ...] = (), project: str | None = None) -> ModelVersion:
        def register(client: Any) -> ModelVersion:
            owner = project
            if owner is None and run_id:
                owner = client.get_run(run_id).data.tags.get(PROJECT_TAG)
            if not owner:
                raise TrackingRejected(f"cannot register {name!r}: whose volume {volume!r} is it? Give the project "
                                    "or the id of a run Shipyard tracks")
            try:
                client.create_registered_model(name)
            except Exception as exc:
                if _code(exc) != "RESOURCE_ALREADY_EXISTS":
                    raise
            tags = {PROJECT_TAG: owner, VOLUME_TAG: volume, PATH_TAG: path}
            if self._local_path is not None:
                tags[LOCAL_URI_TAG] = self._local_path(owner, volume, path).as_uri()
            created = client.create_model_version(name, f"{SOURCE_SCHEME}://{owner}/{volume}{path}", run_id=run_id,
                                                  tags=tags, await_creation_for=0)
            for alias in aliases:
                client.set_registered_model_alias(name, alias, str(created.version))
            return ModelVersion(name, int(created.version), run_id, volume, path, tuple(aliases), owner)

        return self._call("register_model", register)

    def get_model_version(self, name: str, version_or_alias: str) -> ModelVersion:
        def get(client: Any) -> ModelVersion:
            try:
                if version_or_alias.isdigit():
                    found = client.get_model_version(name, version_or_alias)
                else:
                    found = client.get_model_version_by_alias(name, version_or_alias)
            except Exception as exc:
                if _code(exc) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    raise TrackingRejected(f"registered model {name!r} has no version or alias {version_or_alias!r} "
                                        f"({_message(exc)})") from exc
                raise
            return _model_version(found)

        return self._call("get_model_version", get)

    def list_models(self) -> list[ModelVersion]:
        def search(client: Any) -> list[ModelVersion]:
            # Searched versions come without their aliases; registered models carry them (alias → version).
            aliases: dict[tuple[str, str], list[str]] = {}
            for model in _pages(lambda token: client.search_registered_models(max_results=1000, page_token=token)):
                for alias, version in (getattr(model, "aliases", None) or {}).items():
                    aliases.setdefault((model.name, str(version)), []).append(alias)
            versions = _pages(lambda token: client.search_model_versions(max_results=1000, page_token=token))
            out = [_model_version(v, aliases.get((v.name, str(v.version)), ())) for v in versions]
            return sorted(out, key=lambda m: (m.name, -m.version))

        return self._call("list_models", search)


def _pages(fetch: Callable[[str | None], Any]) -> list[Any]:
    out: list[Any] = []
    token = None
    while True:
        page = fetch(token)
        out += list(page)
        token = page.token
        if not token:
            return out


def _model_version(found: Any, aliases: Any = None) -> ModelVersion:
    tags = dict(found.tags or {})
    names = aliases if aliases is not None else (getattr(found, "aliases", None) or ())
    return ModelVersion(name=found.name, version=int(found.version), run_id=found.run_id or None,
                        volume=tags.get(VOLUME_TAG, ""), path=tags.get(PATH_TAG, found.source or ""),
                        aliases=tuple(sorted(names)), project=tags.get(PROJECT_TAG))


def _code(exc: Exception) -> str | None:
    return getattr(exc, "error_code", None)


def _message(exc: Exception) -> str:
    return " ".join(str(getattr(exc, "message", None) or exc).split())[:500]


def _unreachable(exc: Exception) -> bool:
    """No answer from the server at all (refused, reset, timed out), as opposed to an answer that refuses."""
    try:
        import requests
        from mlflow.exceptions import RestException
    except ImportError:
        return False
    if isinstance(exc, RestException):
        return False
    chain: BaseException | None = exc
    while chain is not None:
        if isinstance(chain, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
            return True
        chain = chain.__cause__ or chain.__context__
    text = str(exc)
    return "Max retries exceeded" in text or "Connection refused" in text or "timed out" in text
