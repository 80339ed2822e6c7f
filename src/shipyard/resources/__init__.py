"""Shipyard's resource kinds (`shipyard.dev/v1alpha1`): pydantic models, no I/O, no other Shipyard imports."""

from .base import API_GROUP, API_VERSION, Condition, ObjectMeta, OwnerReference, Resource, Status, set_condition
from .manifest import Document, ManifestError, load_resources, parse_yaml, validate_document
from .registry import KINDS, kind_class, resolve_kind
from .trainingjob import TrainingJob, TrainingJobSpec, TrainingJobStatus

__all__ = [
    "API_GROUP", "API_VERSION", "Condition", "Document", "KINDS", "ManifestError", "ObjectMeta",
    "OwnerReference", "Resource", "Status", "TrainingJob", "TrainingJobSpec", "TrainingJobStatus",
    "kind_class", "load_resources", "parse_yaml", "resolve_kind", "set_condition", "validate_document",
]
