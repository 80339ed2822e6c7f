"""The `shipyard` entry point: the verbs, the global --project, and the error contract.

The contract: a failure the user can fix prints ONE line, `error: ...`, on stderr and exits 1 (usage errors
keep click's 2); Ctrl-C exits 130 quietly. A traceback is shown only with SHIPYARD_DEBUG=1, because a
traceback tells a user nothing about which file, document or field to fix.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from typing import Annotated, NoReturn, Sequence

import typer

from shipyard.client import ShipyardError
from shipyard.resources import ManifestError

from . import apply, daemon, delete, get, logs, models, portforward, render, token, workspace
from .common import CURRENT_STATE, DEFAULT_PROJECT, CliError, State, make_client

app = typer.Typer(
    name="shipyard",
    help="Train, fine-tune and serve models from one declarative spec, on this machine or a cluster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main(
    ctx: typer.Context,
    project: Annotated[str, typer.Option("--project", "-p", envvar="SHIPYARD_PROJECT",
                                         help="Project (namespace) to work in.")] = DEFAULT_PROJECT,
    context: Annotated[str | None, typer.Option(
        "--context", envvar="SHIPYARD_CONTEXT",
        help="Use Shipyard on the cluster of this kubeconfig context (installed with the Helm chart) instead "
             "of the local control plane.")] = None,
    kubeconfig: Annotated[str | None, typer.Option(
        "--kubeconfig", envvar="SHIPYARD_KUBECONFIG",
        help="The kubeconfig file for --context (default: $KUBECONFIG, then ~/.kube/config).")] = None,
) -> None:
    ctx.obj = State(project=project, context=context, kubeconfig=kubeconfig)
    CURRENT_STATE.set(ctx.obj)


def version() -> None:
    """Print the client's version and, if one is reachable, the control plane's."""
    try:
        mine = metadata.version("shipyard")
    except metadata.PackageNotFoundError:
        mine = "unknown"
    typer.echo(f"Client: {mine}")
    try:
        with make_client() as client:
            server = client.version()
        typer.echo(f"Server: {server.get('version')} ({server.get('apiVersion')})")
    except ShipyardError as exc:
        typer.echo(f"Server: not reachable ({exc})")


app.command("apply")(apply.apply)
app.command("get")(get.get)
app.command("describe")(get.describe)
app.command("logs")(logs.logs)
app.command("delete")(delete.delete)
app.command("render")(render.render)
app.command("up")(daemon.up)
app.command("down")(daemon.down)
app.command("version")(version)
app.add_typer(token.app, name="token")
app.command("port-forward")(portforward.port_forward)
app.command("models")(models.models)
app.command("open")(workspace.open_workspace)
app.command("suspend")(workspace.suspend)
app.command("resume")(workspace.resume)


def _fail(message: str, code: int = 1) -> int:
    sys.stderr.write("error: " + " ".join(str(message).split()) + "\n")
    sys.stderr.flush()
    return code


def main_exit_code(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (never raises, never prints a traceback unless debugging)."""
    CURRENT_STATE.set(State())  # each invocation starts from its own options (tests run many in one process)
    try:
        result = app(args=list(argv) if argv is not None else None, prog_name="shipyard", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        return 130
    except typer.TyperException as exc:
        # Typer's (vendored click's) usage errors: bad option, missing argument, unknown command.
        if type(exc).__name__ == "NoArgsIsHelpError":
            if exc.format_message().strip():
                sys.stderr.write(exc.format_message().rstrip("\n") + "\n")
            return exc.exit_code
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        return _fail(exc.format_message() + hint, exc.exit_code)
    except (CliError, ShipyardError, ManifestError) as exc:
        return _fail(str(exc))
    except BrokenPipeError:
        # `shipyard get ... | head`: the reader left; stop quietly (and keep Python from complaining at exit).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        return _fail(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}")
    except Exception as exc:
        if os.environ.get("SHIPYARD_DEBUG"):
            raise
        return _fail(f"unexpected {type(exc).__name__}: {exc} (set SHIPYARD_DEBUG=1 for a traceback)")


def run(argv: Sequence[str] | None = None) -> NoReturn:
    sys.exit(main_exit_code(argv))


if __name__ == "__main__":
    run()
