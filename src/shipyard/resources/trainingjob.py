"""Kind TrainingJob: a gang of replicas that rendezvous like torchrun expects and restart together.

The spec says what to run and how to heal; the status is what the controller observed. Defaults that
matter to users (maxRestarts=3, backoff) live here so that `get -o yaml` shows them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from .base import FieldError, Model, Resource, Status, check_dns1123_label
from .quantity import parse_quantity
from .secret import check_secret_key

GPU_RESOURCE = "nvidia.com/gpu"
RESOURCE_NAMES = ("cpu", "memory", GPU_RESOURCE)
# The image built from this repository (Python, torch and `shipyard.workloads`), run as the non-root user 1000
# of the restricted security context. Kinds default to it so a manifest that runs locally runs on a cluster.
WORKLOADS_IMAGE = "ghcr.io/shipyard-dev/shipyard-workloads:0.1.0"


# The name of a Shipyard Secret of the same project (its native Secret has the same name).
SecretName = Annotated[str, AfterValidator(lambda v: check_dns1123_label(v, "secret name"))]


class SecretKeySelector(Model):
    """A key of a Shipyard Secret of the same project (its native Secret has the same name)."""

    name: SecretName
    key: str

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        return check_secret_key(v)


class EnvVarSource(Model):
    secret_key_ref: SecretKeySelector


class EnvVar(Model):
    """`value`, or `valueFrom.secretKeyRef`: a credential reaches the pod from a Secret and never appears in
    the workload's own spec (nor, therefore, in its `get -o yaml`, events or tracked parameters)."""

    name: str = Field(min_length=1, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    # None only with valueFrom; a plain `{name: X}` still means the empty string, as it always did.
    value: str | None = None
    value_from: EnvVarSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "EnvVar":
        if self.value_from is not None and self.value is not None:
            raise ValueError(f"env {self.name}: set either value or valueFrom, not both")
        if self.value_from is None and self.value is None:
            self.value = ""
        return self


class ResourceRequirements(Model):
    """Per-replica requests, which are also the limits: a gang of training processes wants exactly this."""

    model_config = Model.model_config | {"extra": "forbid"}

    cpu: str | None = None
    memory: str | None = None
    gpu: int | None = Field(default=None, alias="nvidia.com/gpu", ge=0)

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _quantity(cls, v: object) -> object:
        if v is None:
            return v
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ValueError("must be a Kubernetes quantity such as '2', '500m' or '4Gi'")
        parse_quantity(v)
        return str(v)

    def as_dict(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.cpu is not None:
            out["cpu"] = self.cpu
        if self.memory is not None:
            out["memory"] = self.memory
        if self.gpu:
            out[GPU_RESOURCE] = str(self.gpu)
        return out


# A secret volume's files: readable by the pod's user only, as Kubernetes' own default (0644) is not.
DEFAULT_SECRET_MODE = 0o400


def _check_mode(v: int | None) -> int | None:
    if v is not None and not 0 <= v <= 0o777:
        raise ValueError(f"mode {v} must be a file mode between 0 and 0777 (511); write 0400 or 256")
    return v


class KeyToPath(Model):
    """One key of the Secret as a file at `path` (relative to the mountPath), optionally with its own mode."""

    key: str
    path: str
    mode: int | None = None

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        return check_secret_key(v)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        parts = v.split("/")
        if not v or v.startswith("/") or len(v) > 4096 or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"path {v[:80]!r} must be a relative file path without '.', '..' or empty segments")
        return v

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: int | None) -> int | None:
        return _check_mode(v)


class SecretVolumeSource(Model):
    """A Secret of the same project as read-only files: every key a file named after it, or only `items`."""

    secret_name: SecretName
    items: list[KeyToPath] = Field(default_factory=list)
    default_mode: int = DEFAULT_SECRET_MODE

    @field_validator("default_mode")
    @classmethod
    def _mode(cls, v: int) -> int:
        _check_mode(v)
        return v

    @model_validator(mode="after")
    def _unique_paths(self) -> "SecretVolumeSource":
        paths = [item.path for item in self.items]
        if len(paths) != len(set(paths)):
            raise FieldError("items", "each path may appear once")
        return self


class Volume(Model):
    """A named persistent volume of the project (jobs and workspaces that name the same volume share it, and
    it outlives them: deleting a job never deletes its data), or, with `secret`, a Secret's keys as read-only
    files (no claim: nothing is stored)."""

    name: str
    mount_path: str
    # size and accessMode are a persistent volume's: None until validated, then their defaults ("10Gi",
    # ReadWriteMany) unless the volume is a secret one, which has neither.
    size: str | None = None
    # ReadWriteMany lets replicas on different nodes (and later workspaces) share the data; single-node
    # clusters such as kind with local-path storage only offer ReadWriteOnce.
    access_mode: Literal["ReadWriteMany", "ReadWriteOnce"] | None = None
    storage_class_name: str | None = None
    secret: SecretVolumeSource | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_dns1123_label(v, "volume name")

    @field_validator("mount_path")
    @classmethod
    def _mount_path(cls, v: str) -> str:
        if not v.startswith("/") or v == "/" or ".." in v.split("/"):
            raise ValueError(f"mountPath {v!r} must be an absolute path below '/' without '..'")
        return v.rstrip("/")

    @field_validator("size")
    @classmethod
    def _size(cls, v: str | None) -> str | None:
        if v is not None and parse_quantity(v) <= 0:
            raise ValueError("size must be positive")
        return v if v is None else str(v)

    @model_validator(mode="after")
    def _source(self) -> "Volume":
        if self.secret is not None:
            storage = [alias for alias, value in (("size", self.size), ("accessMode", self.access_mode),
                                                  ("storageClassName", self.storage_class_name))
                       if value is not None]
            if storage:
                raise FieldError("secret", f"set either secret or {', '.join(storage)} (a persistent volume's "
                                 "storage), not both")
            return self
        if self.size is None:
            self.size = "10Gi"
        if self.access_mode is None:
            self.access_mode = "ReadWriteMany"
        return self

    @property
    def persistent(self) -> bool:
        """Whether a PersistentVolumeClaim backs it (else it is a secret volume)."""
        return self.secret is None


def check_unique(volumes: list[Volume], env: list[EnvVar]) -> None:
    """Refuse duplicates that Kubernetes would reject only at apply time, deep inside a pod template."""
    names = [v.name for v in volumes]
    if len(names) != len(set(names)):
        raise ValueError("volumes: each volume name may appear once")
    paths = [v.mount_path for v in volumes]
    if len(paths) != len(set(paths)):
        raise ValueError("volumes: each mountPath may appear once")
    env_names = [e.name for e in env]
    if len(env_names) != len(set(env_names)):
        raise ValueError("env: each variable may appear once")


class TrainingJobSpec(Model):
    replicas: int = Field(default=1, ge=1, le=1024)
    procs_per_replica: int = Field(default=1, ge=1, le=64)
    image: str = WORKLOADS_IMAGE
    command: list[str] = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    working_dir: str | None = None
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    volumes: list[Volume] = Field(default_factory=list)
    max_restarts: int = Field(default=3, ge=0, le=1000)
    backoff_seconds: float = Field(default=5.0, ge=0, le=3600)
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    termination_grace_period_seconds: int = Field(default=30, ge=0, le=3600)

    @model_validator(mode="after")
    def _unique(self) -> "TrainingJobSpec":
        check_unique(self.volumes, self.env)
        return self


TrainingJobPhase = Literal["Pending", "Running", "Restarting", "Succeeded", "Failed"]


class ReplicaStatus(Model):
    index: int
    phase: str = "Pending"
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None


class Progress(Model):
    """The latest progress line rank 0 reported (see docs/contracts.md)."""

    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    tokens_per_second: float | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    updated_at: datetime | None = None


class TrackingStatus(Model):
    """How far the job's metric history has reached the tracker: per pod, the bytes of its log already sent
    (kept here so that a restarted daemon neither re-sends nor skips lines), and whether the run was ended."""

    log_offsets: dict[str, int] = Field(default_factory=dict)
    run_ended: bool = False


class TrainingJobStatus(Status):
    phase: TrainingJobPhase = "Pending"
    # Gang restarts after a failure, counted against maxRestarts.
    restarts: int = 0
    # Gang restarts after a disruption (preemption, node drain, eviction, node loss): the platform's doing, so
    # never counted against maxRestarts. Kept apart so that each gang still has an attempt number of its own.
    disruptions: int = 0
    start_time: datetime | None = None
    completion_time: datetime | None = None
    last_restart_time: datetime | None = None
    replica_statuses: list[ReplicaStatus] = Field(default_factory=list)
    progress: Progress | None = None
    # The job's MLflow run, when the control plane tracks experiments.
    mlflow_run_id: str | None = None
    tracking: TrackingStatus | None = None

    @property
    def attempt(self) -> int:
        """Which gang this is (0 first): names its Job's and pods' generation (label `shipyard.dev/restart`)
        and is the workload's SHIPYARD_RESTART_COUNT, so a non-zero value always means "resume"."""
        return self.restarts + self.disruptions


class TrainingJob(Resource):
    KIND: ClassVar[str] = "TrainingJob"
    PLURAL: ClassVar[str] = "trainingjobs"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("tj", "trainingjob")
    SPEC_IMMUTABLE: ClassVar[bool] = True

    kind: Literal["TrainingJob"] = "TrainingJob"
    spec: TrainingJobSpec
    status: TrainingJobStatus = Field(default_factory=TrainingJobStatus)

    @model_validator(mode="after")
    def _name_fits(self) -> "TrainingJob":
        # Pods are named NAME-INDEX and must stay valid DNS labels (63 characters) for rendezvous.
        if len(self.metadata.name) > 52:
            raise ValueError("metadata.name: a TrainingJob name may have at most 52 characters")
        return self

    @property
    def world_size(self) -> int:
        return self.spec.replicas * self.spec.procs_per_replica

    @property
    def finished(self) -> bool:
        return self.status.phase in ("Succeeded", "Failed")
