"""The compiler: pure, deterministic functions from a Shipyard resource to native Kubernetes objects.

It imports only `shipyard.resources`. Both runtimes (local processes, a real cluster) run exactly what it
returns, so what `shipyard render` prints is what runs.
"""

from __future__ import annotations

from typing import Any

from shipyard.resources import Project, Resource, Secret, ServingResource, Sweep, TrainingJob, Workspace

from .project import compile_project, member_binding_name
from .secret import compile_secret
from .serving import RegistryModel, ServingContext, compile_serving, default_scaling
from .trainingjob import TrainingJobContext, compile_trainingjob
from .workspace import WorkspaceContext, compile_workspace


def compile_resource(resource: Resource, restart: int = 0, replicas: int | None = None,
                     autoscale: bool | None = None, model: RegistryModel | None = None,
                     admitted: bool = False, running: bool | None = None) -> list[dict[str, Any]]:
    """`restart` is a TrainingJob's attempt and `admitted` whether its Job may start (else it is suspended); `replicas`/`autoscale` are a serving resource's scale, each
    defaulting to `default_scaling` (an HPA when there is room to scale, else max(min, 1) replicas); `model`
    is what an Endpoint's `models:/` reference resolved to (ValueError without it)."""
    if isinstance(resource, TrainingJob):
        return compile_trainingjob(resource, TrainingJobContext(restart=restart, admitted=admitted))
    if isinstance(resource, ServingResource):
        default = default_scaling(resource)
        scale = default.autoscale if autoscale is None else autoscale
        if replicas is None and not scale:
            replicas = max(resource.spec.replicas.min, 1)
        return compile_serving(resource, ServingContext(replicas=replicas, autoscale=scale, model=model))
    if isinstance(resource, Workspace):
        # `running`: the controller's decision (suspended or idle: no); by default, whatever spec.suspend says.
        return compile_workspace(resource, None if running is None else WorkspaceContext(running=running))
    if isinstance(resource, Secret):
        return compile_secret(resource)
    if isinstance(resource, Project):
        return compile_project(resource)
    if isinstance(resource, Sweep):
        raise TypeError("a Sweep compiles to no objects of its own: its controller creates the trials as "
                        f"TrainingJobs ({resource.metadata.name}-0, -1, …), each compiled like any TrainingJob")
    raise TypeError(f"no compiler for kind {resource.kind!r}")


__all__ = ["RegistryModel", "ServingContext", "TrainingJobContext", "WorkspaceContext", "compile_project",
           "compile_resource", "compile_secret", "compile_serving", "compile_trainingjob", "compile_workspace",
           "default_scaling", "member_binding_name"]
