"""Kind App: any command serving HTTP on a port (Gradio, Streamlit, FastAPI…), deployed like an Endpoint.

The command is the user's; Shipyard only promises it $PORT (= `port`) and routes to it once its readiness
path answers. Most UI frameworks serve their page at `/` and have no health route, hence that default.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from .serving import ReadinessProbe, ServingResource, ServingSpec


class AppSpec(ServingSpec):
    command: list[str] = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    readiness_probe: ReadinessProbe = Field(default_factory=lambda: ReadinessProbe(path="/"))


class App(ServingResource):
    KIND: ClassVar[str] = "App"
    PLURAL: ClassVar[str] = "apps"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("app",)

    kind: Literal["App"] = "App"
    spec: AppSpec
