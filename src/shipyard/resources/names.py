"""The kinds' names (kind, plural, short names) as plain data, importable without pydantic.

Why: the CLI resolves `tj` to `trainingjobs` on every call, and `get`/`describe` need nothing else of the
resource models (they print the wire form). Importing the pydantic kinds costs more CPU than the rest of such
a call together, so the names live here and `registry.KINDS` is checked against them by a test.
"""

from __future__ import annotations

from typing import NamedTuple

API_GROUP = "shipyard.dev"
API_VERSION = f"{API_GROUP}/v1alpha1"


class KindName(NamedTuple):
    KIND: str
    PLURAL: str
    SHORT_NAMES: tuple[str, ...]
    CLUSTER_SCOPED: bool = False


# In the order `get all` prints them (jobs, then what serves, then what explores, then IDEs).
KIND_NAMES: tuple[KindName, ...] = (
    KindName("TrainingJob", "trainingjobs", ("tj", "trainingjob")),
    KindName("Endpoint", "endpoints", ("ep", "endpoint")),
    KindName("App", "apps", ("app",)),
    KindName("Sweep", "sweeps", ("sw", "sweep")),
    KindName("Workspace", "workspaces", ("ws",)),
    # Left out of `get all` (as kubectl leaves Secrets and Namespaces out of its `get all`).
    KindName("Secret", "secrets", ("secret",)),
    # Cluster-scoped: served at /apis/GROUP/VERSION/projects/NAME, whatever project a command names.
    KindName("Project", "projects", ("project", "proj"), CLUSTER_SCOPED=True),
)


def resolve_name(word: str) -> KindName:
    """Map what a user types (`trainingjobs`, `tj`, `TrainingJob`) to the kind's names; KeyError if unknown."""
    lowered = word.lower()
    for names in KIND_NAMES:
        if lowered in (names.KIND.lower(), names.PLURAL, *names.SHORT_NAMES):
            return names
    raise KeyError(f"unknown resource type {word!r} (known: {', '.join(n.PLURAL for n in KIND_NAMES)})")
