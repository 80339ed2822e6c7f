"""Shared building blocks of every Shipyard kind: metadata, conditions, the resource envelope.

Resources describe what a user wants and what was observed; they never do I/O and import nothing else of
Shipyard, so every other layer (compiler, store, controllers, API, CLI) can depend on them freely.
Field names follow Kubernetes (camelCase on the wire, snake_case in Python) and unknown fields are
rejected, because a silently ignored typo in a manifest is the worst kind of bug in a declarative system.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from .names import API_GROUP, API_VERSION  # noqa: F401 - defined where importing them costs nothing

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Kubernetes label keys: optional DNS-subdomain prefix, then a name segment of at most 63 characters.
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                       r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def check_dns1123_label(value: str, what: str = "name") -> str:
    if len(value) > 63 or not DNS1123_LABEL.match(value):
        raise ValueError(
            f"{what} {value!r} must be a DNS-1123 label: at most 63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return value


class FieldError(ValueError):
    """A validator's refusal that names a field below the model it validates (e.g. `trial.args[3]` from a
    spec's validator), so manifest errors point at that field instead of at the whole spec."""

    def __init__(self, path: str, message: str):
        self.path, self.message = path, message
        super().__init__(f"{path}: {message}" if path else message)


def format_loc(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as the field path people write: `spec.volumes[0].mountPath`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def join_path(base: str, sub: str) -> str:
    if not base or not sub or sub.startswith("["):
        return base + sub
    return f"{base}.{sub}"


class Model(BaseModel):
    """Base for every wire type: camelCase aliases, strict about unknown fields."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=False,
    )

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class OwnerReference(Model):
    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(Model):
    name: str
    namespace: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    # Set by the server; a client may echo them back (e.g. `get -o yaml | apply -f -`) and they are ignored.
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    finalizers: list[str] = Field(default_factory=list)
    owner_references: list[OwnerReference] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_dns1123_label(v, "name")

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        # "" is a cluster-scoped object's (a Project's); namespaced kinds refuse it in Resource._scope.
        return v if v == "" else check_dns1123_label(v, "namespace (project)")

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not LABEL_KEY.match(key):
                raise ValueError(f"label key {key!r} is not a valid Kubernetes label key")
            if not LABEL_VALUE.match(value):
                raise ValueError(f"label {key!r} has an invalid value {value!r} (at most 63 characters "
                                 "of letters, digits, '-', '_' or '.')")
        return v


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(Model):
    type: str
    status: ConditionStatus
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = None
    observed_generation: int | None = None


class Status(Model):
    phase: str = "Pending"
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


def set_condition(conditions: list[Condition], new: Condition, now: datetime) -> list[Condition]:
    """Return conditions with `new` merged in; the transition time moves only when the status flips,
    which is what makes `lastTransitionTime` useful (and keeps status writes idempotent)."""
    out: list[Condition] = []
    found = False
    for c in conditions:
        if c.type != new.type:
            out.append(c)
            continue
        found = True
        changed = c.status != new.status
        out.append(new.model_copy(update={
            "last_transition_time": now if changed or c.last_transition_time is None else c.last_transition_time
        }))
    if not found:
        out.append(new.model_copy(update={"last_transition_time": now}))
    return out


class Resource(Model):
    """The envelope every kind shares. Subclasses pin `kind` and give `spec` and `status` types."""

    KIND: ClassVar[str] = ""
    PLURAL: ClassVar[str] = ""
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ()
    # Kinds whose running children cannot follow a spec change (a Job's pod template is immutable) refuse
    # spec updates instead of silently ignoring them.
    SPEC_IMMUTABLE: ClassVar[bool] = False
    # Kept as a custom resource on a cluster (a CRD of the chart); False for kinds a cluster keeps natively.
    CUSTOM_RESOURCE: ClassVar[bool] = True
    # Cluster-scoped kinds (Project) have no namespace: stored and served with namespace "".
    CLUSTER_SCOPED: ClassVar[bool] = False

    api_version: Literal["shipyard.dev/v1alpha1"] = API_VERSION
    kind: str
    metadata: ObjectMeta

    @model_validator(mode="after")
    def _scope(self) -> "Resource":
        if self.CLUSTER_SCOPED:
            # As kubectl does for a cluster-scoped object, a namespace in its manifest is ignored.
            self.metadata.namespace = ""
        elif not self.metadata.namespace:
            raise FieldError("metadata.namespace", "must name a project (it may not be empty)")
        return self

    def to_wire(self) -> dict[str, Any]:
        wire = super().to_wire()
        if self.CLUSTER_SCOPED:  # as the Kubernetes API writes a cluster-scoped object: no namespace at all
            wire["metadata"].pop("namespace", None)
        return wire

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.metadata.namespace, self.metadata.name)

    @property
    def ref(self) -> str:
        return f"{self.kind.lower()}/{self.metadata.name}"
