"""Kind Endpoint: an OpenAI-compatible model server, with the replica, scaling and exposure options of serving.py.

`model` is a directory on one of the project's volumes (what a fine-tuning job wrote), or a version in the
model registry: `models:/NAME/VERSION` or `models:/NAME@ALIAS`. The controller resolves a registry reference
to the volume and path it was registered with (again every few seconds, so moving an alias rolls the
Endpoint out to the new version) and records it in `status.resolvedModel`; only the syntax is checked here.
The engine decides the command: the built-in `shipyard.workloads.serve`, vLLM's `vllm serve` with the same flags (the built-in server took vLLM's names where they overlap), or any command of the
user's (`engine: custom`) that honours the serving contract: listen on $PORT, `/health`-style readiness.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal, NamedTuple

from pydantic import Field, model_validator

from .base import Model
from .serving import ServingResource, ServingSpec, ServingStatus

Engine = Literal["builtin", "vllm", "custom"]
# vLLM's own OpenAI server image: the Shipyard image does not carry vLLM (it needs CUDA builds of torch).
VLLM_IMAGE = "vllm/vllm-openai:v0.9.2"
MODEL_URI_PREFIX = "models:/"
# Where a registry model's volume is mounted in the server's pod; the server is given REGISTRY_MOUNT + path.
REGISTRY_MOUNT = "/models/registry"
# Registered model names and aliases as MLflow accepts them, narrowed to what is safe in a path and a URL.
_MODEL_URI = re.compile(r"^models:/(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,255})"
                        r"(?:/(?P<version>[1-9][0-9]{0,9})|@(?P<alias>[A-Za-z][A-Za-z0-9_-]{0,255}))$")


class ModelRef(NamedTuple):
    name: str
    version_or_alias: str  # "3" or "champion"


def parse_model_uri(model: str) -> ModelRef | None:
    """The registry reference in `model`, None for a path; ValueError for a malformed `models:/` URI."""
    if not model.startswith(MODEL_URI_PREFIX):
        return None
    match = _MODEL_URI.match(model)
    if match is None:
        raise ValueError(f"model: {model!r} must be models:/NAME/VERSION (a version number) or models:/NAME@ALIAS, "
                         "with NAME of letters, digits, '.', '_' or '-'")
    return ModelRef(match["name"], match["version"] or match["alias"])


class EndpointSpec(ServingSpec):
    model: str = Field(min_length=1)
    engine: Engine = "builtin"
    # engine custom: the server to run. builtin and vllm: no command; `args` are extra engine flags
    # (e.g. [--dtype, bf16]) appended after the ones Shipyard passes.
    command: list[str] | None = None
    args: list[str] = Field(default_factory=list)
    # The name clients put in `model`; the Endpoint's own name when not given.
    served_model_name: str | None = Field(default=None, min_length=1)
    max_model_len: int | None = Field(default=None, ge=1)
    port: int = Field(default=8000, ge=1, le=65535)

    def default_image(self) -> str:
        return VLLM_IMAGE if self.engine == "vllm" else super().default_image()

    @model_validator(mode="after")
    def _engine(self) -> "EndpointSpec":
        if self.engine == "custom":
            if not self.command:
                raise ValueError("command: required when engine is custom (the server to run; it must listen "
                                 "on $PORT)")
            if self.max_model_len is not None:
                raise ValueError("maxModelLen: only for the builtin and vllm engines; pass your server's own "
                                 "flag in args")
        elif self.command is not None:
            raise ValueError(f"command: only allowed when engine is custom (engine {self.engine} runs its own "
                             "server; put extra flags in args)")
        if parse_model_uri(self.model) is not None:
            if any(v.mount_path == REGISTRY_MOUNT or v.mount_path.startswith(REGISTRY_MOUNT + "/")
                   for v in self.volumes):
                raise ValueError(f"volumes: {REGISTRY_MOUNT} is where the registry model is mounted; mount "
                                 "volumes elsewhere")
            return self
        if not self.model.startswith("/") or ".." in self.model.split("/"):
            raise ValueError(f"model: {self.model!r} must be an absolute path (no '..') inside a volume's mountPath")
        holder = self.volume_for(self.model)
        if holder is None:
            mounts = ", ".join(v.mount_path for v in self.volumes) or "none"
            raise ValueError(f"model: {self.model!r} is not inside any volume's mountPath (mounted: {mounts}); "
                             "add the volume that holds the model")
        if not holder.persistent:
            raise ValueError(f"model: {self.model!r} is inside secret volume {holder.name!r}; models live in a "
                             "persistent volume")
        return self


class ResolvedModel(Model):
    """What a `models:/` reference pointed to when the controller last resolved it."""

    uri: str
    name: str
    version: int
    volume: str
    path: str


class EndpointStatus(ServingStatus):
    resolved_model: ResolvedModel | None = None


class Endpoint(ServingResource):
    KIND: ClassVar[str] = "Endpoint"
    PLURAL: ClassVar[str] = "endpoints"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("ep", "endpoint")

    kind: Literal["Endpoint"] = "Endpoint"
    spec: EndpointSpec
    status: EndpointStatus = Field(default_factory=EndpointStatus)

    @model_validator(mode="after")
    def _served_model_name(self) -> "Endpoint":
        if self.spec.served_model_name is None:
            self.spec.served_model_name = self.metadata.name
        return self
