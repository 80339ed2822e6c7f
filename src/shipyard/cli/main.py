"""The `shipyard` entry point: the verbs, the global --project, and the error contract.

The contract: a failure the user can fix prints ONE line, `error: ...`, on stderr and exits 1 (usage errors
keep click's 2); Ctrl-C exits 130 quietly. A traceback is shown only with SHIPYARD_DEBUG=1, because a
traceback tells a user nothing about which file, document or field to fix.

Start-up (docs/benchmarks.md, CLI start-up; benchmarks/cli_startup.py measures it): the common verbs (get,
describe, logs, apply, delete, version) and `shipyard --help` run without importing typer at all (~90 ms of
CPU): cli/fast.py parses their command lines and calls the same verb functions, and hands anything else
(other verbs, per-verb --help, every usage error) to typer, built here only then (`typer_app`). On either
path a verb's module is imported only when that verb runs (LazyGroup), `--help` lists the verbs from their
sources without importing any, and typer runs without rich and converts options without pydantic. So
`shipyard get tj` pays for the HTTP client and little else.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated, Any, NoReturn, Optional, Sequence

if __name__ == "__main__" and getattr(sys.modules.get(__name__), "__dict__", None) is globals():
    # `python -m shipyard.cli.main` (the tests, the benchmarks): this module is then __main__, and `version`
    # (VERBS) or cli/fast.py importing it by name would run it a second time, as another module. (Checked:
    # under a runner such as `python -m cProfile -m ...`, __main__ is the runner, and this is not done.)
    sys.modules.setdefault("shipyard.cli.main", sys.modules[__name__])

from . import _typer as typer  # typer only when typer runs (cli/_typer.py)
from . import fast
from .common import CURRENT_STATE, CliError, State, echo, make_client

# httpx imports its own command line (`httpx._main`: rich, pygments, click) and httpcore its HTTP/2 support
# (h2, hpack) whenever those happen to be installed, which together cost more CPU than the rest of a `get`.
# The CLI uses neither (HTTP/1.1 only); a module set to None makes each library fall back to its stub. Only
# in this process, and only where the library is not loaded yet.
for _library, _unused in (("httpx", "httpx._main"), ("httpcore", "httpcore._sync.http2"),
                          ("httpcore", "httpcore._async.http2")):
    if _library not in sys.modules:
        sys.modules.setdefault(_unused, None)  # type: ignore[arg-type]

# name -> (module, attribute). Registered by module path and imported only when run, so a verb's options are
# whatever its module says now; `--help` reads each verb's one-line help from its source (verb_help).
VERBS: dict[str, tuple[str, str]] = {
    "apply": ("shipyard.cli.apply", "apply"),
    "get": ("shipyard.cli.get", "get"),
    "describe": ("shipyard.cli.get", "describe"),
    "logs": ("shipyard.cli.logs", "logs"),
    "delete": ("shipyard.cli.delete", "delete"),
    "scale": ("shipyard.cli.scale", "scale"),
    "render": ("shipyard.cli.render", "render"),
    "up": ("shipyard.cli.daemon", "up"),
    "down": ("shipyard.cli.daemon", "down"),
    "version": ("shipyard.cli.main", "version"),
    "token": ("shipyard.cli.token", "app"),
    "apikey": ("shipyard.cli.apikey", "app"),
    "port-forward": ("shipyard.cli.portforward", "port_forward"),
    "models": ("shipyard.cli.models", "models"),
    "open": ("shipyard.cli.workspace", "open_workspace"),
    "suspend": ("shipyard.cli.workspace", "suspend"),
    "resume": ("shipyard.cli.workspace", "resume"),
    "login": ("shipyard.cli.access", "login"),
    "logout": ("shipyard.cli.access", "logout"),
    "auth": ("shipyard.cli.access", "auth_app"),
    "user": ("shipyard.cli.access", "user_app"),
    "serviceaccount": ("shipyard.cli.access", "serviceaccount_app"),
    "project": ("shipyard.cli.project", "project_app"),
    "audit": ("shipyard.cli.access", "audit"),
}


def verb_help(name: str) -> str:
    """The first line of a verb's docstring (a group's `help=`), read from its source without importing it:
    `shipyard --help` lists sixteen verbs, and importing them all would cost it what a `get` costs."""
    import importlib.util
    import re

    module, attr = VERBS[name]
    spec = importlib.util.find_spec(module)
    try:
        with open(spec.origin if spec and spec.origin else "", encoding="utf-8") as f:
            source = f.read()
    except OSError:
        source = ""
    found = re.search(rf'^def {attr}\(.*?\)\s*->\s*[\w\[\], |.]+:\s*\n\s+"""([^\n]*?)(?:"""|\n)', source,
                      re.S | re.M) or re.search(rf'^{attr} = typer\.Typer\(help="([^"]*)"', source, re.M)
    if found:
        return found.group(1).strip()
    command = load_verb(name)  # a shape the patterns above do not know: ask the verb itself
    info = getattr(command, "info", None)  # a typer app (a group such as `token`)
    return ((info.help if info is not None else command.__doc__) or "").strip().split("\n")[0]


def load_verb(name: str) -> Any:
    """The verb's callback (or, for a group such as `token`, its typer app), imported now."""
    module, attr = VERBS[name]
    return getattr(importlib.import_module(module), attr)


def typer_app() -> Any:
    """The typer app, built on first use: the fast path (cli/fast.py) never needs it."""
    if _APP:
        return _APP[0]
    import typer.core  # here `typer` is the real package (a local name), not the module's lazy stand-in
    import typer.main

    from . import params

    class LazyGroup(typer.core.TyperGroup):
        """A typer group whose verbs are imported when invoked, so one verb never pays for the others'."""

        def list_commands(self, ctx: Any) -> list[str]:
            return [*super().list_commands(ctx), *(n for n in VERBS if n not in self.commands)]

        def get_command(self, ctx: Any, cmd_name: str) -> Any:
            if cmd_name not in self.commands and cmd_name in VERBS:
                target = load_verb(cmd_name)
                if isinstance(target, typer.Typer):
                    command = typer.main.get_group(target)
                else:
                    # By module path, at call time: a verb's signature (its options) is read from its module
                    # as it is now, so editing a verb never means editing this table too.
                    command = typer.main.get_command_from_info(
                        typer.models.CommandInfo(name=cmd_name, callback=target),
                        pretty_exceptions_short=False, rich_markup_mode=None)
                command.name = cmd_name
                self.commands[cmd_name] = command
            return super().get_command(ctx, cmd_name)

        def format_commands(self, ctx: Any, formatter: Any) -> None:
            # Listing verbs must not import them all (verb_help reads their sources).
            rows = [(name, verb_help(name)) for name in VERBS]
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl([(name, _shorten(text, limit)) for name, text in rows])

    params.install()  # options converted without pydantic (cli/params.py)
    app = typer.Typer(
        name="shipyard",
        cls=LazyGroup,
        help=fast.APP_HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,  # plain click help: importing rich costs more than the rest of a `get`
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(main)
    _APP.append(app)
    return app


_APP: list[Any] = []


def __getattr__(name: str) -> Any:
    # PEP 562: `main.app` and `main.LazyGroup` as before, built (importing typer) only when asked for.
    if name == "app":
        return typer_app()
    if name == "LazyGroup":
        return typer_app().info.cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:max(limit - 3, 1)].rstrip() + "..."


def main(
    ctx: typer.Context,
    project: Annotated[Optional[str], typer.Option(
        "--project", "-p", "-n", envvar="SHIPYARD_PROJECT",
        help="Project (namespace) to work in (default: the one `project use` chose, else default).")] = None,
    context: Annotated[str | None, typer.Option(
        "--context", envvar="SHIPYARD_CONTEXT",
        help="Use Shipyard on the cluster of this kubeconfig context (installed with the Helm chart) instead "
             "of the local control plane.")] = None,
    kubeconfig: Annotated[str | None, typer.Option(
        "--kubeconfig", envvar="SHIPYARD_KUBECONFIG",
        help="The kubeconfig file for --context (default: $KUBECONFIG, then ~/.kube/config).")] = None,
) -> None:
    """typer's callback for the global options (cli/fast.py reads them itself for the common verbs)."""
    ctx.obj = State(project=project, context=context, kubeconfig=kubeconfig)
    CURRENT_STATE.set(ctx.obj)


def version() -> None:
    """Print the client's version and, if one is reachable, the control plane's."""
    from shipyard.client import ShipyardError

    echo(f"Client: {_client_version()}")
    try:
        with make_client() as client:
            server = client.version()
        echo(f"Server: {server.get('version')} ({server.get('apiVersion')})")
    except ShipyardError as exc:
        echo(f"Server: not reachable ({exc})")


def _client_version() -> str:
    """This package's version from its installed metadata, read directly: `importlib.metadata` costs ~40 ms of
    imports (email parsing, zipfile) for one line of one file."""
    import glob

    for entry in sys.path:
        for meta in glob.glob(os.path.join(entry or ".", "shipyard-*.dist-info", "METADATA")):
            try:
                with open(meta, encoding="utf-8") as f:
                    for line in f:
                        if line.startswith("Version:"):
                            return line.split(":", 1)[1].strip()
                        if not line.strip():
                            break
            except OSError:
                continue
    return "unknown"


def _fail(message: str, code: int = 1) -> int:
    sys.stderr.write("error: " + " ".join(str(message).split()) + "\n")
    sys.stderr.flush()
    return code


def main_exit_code(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (never raises, never prints a traceback unless debugging)."""
    CURRENT_STATE.set(State())  # each invocation starts from its own options (tests run many in one process)
    try:
        code = fast.run_fast(list(argv) if argv is not None else sys.argv[1:])
        if code is None:  # not a command line the fast path is sure of: typer runs it, as it always did
            result = typer_app()(args=list(argv) if argv is not None else None, prog_name="shipyard",
                                 standalone_mode=False)
            code = result if isinstance(result, int) else 0
        return code
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        return _fail(str(exc))
    except BrokenPipeError:
        # `shipyard get ... | head`: the reader left; stop quietly (and keep Python from complaining at exit).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        return _fail(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}")
    except Exception as exc:
        code = _typer_outcome(exc)
        if code is not None:
            return code
        if isinstance(exc, _user_errors()):
            return _fail(str(exc))
        if os.environ.get("SHIPYARD_DEBUG"):
            raise
        return _fail(f"unexpected {type(exc).__name__}: {exc} (set SHIPYARD_DEBUG=1 for a traceback)")


def _typer_outcome(exc: Exception) -> int | None:
    """The exit code for typer's own exceptions (exit, abort, usage errors), None for any other. Looked up,
    not imported: where typer was never loaded (the fast path), none of them can have been raised."""
    real_typer = sys.modules.get("typer")
    if real_typer is None:
        return None
    if isinstance(exc, real_typer.Exit):
        return exc.exit_code
    if isinstance(exc, real_typer.Abort):
        return 130
    if not isinstance(exc, real_typer.TyperException):
        return None
    # Typer's (vendored click's) usage errors: bad option, missing argument, unknown command.
    if type(exc).__name__ == "NoArgsIsHelpError":
        if exc.format_message().strip():
            sys.stderr.write(exc.format_message().rstrip("\n") + "\n")
        return exc.exit_code
    ctx = getattr(exc, "ctx", None)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    return _fail(exc.format_message() + hint, exc.exit_code)


def _user_errors() -> tuple[type[BaseException], ...]:
    """The client's and the manifest parser's refusals, one line each. Looked up, not imported: a verb that
    never loaded them cannot have raised them, and importing them would cost every verb their start-up."""
    found = []
    for module, name in (("shipyard.client", "ShipyardError"), ("shipyard.resources.documents", "ManifestError")):
        loaded = sys.modules.get(module)
        if loaded is not None:
            found.append(getattr(loaded, name))
    return tuple(found)


def run(argv: Sequence[str] | None = None) -> NoReturn:
    sys.exit(main_exit_code(argv))


if __name__ == "__main__":
    run()
