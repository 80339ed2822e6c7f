"""Kind Project: a team's space, cluster-scoped, named like the namespace it owns.

A Project says who may do what in it (`members`, each bound to one of the built-in roles view/edit/admin, as a
RoleBinding of that namespace) and what its workloads get when they do not say (`defaults`). The namespace of
every other kind is a project's name. The compiler turns a Project into the objects a cluster needs to keep
teams apart (compiler/project.py); deleting one deletes what it holds, and the API refuses that unless asked
to (`--force`) while it still holds workloads.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from .base import Model, Resource, Status, check_dns1123_label
from .quantity import parse_quantity

DEFAULT_PROJECT = "default"
ROLES = ("view", "edit", "admin")
# Users and groups are named by whoever authenticates them (an OIDC issuer, Kubernetes' TokenReview):
# `alice@example.com`, `system:authenticated`, `oidc:team-a`. The rule is Kubernetes' for RBAC subjects:
# any non-empty string without `/` or whitespace, kept short enough to be a RoleBinding name's part.
_SUBJECT = re.compile(r"^[^/\s]{1,200}$")


class Member(Model):
    kind: Literal["User", "Group", "ServiceAccount"] = "User"
    name: str
    role: Literal["view", "edit", "admin"] = "view"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _SUBJECT.match(v):
            raise ValueError(f"member name {v[:80]!r} must be 1-200 characters without '/' or whitespace")
        return v

    @model_validator(mode="after")
    def _service_account(self) -> "Member":
        if self.kind == "ServiceAccount":
            check_dns1123_label(self.name, "service account name")
        return self


class ContainerDefaults(Model):
    """What a container gets when it names no requests/limits (a LimitRange's defaultRequest/default)."""

    requests: dict[str, str] = Field(default_factory=lambda: {"cpu": "100m", "memory": "256Mi"})
    limits: dict[str, str] = Field(default_factory=dict)

    @field_validator("requests", "limits")
    @classmethod
    def _quantities(cls, v: dict[str, str]) -> dict[str, str]:
        for resource, amount in v.items():
            if resource not in ("cpu", "memory", "ephemeral-storage"):
                raise ValueError(f"{resource!r}: only cpu, memory and ephemeral-storage have defaults")
            parse_quantity(amount)
        return v


    @model_validator(mode="after")
    def _request_within_limit(self) -> "ContainerDefaults":
        # The API server refuses a LimitRange whose default request exceeds its default limit.
        for resource, limit in self.limits.items():
            request = self.requests.get(resource)
            if request is not None and parse_quantity(request) > parse_quantity(limit):
                raise ValueError(f"the default request of {resource} ({request}) exceeds its default limit "
                                 f"({limit})")
        return self


class ProjectDefaults(Model):
    # A Kueue WorkloadPriorityClass (or PriorityClass) name that workloads without one get.
    priority_class: str | None = None
    container: ContainerDefaults = Field(default_factory=ContainerDefaults)

    @field_validator("priority_class")
    @classmethod
    def _priority_class(cls, v: str | None) -> str | None:
        return None if v is None else check_dns1123_label(v, "priority class")


# What a project's quota may cap (a ResourceQuota's `hard`): the sums of its pods' requests and limits, and
# counts of objects. Extended resources (GPUs) can only be capped by request, as in Kubernetes.
QUOTA_AMOUNTS = ("requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "requests.nvidia.com/gpu",
                 "requests.storage", "requests.ephemeral-storage", "limits.ephemeral-storage")
QUOTA_COUNTS = ("pods", "persistentvolumeclaims", "services", "secrets", "configmaps")


def check_quota(quota: dict[str, int | str]) -> dict[str, str]:
    """The quota as quantities (strings); ValueError naming the first bad key or amount."""
    out: dict[str, str] = {}
    for key, raw in quota.items():
        if key not in QUOTA_AMOUNTS + QUOTA_COUNTS:
            raise ValueError(f"quota: {key!r} cannot be capped (one of {', '.join(QUOTA_AMOUNTS + QUOTA_COUNTS)})")
        value = str(raw).strip()
        try:
            amount = parse_quantity(value)
        except ValueError as exc:
            raise ValueError(f"quota: {key}: {exc}") from None
        whole = key in QUOTA_COUNTS or key == "requests.nvidia.com/gpu"
        if whole and amount != amount.to_integral_value():
            raise ValueError(f"quota: {key} {raw!r} must be a whole number")
        out[key] = value
    return dict(sorted(out.items()))


class ProjectSpec(Model):
    display_name: str = Field(default="", max_length=200)
    description: str = Field(default="", max_length=2000)
    members: list[Member] = Field(default_factory=list)
    defaults: ProjectDefaults = Field(default_factory=ProjectDefaults)
    # Hard caps on what the project's pods may hold in all (a ResourceQuota named `quota`); none when unset.
    quota: dict[str, int | str] | None = None

    @field_validator("quota")
    @classmethod
    def _quota(cls, v: dict[str, int | str] | None) -> dict[str, str] | None:
        return None if v is None else check_quota(v)

    @model_validator(mode="after")
    def _quota_has_defaults(self) -> "ProjectSpec":
        # Once a quota caps limits.memory (say), Kubernetes refuses every pod that names no memory limit, and a
        # workload naming no resources is the common case: the LimitRange's default must fill it in.
        container = self.defaults.container
        for key in self.quota or {}:
            kind, _, resource = key.partition(".")
            if resource in ("cpu", "memory", "ephemeral-storage"):
                if resource not in (container.requests if kind == "requests" else container.limits):
                    raise ValueError(f"quota caps {key}: set defaults.container.{kind}.{resource} too, or "
                                     f"Kubernetes refuses every pod that names no {resource} {kind[:-1]}")
        return self

    @field_validator("members")
    @classmethod
    def _unique(cls, v: list[Member]) -> list[Member]:
        seen: set[tuple[str, str]] = set()
        for member in v:
            if (member.kind, member.name) in seen:
                raise ValueError(f"{member.kind} {member.name!r} is listed twice (a member has one role)")
            seen.add((member.kind, member.name))
        return v


class ProjectStatus(Status):
    phase: Literal["Pending", "Active", "Terminating", "Failed"] = "Pending"
    # While it is being deleted: what it still holds, by kind (what its deletion waits for).
    workloads: dict[str, int] = Field(default_factory=dict)


class Project(Resource):
    KIND: ClassVar[str] = "Project"
    PLURAL: ClassVar[str] = "projects"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("project", "proj")
    CLUSTER_SCOPED: ClassVar[bool] = True

    kind: Literal["Project"] = "Project"
    spec: ProjectSpec = Field(default_factory=ProjectSpec)
    status: ProjectStatus = Field(default_factory=ProjectStatus)


def default_project() -> Project:
    return Project.model_validate({"metadata": {"name": DEFAULT_PROJECT},
                                   "spec": {"displayName": "Default",
                                            "description": "Where work goes when no project is named."}})
