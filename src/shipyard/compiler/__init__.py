"""The compiler: pure, deterministic functions from a Shipyard resource to native Kubernetes objects.

It imports only `shipyard.resources`. Both runtimes (local processes, a real cluster) run exactly what it
returns, so what `shipyard render` prints is what runs.
"""

from __future__ import annotations

from typing import Any

from shipyard.resources import Resource, TrainingJob

from .trainingjob import TrainingJobContext, compile_trainingjob


def compile_resource(resource: Resource, restart: int = 0) -> list[dict[str, Any]]:
    if isinstance(resource, TrainingJob):
        return compile_trainingjob(resource, TrainingJobContext(restart=restart))
    raise TypeError(f"no compiler for kind {resource.kind!r}")


__all__ = ["TrainingJobContext", "compile_resource", "compile_trainingjob"]
