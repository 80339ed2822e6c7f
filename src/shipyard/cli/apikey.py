"""`shipyard apikey create|list|revoke`: the project API keys that the gateway accepts as bearer tokens.

(Until this release `shipyard token` managed these keys; `shipyard token` now manages identity tokens, those
of users and service accounts that the control plane accepts: cli/token.py.)"""

from __future__ import annotations

from typing import Annotated, Any, List, Optional

import typer

from .common import CliError, ProjectOption, make_client, project_of
from .printers import format_rows

app = typer.Typer(help="Manage project API keys for endpoints and apps behind the gateway.",
                  no_args_is_help=True)


@app.command("create")
def create(ctx: typer.Context, name: Annotated[str, typer.Argument(help="A name for the key (DNS label).")],
           project: ProjectOption = None,
           expires_days: Annotated[Optional[float], typer.Option(
               "--expires-days", help="Expire after this many days (default: never).")] = None,
           endpoint: Annotated[Optional[List[str]], typer.Option(
               "--endpoint", help="Reach only this Endpoint or App (repeatable; default: all of the project).")]
           = None,
           rate: Annotated[Optional[float], typer.Option(
               "--rate", help="At most this many requests per second (default: no limit).")] = None,
           burst: Annotated[Optional[int], typer.Option(
               "--burst", help="With --rate: requests allowed at once (default: one second's worth).")] = None,
           quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the token.")] = False) -> None:
    """Create a key; its token is printed once and cannot be shown again."""
    if burst is not None and rate is None:
        raise CliError("--burst needs --rate")
    namespace = project_of(ctx, project)
    with make_client() as client:
        key = client.create_api_key(name, namespace, expires_in_days=expires_days, endpoints=endpoint or None,
                                    requests_per_second=rate, burst=burst)
    if quiet:
        typer.echo(key["token"])
        return
    limits = [f"expires {_when(key.get('expiresAt'))}"] if key.get("expiresAt") else []
    if key.get("endpoints"):
        limits.append("only " + ", ".join(key["endpoints"]))
    if key.get("rateLimit"):
        limits.append(f"at most {_rate(key['rateLimit'])}")
    typer.echo(f"apikey/{key['name']} created in project {key['project']}"
               f"{' (' + '; '.join(limits) + ')' if limits else ''}. Its token (shown only now):")
    typer.echo(key["token"])


def _when(value: Any) -> str:
    return str(value)[:19].replace("T", " ") if value else "-"


def _rate(limit: dict[str, Any] | None) -> str:
    return f"{limit['requestsPerSecond']:g}/s burst {limit['burst']}" if limit else "-"


@app.command("list")
def list_keys(ctx: typer.Context, project: ProjectOption = None) -> None:
    """List the project's keys (hints only: tokens are never stored)."""
    namespace = project_of(ctx, project)
    with make_client() as client:
        keys = client.list_api_keys(namespace)
    if not keys:
        typer.echo(f"No API keys in project {namespace}.")
        return
    rows = [["PROJECT", "NAME", "HINT", "STATUS", "CREATED", "CREATED BY", "EXPIRES", "ENDPOINTS", "RATE"]] + [
        [k["project"], k["name"], k["hint"], k["status"], _when(k["createdAt"]), k.get("createdBy") or "unknown",
         _when(k.get("expiresAt")), ",".join(k.get("endpoints") or []) or "*", _rate(k.get("rateLimit"))]
        for k in keys]
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
