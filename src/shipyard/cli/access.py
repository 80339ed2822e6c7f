"""Who you are and what you may do: `login`, `whoami`, `auth can-i`, `user`, `serviceaccount` and `audit`.

Projects and their members are cli/project.py's.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Optional

from . import _typer as typer  # typer only when typer reads the signatures (cli/_typer.py)
from . import common
from .common import CliError, echo, make_client, project_of
from .printers import format_rows


user_app = typer.Typer(help="Manage users and their tokens (cluster-admin; anyone for their own tokens).",
                       no_args_is_help=True)
serviceaccount_app = typer.Typer(help="Manage a project's service accounts (for CI and automation) and tokens.",
                                 no_args_is_help=True)
auth_app = typer.Typer(help="Inspect authorization: `auth can-i VERB RESOURCE`, `auth whoami`.",
                       no_args_is_help=True)


def _table(rows: list[list[str]]) -> None:
    for line in format_rows(rows):
        echo(line)


def _when(value: Any) -> str:
    return str(value)[:19].replace("T", " ") if value else "-"


# --- login ------------------------------------------------------------------------------------------------

def login(token: Annotated[Optional[str], typer.Option(
        "--token", help="The token (sy_u_… or sy_sa_…); read from standard input when not given.")] = None) -> None:
    """Log in to the control plane with a token: it is checked, then stored for this server (0600)."""
    from shipyard import config, credentials

    if token is None:
        if sys.stdin.isatty():
            import getpass

            token = getpass.getpass("Token: ")
        else:
            token = sys.stdin.readline()
    token = token.strip()
    if not token:
        raise CliError("no token given (use --token or pipe it on standard input)")
    from shipyard.client import Client

    state = common.CURRENT_STATE.get()
    if state.context or state.kubeconfig:
        raise CliError("on a cluster, Kubernetes authenticates you: use your kubeconfig's user instead of login")
    with Client(token=token) as client:
        who = client.whoami()  # refuses a bad token before anything is stored
        url = client.url
    credentials.store(config.paths().credentials, url, token)
    groups = [g for g in who.get("groups", []) if g != "system:authenticated"]
    echo(f"Logged in to {url} as {who['username']}" + (f" (groups: {', '.join(groups)})" if groups else ""))


def logout() -> None:
    """Forget the token `login` stored for this control plane."""
    from shipyard import config, credentials
    from shipyard.client import Client

    with Client(token="-") as client:
        url = client.url
    credentials.store(config.paths().credentials, url, None)
    echo(f"Logged out of {url}")


@auth_app.command("whoami")
def whoami() -> None:
    """Who the control plane takes you for, and your groups."""
    with make_client() as client:
        who = client.whoami()
    echo(f"{who['username']}\t{','.join(who.get('groups', []))}")


@auth_app.command("can-i")
def can_i(ctx: typer.Context,
          verb: Annotated[str, typer.Argument(help="get, list, watch, create, update, delete, …")],
          resource: Annotated[str, typer.Argument(help="e.g. trainingjobs, tj, trainingjobs/log, /version")],
          name: Annotated[Optional[str], typer.Argument(help="One object, by name.")] = None,
          as_user: Annotated[Optional[str], typer.Option("--as", help="Ask for this user instead.")] = None,
          as_group: Annotated[Optional[list[str]], typer.Option("--as-group", help="A group of --as.")] = None,
          project: common.ProjectOption = None) -> None:
    """Answer yes or no (exit 0 or 1), as `kubectl auth can-i`."""
    base, _, subresource = resource.partition("/") if not resource.startswith("/") else (resource, "", "")
    group = "shipyard.dev"
    if base in ("roles", "rolebindings", "clusterroles", "clusterrolebindings"):
        group = "rbac.authorization.k8s.io"
    elif not base.startswith("/") and base not in ("users", "serviceaccounts", "apikeys", "events", "models",
                                                   "projects", "secrets", "auditevents", "*"):
        base = common.kind_of(base).PLURAL
    namespace = "" if base in ("users", "clusterroles", "clusterrolebindings") else project_of(ctx, project)
    with make_client() as client:
        answer = client.can_i(verb, base, namespace, name or "", subresource, group, as_user, tuple(as_group or ()))
    if answer.get("allowed"):
        echo("yes")
        return
    echo("no" + (f" ({answer['reason']})" if answer.get("reason") else ""))
    raise typer.Exit(1)


# --- users ------------------------------------------------------------------------------------------------

@user_app.command("create")
def user_create(name: Annotated[str, typer.Argument(help="The user's name.")],
                email: Annotated[Optional[str], typer.Option("--email")] = None,
                group: Annotated[Optional[list[str]], typer.Option("--group", help="A group (repeatable).")] = None,
                ) -> None:
    """Create a user (then `user token create NAME TOKEN` and a role: `project add-member`)."""
    with make_client() as client:
        user = client.create_user(name, email, tuple(group or ()))
    echo(f"user/{user['name']} created")


@user_app.command("get")
def user_get(name: Annotated[Optional[str], typer.Argument()] = None) -> None:
    """List users, or show one."""
    with make_client() as client:
        users = [client.get_user(name)] if name else client.list_users()
    _table([["NAME", "EMAIL", "GROUPS", "CREATED"]] + [
        [u["name"], u.get("email") or "-", ",".join(u.get("groups") or []) or "-", _when(u.get("createdAt"))]
        for u in users])


@user_app.command("delete")
def user_delete(name: Annotated[str, typer.Argument()]) -> None:
    """Delete a user; their tokens stop working at once."""
    with make_client() as client:
        client.delete_user(name)
    echo(f"user/{name} deleted")


def _print_token(answer: dict[str, Any], quiet: bool, owner: str) -> None:
    if quiet:
        echo(answer["token"])
        return
    expires = f", expires {_when(answer.get('expiresAt'))}" if answer.get("expiresAt") else ""
    echo(f"token/{answer['name']} created for {owner}{expires}. The token (shown only now):")
    echo(answer["token"])


@user_app.command("token")
def user_token(action: Annotated[str, typer.Argument(metavar="create|list|revoke")],
               user: Annotated[str, typer.Argument(help="The user.")],
               name: Annotated[Optional[str], typer.Argument(help="The token's name (create, revoke).")] = None,
               expires_days: Annotated[Optional[float], typer.Option(
                   "--expires-days", min=0, help="Expire after this many days (default: never).")] = None,
               quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the token.")] = False) -> None:
    """Create (shown once), list or revoke a user's named tokens."""
    _token_action(action, name, quiet, expires_days, f"user {user}", user=user)


@serviceaccount_app.command("create")
def sa_create(ctx: typer.Context, name: Annotated[str, typer.Argument()], project: common.ProjectOption = None) -> None:
    """Create a service account in a project."""
    namespace = project_of(ctx, project)
    with make_client() as client:
        client.create_service_account(name, namespace)
    echo(f"serviceaccount/{name} created in project {namespace}")


@serviceaccount_app.command("get")
def sa_get(ctx: typer.Context, project: common.ProjectOption = None) -> None:
    """List a project's service accounts."""
    namespace = project_of(ctx, project)
    with make_client() as client:
        found = client.list_service_accounts(namespace)
    _table([["NAME", "USERNAME", "CREATED"]] + [
        [s["name"], f"system:serviceaccount:{namespace}:{s['name']}", _when(s.get("createdAt"))] for s in found])


@serviceaccount_app.command("delete")
def sa_delete(ctx: typer.Context, name: Annotated[str, typer.Argument()], project: common.ProjectOption = None) -> None:
    """Delete a service account; its tokens stop working at once."""
    namespace = project_of(ctx, project)
    with make_client() as client:
        client.delete_service_account(name, namespace)
    echo(f"serviceaccount/{name} deleted from project {namespace}")


@serviceaccount_app.command("token")
def sa_token(ctx: typer.Context, action: Annotated[str, typer.Argument(metavar="create|list|revoke")],
             account: Annotated[str, typer.Argument(help="The service account.")],
             name: Annotated[Optional[str], typer.Argument(help="The token's name (create, revoke).")] = None,
             expires_days: Annotated[Optional[float], typer.Option("--expires-days", min=0)] = None,
             quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the token.")] = False,
             project: common.ProjectOption = None) -> None:
    """Create (shown once), list or revoke a service account's tokens."""
    namespace = project_of(ctx, project)
    _token_action(action, name, quiet, expires_days, f"serviceaccount {account} in project {namespace}",
                  service_account=account, project=namespace)


def _token_action(action: str, name: str | None, quiet: bool, expires_days: float | None, owner: str,
                  **subject: Any) -> None:
    if action not in ("create", "list", "revoke"):
        raise CliError(f"unknown token action {action!r}: use create, list or revoke")
    if action != "list" and not name:
        raise CliError(f"token {action} needs the token's name")
    with make_client() as client:
        if action == "create":
            _print_token(client.create_token(name or "", expires_in_days=expires_days, **subject), quiet, owner)
        elif action == "revoke":
            client.revoke_token(name or "", **subject)
            echo(f"token/{name} of {owner} revoked")
        else:
            tokens = client.list_tokens(**subject)
            _table([["NAME", "HINT", "STATUS", "EXPIRES", "LAST USED"]] + [
                [t["name"], t.get("hint", "") + "…", "revoked" if t.get("revokedAt") else "active",
                 _when(t.get("expiresAt")), _when(t.get("lastUsedAt"))] for t in tokens])


# --- audit ------------------------------------------------------------------------------------------------

def audit(project: Annotated[Optional[str], typer.Option("--project", "-p", help="Only this project.")] = None,
          user: Annotated[Optional[str], typer.Option("--user", help="Only this user.")] = None,
          since: Annotated[Optional[str], typer.Option("--since", help="Only the last 30s, 10m, 1h…")] = None,
          output: Annotated[Optional[str], typer.Option("--output", "-o", help="json")] = None) -> None:
    """Show the audit log: every change and every refusal, with who made it."""
    from .logs import parse_duration

    if output not in (None, "json"):
        raise CliError(f"--output must be json, not {output!r}")
    seconds = parse_duration(since) if since else None
    with make_client() as client:
        records = client.audit(project, user, seconds)
    if output == "json":
        for r in records:
            echo(json.dumps(r, separators=(",", ":")))
        return
    _table([["TIME", "USER", "VERB", "RESOURCE", "PROJECT", "NAME", "CODE"]] + [
        [_when(r.get("time")), r.get("user") or "-", r.get("verb", ""),
         r.get("resource", "") + (f"/{r['subresource']}" if r.get("subresource") else ""),
         r.get("namespace") or "-", r.get("name") or "-", str(r.get("code", ""))] for r in records])
