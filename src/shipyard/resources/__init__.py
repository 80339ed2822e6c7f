"""Shipyard's resource kinds (`shipyard.dev/v1alpha1`): pydantic models, no I/O, no other Shipyard imports.

The names below are loaded on first use (PEP 562): `shipyard.resources.names` and `.selector` are plain
Python, and a CLI call that only needs them must not pay for building every pydantic model at import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import App, AppSpec
    from .base import (API_GROUP, API_VERSION, Condition, FieldError, ObjectMeta, OwnerReference, Resource,
                       Status, set_condition)
    from .endpoint import Endpoint, EndpointSpec
    from .documents import Document, ManifestError, parse_yaml
    from .manifest import load_resources, validate_document
    from .project import Project, ProjectSpec, ProjectStatus
    from .registry import KINDS, kind_class, resolve_kind
    from .secret import Secret, SecretSpec, SecretStatus
    from .serving import ServingResource, ServingSpec, ServingStatus
    from .sweep import Sweep, SweepSpec, SweepStatus, TrialStatus
    from .trainingjob import TrainingJob, TrainingJobSpec, TrainingJobStatus
    from .workspace import Workspace, WorkspaceSpec, WorkspaceStatus

_WHERE = {
    "app": ("App", "AppSpec"),
    "base": ("Condition", "FieldError", "ObjectMeta", "OwnerReference", "Resource", "Status", "set_condition"),
    "names": ("API_GROUP", "API_VERSION"),
    "endpoint": ("Endpoint", "EndpointSpec"),
    "documents": ("Document", "ManifestError", "parse_yaml"),
    "manifest": ("load_resources", "validate_document"),
    "project": ("Project", "ProjectSpec", "ProjectStatus"),
    "registry": ("KINDS", "kind_class", "resolve_kind"),
    "secret": ("Secret", "SecretSpec", "SecretStatus"),
    "serving": ("ServingResource", "ServingSpec", "ServingStatus"),
    "sweep": ("Sweep", "SweepSpec", "SweepStatus", "TrialStatus"),
    "trainingjob": ("TrainingJob", "TrainingJobSpec", "TrainingJobStatus"),
    "workspace": ("Workspace", "WorkspaceSpec", "WorkspaceStatus"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULE_OF])
