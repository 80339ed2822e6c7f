"""`shipyard render`: the native Kubernetes objects a manifest compiles to, exactly what a runtime would run.

Pure and local: no control plane needed. The local-workdir annotation is not added, so the output is the
same on every machine (it only matters to the local runtime).
"""

from __future__ import annotations

from typing import Annotated

import typer

from shipyard.compiler import compile_resource
from shipyard.compiler.tracking import tracking_server_objects
from shipyard.resources import load_resources

from . import printers
from .common import CliError, ProjectOption, project_of, read_manifests


def render(
    ctx: typer.Context,
    filenames: Annotated[list[str] | None, typer.Option("--filename", "-f",
                                                        help="Manifest file, directory or -.")] = None,
    tracking_server: Annotated[bool, typer.Option(
        "--tracking-server", help="Also print the MLflow tracking server for cluster mode (Deployment, Service, "
                                  "PVC in shipyard-system).")] = False,
    project: ProjectOption = None,
) -> None:
    """Print the native objects (Job, Service, PVCs...) that resources compile to, as YAML."""
    if not filenames and not tracking_server:
        raise CliError("nothing to render: give -f FILE (or --tracking-server)")
    resources = load_resources(read_manifests(filenames, project_of(ctx, project), local_workdir=False)) \
        if filenames else []
    objects = tracking_server_objects() if tracking_server else []
    for resource in resources:
        try:
            objects.extend(compile_resource(resource))
        except (TypeError, ValueError) as exc:  # ValueError: an Endpoint serving a registry model (resolved when run)
            raise CliError(f"{resource.ref}: {exc}") from None
    typer.echo(printers.dump_documents(objects), nl=False)
