"""What every Store can say about projects, over the Store protocol alone (used by the API and controllers)."""

from __future__ import annotations

from shipyard.resources import KINDS
from shipyard.resources.project import DEFAULT_PROJECT, default_project

from .protocol import Store


def held_objects(store: Store, project: str) -> dict[str, int]:
    """How many objects of each namespaced kind the project holds (what deleting it would delete)."""
    counts: dict[str, int] = {}
    for kind, cls in sorted(KINDS.items()):
        if cls.CLUSTER_SCOPED:
            continue
        n = len(store.list(kind, project))
        if n:
            counts[kind] = n
    return counts


def ensure_default_project(store: Store) -> None:
    """`default` exists out of the box (as Kubernetes' namespace does); recreated at start if deleted by hand."""
    if store.get("Project", "", DEFAULT_PROJECT) is None:
        store.apply([default_project()])
