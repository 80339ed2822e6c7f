"""Kind Workspace: a Jupyter Lab or VS Code (code-server) IDE next to the project's data and GPUs.

One replica with a stable name and a home volume of its own (`NAME-home`, mounted at `/workspace`, the IDE's
root) that outlives it, so notebooks survive suspension, restarts and even the Workspace's deletion, like every
project volume. Other `volumes` are the same project claims TrainingJobs and Endpoints mount, so a notebook
and a job read and write the same files.

`idleTimeout`: after this long without activity (requests through the gateway, a busy kernel, an open editor)
the workspace is suspended: its process stops, its volumes stay. `suspend: true` does the same by hand; setting
it back (or opening it again with `shipyard open`) resumes it. Access goes through the gateway with the
workspace's own token, which the IDE itself checks.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from .base import Model, Resource, Status
from .trainingjob import WORKLOADS_IMAGE, EnvVar, ResourceRequirements, Volume, check_unique

Ide = Literal["jupyterlab", "vscode"]
HOME_MOUNT = "/workspace"
IDE_PORT = 8888
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
MIN_IDLE_TIMEOUT = 5  # seconds; shorter would cull a workspace between two keystrokes


def parse_duration(value: Any) -> Any:
    """Seconds from an int or a Go-style duration ("90s", "30m", "1h30m"), as Kubernetes users write them."""
    if value is None or isinstance(value, bool) or isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        match = _DURATION.match(text)
        if text and match and any(match.groups()):
            hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
            return hours * 3600 + minutes * 60 + seconds
        raise ValueError(f"{value!r} is not a duration: use seconds or e.g. 90s, 30m, 2h")
    return value


class WorkspaceIngress(Model):
    """Also expose the IDE on this host through the cluster's ingress controller (the gateway still checks
    nothing: the IDE's own token does)."""

    host: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    class_name: str | None = None


class WorkspaceSpec(Model):
    ide: Ide = "jupyterlab"
    image: str = WORKLOADS_IMAGE
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    volumes: list[Volume] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    home_size: str = Field(default="10Gi", pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
    # Seconds (or a duration string) without activity before the workspace is suspended; none: never.
    idle_timeout: int | None = Field(default=None, ge=MIN_IDLE_TIMEOUT, le=30 * 24 * 3600)
    suspend: bool = False
    ingress: WorkspaceIngress | None = None

    @field_validator("idle_timeout", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return parse_duration(v)

    @model_validator(mode="after")
    def _workspace(self) -> "WorkspaceSpec":
        check_unique(self.volumes, self.env)
        for volume in self.volumes:
            if volume.mount_path == HOME_MOUNT or volume.mount_path.startswith(HOME_MOUNT + "/"):
                raise ValueError(f"volumes: {HOME_MOUNT} is the workspace's home volume; mount {volume.name!r} "
                                 "elsewhere")
        return self


WorkspacePhase = Literal["Pending", "Running", "Suspended", "Failed"]


class WorkspaceStatus(Status):
    phase: WorkspacePhase = "Pending"
    url: str | None = None
    ready: bool = False
    last_activity_time: datetime | None = None
    suspended_time: datetime | None = None
    # Why it is suspended: Idle (idleTimeout), Manual (spec.suspend).
    suspend_reason: str | None = None


class Workspace(Resource):
    KIND: ClassVar[str] = "Workspace"
    PLURAL: ClassVar[str] = "workspaces"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("ws",)

    kind: Literal["Workspace"] = "Workspace"
    spec: WorkspaceSpec
    status: WorkspaceStatus = Field(default_factory=WorkspaceStatus)

    @model_validator(mode="after")
    def _service_name(self) -> "Workspace":
        if not self.metadata.name[0].isalpha():
            raise ValueError("metadata.name: a Workspace name must start with a letter (it names a Service)")
        if len(self.metadata.name) > 52:
            raise ValueError("metadata.name: at most 52 characters (its pod is NAME-0 and its volume NAME-home)")
        return self

    @property
    def home_volume(self) -> str:
        return f"{self.metadata.name}-home"
