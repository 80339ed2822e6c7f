"""Shipyard's resource kinds (`shipyard.dev/v1alpha1`): pydantic models, no I/O, no other Shipyard imports."""

from .app import App, AppSpec
from .base import (API_GROUP, API_VERSION, Condition, FieldError, ObjectMeta, OwnerReference, Resource, Status,
                   set_condition)
from .endpoint import Endpoint, EndpointSpec
from .manifest import Document, ManifestError, load_resources, parse_yaml, validate_document
from .registry import KINDS, kind_class, resolve_kind
from .serving import ServingResource, ServingSpec, ServingStatus
from .sweep import Sweep, SweepSpec, SweepStatus, TrialStatus
from .trainingjob import TrainingJob, TrainingJobSpec, TrainingJobStatus
from .workspace import Workspace, WorkspaceSpec, WorkspaceStatus

__all__ = [
    "API_GROUP", "API_VERSION", "App", "AppSpec", "Condition", "Document", "Endpoint", "EndpointSpec", "FieldError",
    "KINDS", "ManifestError", "ObjectMeta", "OwnerReference", "Resource", "ServingResource", "ServingSpec",
    "ServingStatus", "Status", "Sweep", "SweepSpec", "SweepStatus", "TrainingJob", "TrainingJobSpec",
    "TrainingJobStatus", "TrialStatus", "Workspace", "WorkspaceSpec", "WorkspaceStatus", "kind_class", "load_resources", "parse_yaml", "resolve_kind",
    "set_condition", "validate_document",
]
