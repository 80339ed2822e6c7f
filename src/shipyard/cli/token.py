"""`shipyard token create|list|revoke`: the project API keys that the gateway accepts as bearer tokens."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import ProjectOption, make_client, project_of
from .printers import format_rows

app = typer.Typer(help="Manage project API keys for endpoints and apps behind the gateway.",
                  no_args_is_help=True)


@app.command("create")
def create(ctx: typer.Context, name: Annotated[str, typer.Argument(help="A name for the key (DNS label).")],
           project: ProjectOption = None,
           quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the token.")] = False) -> None:
    """Create a key; its token is printed once and cannot be shown again."""
    namespace = project_of(ctx, project)
    with make_client() as client:
        key = client.create_api_key(name, namespace)
    if quiet:
        typer.echo(key["token"])
        return
    typer.echo(f"apikey/{key['name']} created in project {key['project']}. Its token (shown only now):")
    typer.echo(key["token"])


@app.command("list")
def list_keys(ctx: typer.Context, project: ProjectOption = None) -> None:
    """List the project's keys (hints only: tokens are never stored)."""
    namespace = project_of(ctx, project)
    with make_client() as client:
        keys = client.list_api_keys(namespace)
    if not keys:
        typer.echo(f"No API keys in project {namespace}.")
        return
    rows = [["PROJECT", "NAME", "HINT", "STATUS", "CREATED"]] + [
        [k["project"], k["name"], k["hint"], k["status"], k["createdAt"][:19].replace("T", " ")] for k in keys]
    for line in format_rows(rows):
        typer.echo(line)


@app.command("revoke")
def revoke(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The key's name.")],
           project: ProjectOption = None) -> None:
    """Revoke a key: the gateway refuses it from the next request on."""
    namespace = project_of(ctx, project)
    with make_client() as client:
        key = client.revoke_api_key(name, namespace)
    typer.echo(f"apikey/{key['name']} revoked in project {key['project']}")
