"""Resolving an Endpoint's `models:/NAME/VERSION` or `models:/NAME@alias` through the tracker's registry.

A resolution is kept for REFRESH_SECONDS, then asked again: that is how a version moved behind an alias is
noticed (and rolled out) without a registry watch, while an Endpoint reconciled every second costs the
registry one call per REFRESH_SECONDS. A failure is kept for RETRY_SECONDS. If the registry cannot answer
but the same reference was resolved before, the Endpoint keeps serving that version: a tracking server that
restarts must not take models off the air. Only a reference never resolved leaves the Endpoint Pending.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shipyard.compiler import RegistryModel
from shipyard.resources import Condition, Endpoint
from shipyard.resources.endpoint import ResolvedModel, parse_model_uri

from ..tracking import ModelVersion, Tracker, TrackingError

CONDITION = "ModelResolved"
REFRESH_SECONDS = 10.0
RETRY_SECONDS = 5.0
NO_TRACKING = ("model registry references need experiment tracking, which is off in this control plane "
               "(install shipyard[tracking] and restart it), or use a path on a volume")


@dataclass(frozen=True)
class Resolution:
    model: RegistryModel | None  # what to compile with; None: nothing usable yet
    record: ResolvedModel | None  # for status.resolvedModel
    condition: Condition


@dataclass(frozen=True)
class _Answer:
    uri: str
    version: ModelVersion | None
    error: str
    expires: datetime


def registry_ref(resource: object) -> bool:
    return isinstance(resource, Endpoint) and parse_model_uri(resource.spec.model) is not None


def usable(mv: ModelVersion, project: str) -> str:
    """Why this version cannot be served by an Endpoint of `project` ("" when it can)."""
    if not mv.volume:
        return (f"version {mv.version} of {mv.name!r} was not registered by Shipyard (it has no shipyard.volume "
                "tag), so there is no volume to mount")
    if not mv.path.startswith("/") or ".." in mv.path.split("/"):
        return f"version {mv.version} of {mv.name!r} has path {mv.path!r}; it must be absolute, without '..'"
    if mv.project is not None and mv.project != project:
        return (f"version {mv.version} of {mv.name!r} lies on volume {mv.volume!r} of project {mv.project!r}; an "
                f"Endpoint can mount only its own project's volumes (this one is in {project!r})")
    return ""


class ModelResolver:
    def __init__(self, tracker: Tracker | None):
        self._tracker = tracker
        self._answers: dict[tuple[str, str], _Answer] = {}

    def resolve(self, endpoint: Endpoint, previous: ResolvedModel | None, now: datetime) -> Resolution:
        ns, name, uri = endpoint.metadata.namespace, endpoint.metadata.name, endpoint.spec.model
        answer = self._answers.get((ns, name))
        if answer is None or answer.uri != uri or now >= answer.expires:
            answer = self._ask(uri, ns, now)
            self._answers[(ns, name)] = answer
        mv = answer.version
        if mv is not None:
            record = ResolvedModel(uri=uri, name=mv.name, version=mv.version, volume=mv.volume, path=mv.path)
            return Resolution(RegistryModel(mv.volume, mv.path, mv.version), record, Condition(
                type=CONDITION, status="True", reason="Resolved",
                message=f"{uri} is version {mv.version}: {mv.path} on volume {mv.volume}"))
        if previous is not None and previous.uri == uri:
            return Resolution(RegistryModel(previous.volume, previous.path, previous.version), previous, Condition(
                type=CONDITION, status="False", reason="RegistryUnavailable",
                message=f"{answer.error}; still serving version {previous.version}, resolved earlier"))
        return Resolution(None, None, Condition(type=CONDITION, status="False", reason="NotResolved",
                                                message=answer.error))

    def forget(self, namespace: str, name: str) -> None:
        self._answers.pop((namespace, name), None)

    def _ask(self, uri: str, project: str, now: datetime) -> _Answer:
        ref = parse_model_uri(uri)
        assert ref is not None
        retry = now + timedelta(seconds=RETRY_SECONDS)
        if self._tracker is None:
            return _Answer(uri, None, NO_TRACKING, retry)
        try:
            mv = self._tracker.get_model_version(ref.name, ref.version_or_alias)
        except TrackingError as exc:
            return _Answer(uri, None, str(exc), retry)
        except Exception as exc:  # noqa: BLE001 - a broken tracker must not stop the Endpoint's reconcile
            return _Answer(uri, None, f"{type(exc).__name__}: {exc}", retry)
        problem = usable(mv, project)
        if problem:
            return _Answer(uri, None, problem, retry)
        return _Answer(uri, mv, "", now + timedelta(seconds=REFRESH_SECONDS))
