"""`shipyard delete`: by KIND NAME, KIND/NAME, KIND -l SELECTOR, or every object a manifest names."""

from __future__ import annotations

from typing import Annotated, Optional

from . import _typer as typer  # typer only when typer reads the signature (cli/_typer.py)
from . import common
from .common import CliError, echo, labels_of, make_client, project_of, read_manifests, selector_of, split_ref


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
    selector: common.SelectorOption = None,
    project: common.ProjectOption = None,
) -> None:
    """Delete resources (their finalizers run first: the job's processes are stopped)."""
    from shipyard.client import ApiError

    namespace = project_of(ctx, project)
    wanted = selector_of(selector)
    targets: list[tuple[str, str, str]] = []
    if filenames:
        if what or selector:
            raise CliError("give either -f PATH, KIND NAME or KIND -l SELECTOR, not several")
        from shipyard.resources import load_resources

        targets = [(r.kind, r.metadata.namespace, r.metadata.name)
                   for r in load_resources(read_manifests(filenames, namespace, local_workdir=False))]
    elif what:
        cls, ref_name = split_ref(what, name)
        if ref_name and selector:
            raise CliError("give either a NAME or -l SELECTOR, not both")
        if not ref_name and not selector:
            raise CliError(f"delete needs a name: shipyard delete {cls.KIND.lower()}/NAME (or -l SELECTOR, -f PATH)")
        if ref_name:
            targets = [(cls.KIND, namespace, ref_name)]
    else:
        raise CliError("nothing to delete: give KIND NAME, KIND/NAME, KIND -l SELECTOR or -f PATH")
    failures: list[str] = []
    with make_client() as client:
        if selector:
            # Matched on this side, as `get -l` does: what matches now is deleted, as with kubectl.
            listed = client.list_wire(cls.KIND, namespace, selector=selector)[0]
            targets = [(cls.KIND, namespace, w["metadata"]["name"]) for w in listed if wanted.matches(labels_of(w))]
            if not targets:
                echo(f"No {cls.PLURAL} found in project {namespace} matching {selector}.", err=True)
        for kind, ns, obj_name in targets:
            try:
                obj = client.delete_wire(kind, obj_name, ns)
            except ApiError as exc:
                if exc.status == 404 and ignore_not_found:
                    continue
                failures.append(str(exc))
                continue
            echo(f"{kind.lower()}/{obj_name} deleted")
            meta = obj.get("metadata") or {}
            if wait and meta.get("deletionTimestamp") is not None:
                client.wait_deleted(kind, obj_name, ns, resource_version=meta.get("resourceVersion"),
                                    timeout=timeout)
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise CliError(failures[0] + more)
