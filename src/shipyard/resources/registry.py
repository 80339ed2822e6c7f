"""The kinds Shipyard knows, looked up by kind, plural or short name (as kubectl does)."""

from __future__ import annotations

from .app import App
from .base import Resource
from .endpoint import Endpoint
from .project import Project
from .secret import Secret
from .sweep import Sweep
from .trainingjob import TrainingJob
from .workspace import Workspace

KINDS: dict[str, type[Resource]] = {
    cls.KIND: cls for cls in (TrainingJob, Endpoint, App, Sweep, Workspace, Secret, Project)}


def kind_class(kind: str) -> type[Resource]:
    try:
        return KINDS[kind]
    except KeyError:
        raise KeyError(f"kind {kind!r} is not a Shipyard kind (known: {', '.join(sorted(KINDS))})") from None


def resolve_kind(word: str) -> type[Resource]:
    """Map what a user types (`trainingjobs`, `tj`, `TrainingJob`) to the kind's class."""
    lowered = word.lower()
    for cls in KINDS.values():
        if lowered in (cls.KIND.lower(), cls.PLURAL, *cls.SHORT_NAMES):
            return cls
    raise KeyError(f"unknown resource type {word!r} (known: {', '.join(c.PLURAL for c in KINDS.values())})")


def by_plural(plural: str) -> type[Resource] | None:
    return next((cls for cls in KINDS.values() if cls.PLURAL == plural), None)
