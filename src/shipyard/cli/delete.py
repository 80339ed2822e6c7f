"""`shipyard delete`: by KIND NAME, KIND/NAME, or every object a manifest names."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from shipyard.client import ApiError
from shipyard.resources import load_resources

from .common import CliError, ProjectOption, make_client, project_of, read_manifests, split_ref


def delete(
    ctx: typer.Context,
    what: Annotated[Optional[str], typer.Argument(metavar="[KIND[/NAME]]")] = None,
    name: Annotated[Optional[str], typer.Argument(metavar="[NAME]")] = None,
    filenames: Annotated[Optional[list[str]], typer.Option(
        "--filename", "-f", help="Delete the objects these manifests define.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Return only once the objects are gone.")] = False,
    timeout: Annotated[Optional[float], typer.Option("--timeout", min=0, metavar="SECONDS",
                                                     help="Give up waiting after SECONDS.")] = None,
    ignore_not_found: Annotated[bool, typer.Option("--ignore-not-found",
                                                   help="An absent object is not an error.")] = False,
    project: ProjectOption = None,
) -> None:
    """Delete resources (their finalizers run first: the job's processes are stopped)."""
    namespace = project_of(ctx, project)
    if filenames:
        if what:
            raise CliError("give either -f PATH or KIND NAME, not both")
        targets = [(r.kind, r.metadata.namespace, r.metadata.name)
                   for r in load_resources(read_manifests(filenames, namespace, local_workdir=False))]
    elif what:
        cls, ref_name = split_ref(what, name)
        if not ref_name:
            raise CliError(f"delete needs a name: shipyard delete {cls.KIND.lower()}/NAME (or -f PATH)")
        targets = [(cls.KIND, namespace, ref_name)]
    else:
        raise CliError("nothing to delete: give KIND NAME, KIND/NAME or -f PATH")
    failures: list[str] = []
    with make_client() as client:
        for kind, ns, obj_name in targets:
            try:
                obj = client.delete(kind, obj_name, ns)
            except ApiError as exc:
                if exc.status == 404 and ignore_not_found:
                    continue
                failures.append(str(exc))
                continue
            typer.echo(f"{kind.lower()}/{obj_name} deleted")
            if wait and obj.metadata.deletion_timestamp is not None:
                client.wait_deleted(kind, obj_name, ns, resource_version=obj.metadata.resource_version,
                                    timeout=timeout)
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise CliError(failures[0] + more)
