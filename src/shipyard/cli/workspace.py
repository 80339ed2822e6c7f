"""`shipyard open`, `suspend`, `resume`: a Workspace's IDE in the browser, and switching it off and on.

`open` prints the URL with the workspace's token (Jupyter takes it in the URL; code-server asks for it as
its password) and opens a browser where there is one. A workspace suspended for idleness wakes on that first
request; one suspended by hand must be resumed first, which `open` says instead of waiting forever.
"""

from __future__ import annotations

import webbrowser
from typing import Annotated

import typer

from .common import CliError, ProjectOption, make_client, project_of, split_ref

NameArg = Annotated[str, typer.Argument(help="workspace/NAME (or NAME)", metavar="WORKSPACE")]


def _name(ref: str) -> str:
    if "/" not in ref:
        return ref
    cls, name = split_ref(ref, None)
    if cls.KIND != "Workspace" or not name:
        raise CliError(f"expected workspace/NAME, got {ref!r}")
    return name


def open_workspace(
    ctx: typer.Context,
    ref: NameArg,
    browser: Annotated[bool, typer.Option("--browser/--no-browser", help="Also open it in a web browser.")] = True,
    project: ProjectOption = None,
) -> None:
    """Print (and open) the URL of a workspace's IDE, with its access token."""
    name, namespace = _name(ref), project_of(ctx, project)
    with make_client() as client:
        access = client.workspace_access(name, namespace)
    if access.get("phase") == "Suspended" and access.get("suspendReason") == "Manual":
        raise CliError(f"workspace {name!r} is suspended (spec.suspend): shipyard resume workspace/{name} first")
    base = access["url"].rstrip("/") + "/"
    if access["ide"] == "jupyterlab":
        url = f"{base}lab?token={access['token']}"
        typer.echo(url)
    else:
        url = base
        typer.echo(url)
        typer.echo(f"password: {access['token']}")
    if access.get("phase") == "Suspended":
        typer.echo("(it was suspended for idleness: the first request wakes it; give it a few seconds)", err=True)
    if browser:
        try:
            webbrowser.open(url)
        except webbrowser.Error:
            pass  # no browser here (a server, CI): the printed URL is the answer


def _set_suspend(ctx: typer.Context, ref: str, project: str | None, suspend: bool) -> None:
    name, namespace = _name(ref), project_of(ctx, project)
    with make_client() as client:
        current = client.get("Workspace", name, namespace)
        if current.spec.suspend == suspend:  # type: ignore[attr-defined]
            typer.echo(f"workspace/{name} already {'suspended' if suspend else 'resumed'}")
            return
        body = current.to_wire()
        body.pop("status", None)
        body["metadata"] = {k: v for k, v in body["metadata"].items() if k in ("name", "namespace", "labels",
                                                                            "annotations")}
        body["spec"]["suspend"] = suspend
        client.apply([(f"workspace/{name}", 1, body)])
    typer.echo(f"workspace/{name} {'suspended' if suspend else 'resumed'}")


def suspend(ctx: typer.Context, ref: NameArg, project: ProjectOption = None) -> None:
    """Stop a workspace's IDE, keeping its volumes and notebooks (spec.suspend: true)."""
    _set_suspend(ctx, ref, project, True)


def resume(ctx: typer.Context, ref: NameArg, project: ProjectOption = None) -> None:
    """Start a suspended workspace's IDE again (spec.suspend: false)."""
    _set_suspend(ctx, ref, project, False)
