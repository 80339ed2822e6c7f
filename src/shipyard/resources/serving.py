"""What Endpoints and Apps share: long-running HTTP servers behind the Shipyard gateway.

A serving resource is a set of interchangeable replicas: how many (`replicas`, `autoscaling`, `scaleToZero`),
how a replica proves it can take traffic (`readinessProbe`), how it leaves without failing a request
(`drainSeconds` then SIGTERM, within `terminationGracePeriodSeconds`) and who may reach it (`public`,
`ingress`). Volumes are the project's, exactly as for TrainingJobs, so a model a job wrote is served from
the same claim.

`replicas.min` is the floor while the resource receives traffic; `scaleToZero` lets it drop to none after
`idleSeconds` without a request (the gateway holds the next request while a replica starts). So `min: 0`
only makes sense with `scaleToZero`, and is refused without it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from .base import Model, Resource, Status
from .trainingjob import WORKLOADS_IMAGE, EnvVar, ResourceRequirements, Volume, check_unique

# The variable a server reads its port from (docs/contracts.md); the compiler sets it from `port`, and the
# local runtime rewrites it to the host port it hands out, so a user value would break both.
PORT_ENV = "PORT"
# A DNS subdomain, optionally with one leading wildcard label, as Ingress rules accept.
_HOST = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class Replicas(Model):
    min: int = Field(default=1, ge=0, le=1000)
    max: int = Field(default=1, ge=1, le=1000)

    @model_validator(mode="after")
    def _ordered(self) -> "Replicas":
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not be greater than max ({self.max})")
        return self


AutoscalingMetric = Literal["inFlight", "requestsPerSecond"]
# Four concurrent requests keep a continuously batching server busy without queueing much behind each other.
DEFAULT_IN_FLIGHT_TARGET = 4.0


class Autoscaling(Model):
    """Keep the per-replica average of a gateway metric near `target`, as a HorizontalPodAutoscaler does."""

    metric: AutoscalingMetric = "inFlight"
    # Per replica: concurrent requests for inFlight, requests per second for requestsPerSecond.
    target: float | None = Field(default=None, gt=0, le=1_000_000)
    scale_down_stabilization_seconds: int = Field(default=60, ge=0, le=3600)
    scale_up_stabilization_seconds: int = Field(default=0, ge=0, le=3600)

    @model_validator(mode="after")
    def _target(self) -> "Autoscaling":
        if self.target is None:
            if self.metric != "inFlight":
                # A sensible rate depends entirely on how long one request takes; no default fits.
                raise ValueError("target: required when metric is requestsPerSecond (requests/s per replica)")
            self.target = DEFAULT_IN_FLIGHT_TARGET
        return self


class ScaleToZero(Model):
    idle_seconds: int = Field(default=300, ge=1, le=7 * 24 * 3600)


class ReadinessProbe(Model):
    path: str = "/health"
    initial_delay_seconds: int = Field(default=0, ge=0, le=3600)
    period_seconds: int = Field(default=1, ge=1, le=3600)
    timeout_seconds: int = Field(default=1, ge=1, le=3600)
    failure_threshold: int = Field(default=3, ge=1, le=1000)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/") or any(c.isspace() for c in v):
            raise ValueError(f"path {v!r} must start with '/' and contain no spaces")
        return v


class Ingress(Model):
    host: str
    class_name: str | None = None
    tls_secret_name: str | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if len(v) > 253 or not _HOST.match(v):
            raise ValueError(f"host {v!r} must be a lowercase DNS name such as 'chat.example.com'")
        return v


class GatewayKey(Model):
    """Give the replicas a project API key of their own in an env variable, to call other Endpoints and Apps of
    the project through the gateway (a playground calling its model). The key is created and revoked by the
    platform and reaches the pods through a Secret: it never appears in the resource."""

    env: str = Field(default="OPENAI_API_KEY", min_length=1, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class ServingSpec(Model):
    # The port the server listens on, handed to it as $PORT; kinds give it a default where one is conventional.
    port: int = Field(ge=1, le=65535)
    replicas: Replicas = Field(default_factory=Replicas)
    autoscaling: Autoscaling | None = None
    scale_to_zero: ScaleToZero | None = None
    # None until validated; then the image for the kind (see `default_image`), so `get -o yaml` shows it.
    image: str | None = None
    working_dir: str | None = None
    env: list[EnvVar] = Field(default_factory=list)
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    volumes: list[Volume] = Field(default_factory=list)
    readiness_probe: ReadinessProbe = Field(default_factory=ReadinessProbe)
    # Non-public resources are reachable only through the gateway, which checks project tokens.
    public: bool = False
    ingress: Ingress | None = None
    gateway_key: GatewayKey | None = None
    termination_grace_period_seconds: int = Field(default=30, ge=0, le=3600)
    # Time for the gateway and Service endpoints to stop routing to a terminating replica before it gets SIGTERM.
    drain_seconds: int = Field(default=2, ge=0, le=3600)

    def default_image(self) -> str:
        return WORKLOADS_IMAGE

    @model_validator(mode="after")
    def _serving(self) -> "ServingSpec":
        check_unique(self.volumes, self.env)
        if any(e.name == PORT_ENV for e in self.env):
            raise ValueError(f"env: {PORT_ENV} is set by Shipyard from port; listen on $PORT instead of setting it")
        if self.replicas.min == 0 and self.scale_to_zero is None:
            raise ValueError("replicas.min: 0 needs scaleToZero (e.g. scaleToZero: {idleSeconds: 300}), "
                             "otherwise nothing would ever serve; use min: 1 to keep a replica up")
        if self.ingress is not None and not self.public:
            raise ValueError("ingress: only allowed with public: true (a non-public resource is reachable only "
                             "through the Shipyard gateway, which checks tokens)")
        if self.drain_seconds and self.drain_seconds >= self.termination_grace_period_seconds:
            raise ValueError(f"drainSeconds ({self.drain_seconds}) must be less than terminationGracePeriodSeconds "
                             f"({self.termination_grace_period_seconds}): the drain counts against the grace period")
        if self.gateway_key is not None and any(e.name == self.gateway_key.env for e in self.env):
            raise ValueError(f"gatewayKey.env: {self.gateway_key.env} is also set in env; the platform sets it")
        if self.image is None:
            self.image = self.default_image()
        return self

    def volume_for(self, path: str) -> Volume | None:
        """The volume whose mountPath holds `path`, if any."""
        for volume in self.volumes:
            if path == volume.mount_path or path.startswith(volume.mount_path + "/"):
                return volume
        return None


ServingPhase = Literal["Pending", "Ready", "Idle", "Failed"]


class ServingStatus(Status):
    # Idle: scaled to zero after scaleToZero.idleSeconds; the next request starts a replica.
    phase: ServingPhase = "Pending"
    url: str | None = None
    replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    desired_replicas: int = 0
    in_flight: float = 0.0
    requests_per_second: float = 0.0
    last_scale_time: datetime | None = None
    last_request_time: datetime | None = None


class ServingResource(Resource):
    """The envelope of Endpoint and App; subclasses narrow `spec` to their own type, which has a `port`."""

    # Spec changes roll out (a new ReplicaSet, surge first), so they are accepted.
    SPEC_IMMUTABLE: ClassVar[bool] = False
    # Marks kinds that serve until deleted (`apply --wait` waits for them to be Ready, not to finish).
    serves: ClassVar[bool] = True

    spec: ServingSpec
    status: ServingStatus = Field(default_factory=ServingStatus)

    @model_validator(mode="after")
    def _service_name(self) -> "ServingResource":
        # The name is also a Service's, and Service names are DNS-1035 labels: a leading digit is refused there.
        if not self.metadata.name[0].isalpha():
            raise ValueError(f"metadata.name: an {self.kind} name must start with a letter (it names a Service)")
        return self
