"""The common verbs without typer: `get`, `describe`, `logs`, `apply`, `delete`, `version` and `shipyard --help`.

Why: importing typer costs ~90 ms of CPU, about half of what a `shipyard get` costs in all (docs/benchmarks.md,
CLI start-up). So `run_fast` parses the global options and one of these verbs itself and calls the very same
verb function typer would, with the same keyword arguments; main.main_exit_code runs it first, inside the
same error contract.

It is a subset of typer's parsing, never a variant: for anything it is not sure about (`-h`/`--help`, an
unknown option, a missing or extra argument, a number that is not plainly one, `--`, `-o=x`) it returns
None and typer runs the whole command line as before, so usage errors and per-verb help are typer's own.
The declarations below mirror the verbs' typer signatures option for option; tests/unit/test_cli_fast.py
compares them with the click commands typer builds, and the top-level help with typer's, byte for byte.

Deliberately no argparse (~15 ms of imports, and its own ideas about abbreviations and negative numbers):
the parser below is click's algorithm, restricted to what these verbs declare.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence

from .common import CURRENT_STATE, State

APP_HELP = "Train, fine-tune and serve models from one declarative spec, on this machine or a cluster."


class Opt:
    """One option as typer declares it: `kind` is the value's type (bool: a flag without a value), `multiple`
    a repeatable option (a list), `low` the `min=` of a number."""

    __slots__ = ("dest", "opts", "kind", "multiple", "low", "required", "envvar", "default")

    def __init__(self, dest: str, opts: tuple[str, ...], kind: type = str, *, multiple: bool = False,
                 low: float | None = None, required: bool = False, envvar: str | None = None,
                 default: Any = None) -> None:
        self.dest, self.opts, self.kind, self.multiple, self.low = dest, opts, kind, multiple, low
        self.required, self.envvar = required, envvar
        self.default = False if kind is bool else default


class Arg:
    """One positional argument (one value each, as all of these verbs take)."""

    __slots__ = ("dest", "required")

    def __init__(self, dest: str, required: bool = True) -> None:
        self.dest, self.required = dest, required


# The global options of main.main (the typer callback), in its order.
GLOBAL = (
    Opt("project", ("--project", "-p", "-n"), envvar="SHIPYARD_PROJECT"),
    Opt("context", ("--context",), envvar="SHIPYARD_CONTEXT"),
    Opt("kubeconfig", ("--kubeconfig",), envvar="SHIPYARD_KUBECONFIG"),
)

_PROJECT = Opt("project", ("--project", "-p", "-n"))  # common.ProjectOption
_SELECTOR = Opt("selector", ("--selector", "-l"))  # common.SelectorOption

# verb -> its parameters in signature order (main.VERBS says where the function is). Every verb here but
# `version` also takes typer's context as `ctx` (NO_CTX).
FAST_VERBS: dict[str, tuple[Opt | Arg, ...]] = {
    "get": (Arg("what"), Arg("name", False), Opt("output", ("--output", "-o")), _SELECTOR,
            Opt("sort_by", ("--sort-by",)), Opt("watch", ("--watch", "-w"), bool),
            Opt("all_projects", ("--all-projects", "-A"), bool), _PROJECT),
    "describe": (Arg("what"), Arg("name", False), _PROJECT),
    "logs": (Arg("what"), Arg("name", False), Opt("replica", ("--replica", "-r"), int, low=0),
             Opt("pod", ("--pod",)), Opt("all_pods", ("--all",), bool), Opt("selector", ("--selector", "-l")),
             Opt("previous", ("--previous", "-p"), bool), Opt("since", ("--since",)),
             Opt("follow", ("--follow", "-f"), bool), Opt("tail", ("--tail",), int, low=0),
             Opt("trial", ("--trial",), int, low=0), _PROJECT),
    "apply": (Opt("filenames", ("--filename", "-f"), multiple=True, required=True),
              Opt("wait", ("--wait",), bool), Opt("timeout", ("--timeout",), float, low=0),
              Opt("dry_run", ("--dry-run",), bool), _PROJECT),
    "delete": (Arg("what", False), Arg("name", False), Opt("filenames", ("--filename", "-f"), multiple=True),
               Opt("wait", ("--wait",), bool), Opt("timeout", ("--timeout",), float, low=0),
               Opt("ignore_not_found", ("--ignore-not-found",), bool), _SELECTOR, _PROJECT),
    "version": (),
}
NO_CTX = frozenset({"version"})

_HELP = ("-h", "--help")


class _Unsure(Exception):
    """Not certain to mean what typer would make of it: let typer run the command line."""


class Context:
    """What the verbs use of typer's Context: `obj` and `find_object`, for the global options (project_of)."""

    def __init__(self, obj: State) -> None:
        self.obj = obj

    def find_object(self, object_type: type) -> Any:
        return self.obj if isinstance(self.obj, object_type) else None


def run_fast(argv: Sequence[str]) -> int | None:
    """Run a common verb (or print the top-level help) and return its exit code; None: typer's to run.
    Raises what the verb raises, for main_exit_code's error contract."""
    args = list(argv)
    if not args or args in (["-h"], ["--help"]):
        # typer: `--help` prints the help; no arguments print it on stderr and exit 2 (no_args_is_help).
        text = top_help() + "\n"
        (sys.stdout if args else sys.stderr).write(text)
        return 0 if args else 2
    try:
        values, _, rest = _parse(GLOBAL, args, interspersed=False)
        if not rest or rest[0] not in FAST_VERBS:
            return None  # no verb, or one of typer's
        verb = rest[0]
        options, positional, _ = _parse(FAST_VERBS[verb], rest[1:], interspersed=True)
        kwargs = _assign(FAST_VERBS[verb], options, positional)
    except _Unsure:
        return None
    # As main.main (the typer callback) does: the global options, from the command line or the environment.
    state = State(**{o.dest: values[o.dest] if o.dest in values else (os.environ.get(o.envvar or "") or o.default)
                     for o in GLOBAL})
    CURRENT_STATE.set(state)
    if verb not in NO_CTX:
        kwargs["ctx"] = Context(state)
    from .main import load_verb  # main is loaded: it is what called us

    result = load_verb(verb)(**kwargs)
    return result if isinstance(result, int) else 0


def _parse(spec: Sequence[Opt | Arg], args: list[str],
           interspersed: bool) -> tuple[dict[str, Any], list[str], list[str]]:
    """click's option parsing for `spec`: `--name VALUE`, `--name=VALUE`, `-n VALUE`, `-nVALUE`, clusters of
    short flags (`-wA`), options and arguments in any order (`interspersed`; a group stops at its first
    argument and returns the rest). Returns ({dest: value}, [positional...], rest)."""
    options = {name: o for o in spec if isinstance(o, Opt) for name in o.opts}
    values: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg in _HELP or arg == "--":
            raise _Unsure
        if arg[:1] != "-" or len(arg) == 1:
            if not interspersed:
                return values, positional, args[i - 1:]
            positional.append(arg)
        elif arg.startswith("--"):
            name, eq, value = arg.partition("=")
            opt = options.get(name)
            if opt is None or (eq and opt.kind is bool):
                raise _Unsure
            if opt.kind is bool:
                values[opt.dest] = True
                continue
            if not eq:
                if i >= len(args):
                    raise _Unsure
                value, i = args[i], i + 1  # click takes the next word, even one starting with "-"
            _store(values, opt, value)
        else:
            if "=" in arg:  # click reads `-o=x` as -o with the value "=x"; too odd to promise the same
                raise _Unsure
            for j, letter in enumerate(arg[1:], 2):
                opt = options.get("-" + letter)
                if opt is None:
                    raise _Unsure
                if opt.kind is bool:
                    values[opt.dest] = True
                    continue
                if j < len(arg):
                    value = arg[j:]
                elif i < len(args):
                    value, i = args[i], i + 1
                else:
                    raise _Unsure
                _store(values, opt, value)
                break
    return values, positional, []


def _store(values: dict[str, Any], opt: Opt, text: str) -> None:
    value = _convert(opt, text)
    if opt.multiple:
        values.setdefault(opt.dest, []).append(value)
    else:
        values[opt.dest] = value  # repeated: the last one, as click


def _convert(opt: Opt, text: str) -> Any:
    """Only plain digits are numbers here; anything else (signs, exponents, spaces, out of range) is left to
    typer, which converts it or says why not."""
    if opt.kind is str:
        return text
    whole, _, fraction = text.partition(".") if opt.kind is float else (text, "", "")
    digits = whole + fraction
    if not digits or not digits.isascii() or not digits.isdigit():
        raise _Unsure
    value = opt.kind(text)
    if opt.low is not None and value < opt.low:
        raise _Unsure
    return value


def _assign(spec: Sequence[Opt | Arg], values: dict[str, Any], positional: list[str]) -> dict[str, Any]:
    """Keyword arguments for the verb: every parameter, given or default; positionals in order."""
    arguments = [p for p in spec if isinstance(p, Arg)]
    if len(positional) > len(arguments):
        raise _Unsure  # typer: "Got unexpected extra argument"
    kwargs: dict[str, Any] = {}
    for param in spec:
        if isinstance(param, Arg):
            position = arguments.index(param)
            if position < len(positional):
                kwargs[param.dest] = positional[position]
            elif param.required:
                raise _Unsure  # typer: "Missing argument"
            else:
                kwargs[param.dest] = None
        elif param.dest in values:
            kwargs[param.dest] = values[param.dest]
        elif param.required:
            raise _Unsure  # typer: "Missing option"
        else:
            kwargs[param.dest] = param.default
    return kwargs


# --- shipyard --help --------------------------------------------------------------------------------------

# The global options' rows as typer prints them (its "[env var: ...; default: ...]" included).
OPTION_ROWS = (
    ("-p, -n, --project <str>", "Project (namespace) to work in (default: the one `project use` chose, else "
                                "default).  [env var: SHIPYARD_PROJECT]"),
    ("--context <str>", "Use Shipyard on the cluster of this kubeconfig context (installed with the Helm chart) "
                        "instead of the local control plane.  [env var: SHIPYARD_CONTEXT]"),
    ("--kubeconfig <str>", "The kubeconfig file for --context (default: $KUBECONFIG, then ~/.kube/config).  "
                           "[env var: SHIPYARD_KUBECONFIG]"),
    ("-h, --help", "Show this message and exit."),
)


def top_help(width: int | None = None) -> str:
    """`shipyard --help` as typer (click's HelpFormatter, no rich) lays it out, without its trailing newline:
    the same width rule, wrapping, definition lists and main.LazyGroup's Commands section."""
    from .main import VERBS, _shorten, verb_help

    if width is None:
        width = max(min(_terminal_columns(), 80) - 2, 50)
    prefix = "Usage: shipyard "
    out = [_wrap("[OPTIONS] COMMAND [ARGS]...", width, prefix, " " * len(prefix)), "\n",
           "\n", _wrap(APP_HELP, width, "  ", "  "), "\n"]
    out += ["\n", "Options:\n", *_definitions(OPTION_ROWS, width)]
    rows = [(name, verb_help(name)) for name in VERBS]
    limit = width - 6 - max(len(name) for name, _ in rows)
    out += ["\n", "Commands:\n", *_definitions([(name, _shorten(text, limit)) for name, text in rows], width)]
    return "".join(out).rstrip("\n")


def _definitions(rows: Sequence[tuple[str, str]], width: int, indent: int = 2) -> list[str]:
    """click's HelpFormatter.write_dl (col_max 30, col_spacing 2) at one level of indentation."""
    first_col = min(max(len(first) for first, _ in rows), 30) + 2
    out = []
    for first, second in rows:
        out.append(" " * indent + first)
        if not second:
            out.append("\n")
            continue
        out.append(" " * (first_col - len(first)) if len(first) <= first_col - 2 else "\n" + " " * (first_col + indent))
        lines = _wrap(second, max(width - first_col - 2, 10)).splitlines()
        out.append(lines[0] + "\n")
        out += [" " * (first_col + indent) + line + "\n" for line in lines[1:]]
    return out


def _wrap(text: str, width: int, initial: str = "", subsequent: str = "") -> str:
    """click's wrap_text for one paragraph: textwrap, except that a word longer than a line is cut at the
    line's end (click's TextWrapper._handle_long_word)."""
    import textwrap

    class Wrapper(textwrap.TextWrapper):
        def _handle_long_word(self, chunks: list[str], line: list[str], length: int, line_width: int) -> None:
            room = max(line_width - length, 1)
            line.append(chunks[-1][:room])
            chunks[-1] = chunks[-1][room:]

    return Wrapper(width, initial_indent=initial, subsequent_indent=subsequent,
                   replace_whitespace=False).fill(text.expandtabs())


def _terminal_columns() -> int:
    """shutil.get_terminal_size().columns (COLUMNS, else the terminal, else 80) without importing shutil."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80
