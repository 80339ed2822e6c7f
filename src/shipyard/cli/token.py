"""`shipyard token create|list|revoke`: identity tokens, the bearer tokens the control plane accepts.

Without an option they are the caller's own (`auth whoami` says whose: a user may always manage their own);
`--user U` manages a user's (needs `users/tokens`, i.e. cluster-admin) and `--serviceaccount SA -p P` a
project's service account's (needs `serviceaccounts/token` in P). The same calls as `user token` and
`serviceaccount token` (cli/access.py), which stay. The gateway's per-project API keys are `shipyard apikey`
(cli/apikey.py); until this release they were `shipyard token`.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

from . import _typer as typer  # typer only when typer reads the signatures (cli/_typer.py)
from . import common
from .access import _token_action
from .common import CliError, make_client, project_of

# Kubernetes' username of a service account, `system:serviceaccount:NS:NAME` (as rbac/authorizer.py's, not
# imported from there: loading the authorizer would cost this verb ~30 ms of start-up for one string).
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"

app = typer.Typer(help="Manage identity tokens for `login`: yours, a user's, a service account's.",
                  no_args_is_help=True)

def _subject(ctx: Any, user: str | None, serviceaccount: str | None,
             project: str | None) -> tuple[str, dict[str, Any]]:
    """(how to name the owner, the client's keyword arguments) for the chosen identity, by default the caller's."""
    if user and serviceaccount:
        raise CliError("--user and --serviceaccount name two identities: give one of them")
    if project and not serviceaccount:
        raise CliError("--project goes with --serviceaccount (a user's tokens belong to no project)")
    if serviceaccount:
        namespace = project_of(ctx, project)
        return (f"serviceaccount {serviceaccount} in project {namespace}",
                {"service_account": serviceaccount, "project": namespace})
    if user:
        return f"user {user}", {"user": user}
    with make_client() as client:
        me = str(client.whoami().get("username") or "")
    if me.startswith(SERVICE_ACCOUNT_PREFIX) and me.count(":") == 3:
        namespace, account = me[len(SERVICE_ACCOUNT_PREFIX):].split(":")
        return f"serviceaccount {account} in project {namespace}", {"service_account": account, "project": namespace}
    if not me:
        raise CliError("the control plane did not say who you are: use --user or --serviceaccount")
    return f"user {me}", {"user": me}


def _run(ctx: Any, action: str, name: str | None, user: str | None, serviceaccount: str | None,
         project: str | None, expires_days: float | None = None, quiet: bool = False) -> None:
    from shipyard.client import ApiError

    owner, subject = _subject(ctx, user, serviceaccount, project)
    try:
        _token_action(action, name, quiet, expires_days, owner, **subject)
    except ApiError as exc:
        if user or serviceaccount or exc.status != 404 or not str(exc.detail).startswith(f"{owner} not found"):
            raise
        # The bootstrap admin token (`shipyard up`'s) authenticates as `admin`, a name and no stored user.
        raise CliError(f"{owner} not found: you have no tokens to manage (the admin token is no user's); "
                       "name one with --user or --serviceaccount") from None


UserOption = Annotated[Optional[str], typer.Option(
    "--user", help="A user's tokens (cluster-admin) instead of your own.", show_default=False)]
ServiceAccountOption = Annotated[Optional[str], typer.Option(
    "--serviceaccount", help="A service account's tokens (in --project) instead of your own.", show_default=False)]


@app.command("create")
def create(ctx: typer.Context, name: Annotated[str, typer.Argument(help="A name for the token.")],
           user: UserOption = None, serviceaccount: ServiceAccountOption = None,
           project: common.ProjectOption = None,
           expires_days: Annotated[Optional[float], typer.Option(
               "--expires-days", min=0, help="Expire after this many days (default: never).")] = None,
           quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the token.")] = False) -> None:
    """Create a token; it is printed once and cannot be shown again (`shipyard login` takes it)."""
    _run(ctx, "create", name, user, serviceaccount, project, expires_days, quiet)


@app.command("list")
def list_tokens(ctx: typer.Context, user: UserOption = None, serviceaccount: ServiceAccountOption = None,
                project: common.ProjectOption = None) -> None:
    """List the tokens (hints only: tokens are never stored)."""
    _run(ctx, "list", None, user, serviceaccount, project)


@app.command("revoke")
def revoke(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The token's name.")],
           user: UserOption = None, serviceaccount: ServiceAccountOption = None,
           project: common.ProjectOption = None) -> None:
    """Revoke a token: it is refused from the next request on."""
    _run(ctx, "revoke", name, user, serviceaccount, project)
