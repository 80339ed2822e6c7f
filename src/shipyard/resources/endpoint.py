"""Kind Endpoint: an OpenAI-compatible model server, with the replica, scaling and exposure options of serving.py.

`model` is a directory on one of the project's volumes (what a fine-tuning job wrote); registry references
come later. The engine decides the command: the built-in `shipyard.workloads.serve`, vLLM's `vllm serve`
with the same flags (the built-in server took vLLM's names where they overlap), or any command of the
user's (`engine: custom`) that honours the serving contract: listen on $PORT, `/health`-style readiness.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from .serving import ServingResource, ServingSpec

Engine = Literal["builtin", "vllm", "custom"]
# vLLM's own OpenAI server image: the Shipyard image does not carry vLLM (it needs CUDA builds of torch).
VLLM_IMAGE = "vllm/vllm-openai:v0.9.2"


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
        if not self.model.startswith("/") or ".." in self.model.split("/"):
            raise ValueError(f"model: {self.model!r} must be an absolute path (no '..') inside a volume's mountPath")
        if self.volume_for(self.model) is None:
            mounts = ", ".join(v.mount_path for v in self.volumes) or "none"
            raise ValueError(f"model: {self.model!r} is not inside any volume's mountPath (mounted: {mounts}); "
                             "add the volume that holds the model")
        return self


class Endpoint(ServingResource):
    KIND: ClassVar[str] = "Endpoint"
    PLURAL: ClassVar[str] = "endpoints"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("ep", "endpoint")

    kind: Literal["Endpoint"] = "Endpoint"
    spec: EndpointSpec

    @model_validator(mode="after")
    def _served_model_name(self) -> "Endpoint":
        if self.spec.served_model_name is None:
            self.spec.served_model_name = self.metadata.name
        return self
