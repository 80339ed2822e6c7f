"""`shipyard render`: the native Kubernetes objects a manifest compiles to, exactly what a runtime would run.

Pure and local: no control plane needed. The local-workdir annotation is not added, so the output is the
same on every machine (it only matters to the local runtime).
"""

from __future__ import annotations

from typing import Annotated

import typer

from shipyard.compiler import compile_resource
from shipyard.resources import load_resources

from . import printers
from .common import CliError, ProjectOption, project_of, read_manifests


def render(
    ctx: typer.Context,
    filenames: Annotated[list[str] | None, typer.Option("--filename", "-f",
                                                        help="Manifest file, directory or -.")] = None,
    project: ProjectOption = None,
) -> None:
    """Print the native objects (Job, Service, PVCs...) that resources compile to, as YAML."""
    if not filenames:
        raise CliError("nothing to render: give -f FILE (the platform itself is the Helm chart charts/shipyard)")
    resources = load_resources(read_manifests(filenames, project_of(ctx, project), local_workdir=False))
    objects: list[dict] = []
    for resource in resources:
        try:
            objects.extend(compile_resource(resource))
        except (TypeError, ValueError) as exc:  # ValueError: an Endpoint serving a registry model (resolved when run)
            raise CliError(f"{resource.ref}: {exc}") from None
    typer.echo(printers.dump_documents(objects), nl=False)
