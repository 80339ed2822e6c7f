"""What every verb shares: the one-line error type, the client, the project, references, label selectors
and manifest files.

Manifests are read here (bounded, YAML errors as `FILE: document N: problem` before any request); the
control plane validates the documents with the models and refuses all of them, naming file, document and
field, before storing any.

Start-up cost is a feature here: every verb imports this module, so it imports only plain-Python parts of
Shipyard at the top (kind names, the selector parser); the HTTP client and the pydantic kinds are imported by
the functions that need them (docs/benchmarks.md, CLI start-up). Nor typer: the common verbs run without it
(cli/fast.py), so the option aliases below are built when typer reads a signature, not at import.
"""

from __future__ import annotations

import os
import sys
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from shipyard.resources.names import KindName, resolve_name
from shipyard.resources.selector import Selector, parse_selector

if TYPE_CHECKING:
    from shipyard.client import Client
    from shipyard.resources.documents import Document

DEFAULT_PROJECT = "default"


def _options() -> dict[str, Any]:
    """The shared option types, for signatures read by typer: `project: common.ProjectOption = None`."""
    from typing import Annotated, Optional

    import typer

    return {
        "ProjectOption": Annotated[Optional[str], typer.Option(
            "--project", "-p", "-n", help="Project (namespace) to use; overrides the global --project.",
            show_default=False)],
        "SelectorOption": Annotated[Optional[str], typer.Option(
            "--selector", "-l", metavar="SELECTOR",
            help="Only objects whose labels match, as kubectl: k=v, k==v, k!=v, k, !k, k in (a,b), k notin (a); "
                 "comma-separated terms must all hold.")],
    }


def __getattr__(name: str) -> Any:
    # PEP 562: ProjectOption and SelectorOption are built (importing typer) on first use, then kept, so every
    # verb shares one of each as before. The fast path (cli/fast.py) never asks for them.
    if name in ("ProjectOption", "SelectorOption"):
        globals().update(_options())
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def echo(text: str = "", nl: bool = True, err: bool = False) -> None:
    """typer.echo for text without importing typer: write, newline unless nl=False, flush (so `get -w` and
    `logs -f` reach a pipe as they happen, as typer.echo did)."""
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n" if nl else text)
    stream.flush()


class CliError(Exception):
    """A refusal the user can act on; printed as one `error: ...` line, exit code 1."""


class State(NamedTuple):  # not a dataclass: importing dataclasses costs every CLI call ~20 ms (inspect)
    project: str | None = None  # --project / SHIPYARD_PROJECT; None: the current project (`project use`)
    context: str | None = None  # a kubeconfig context: talk to Shipyard on that cluster
    kubeconfig: str | None = None


def project_of(ctx: Any, override: str | None) -> str:
    """The verb's --project, else the global one (`ctx`: typer's context, or cli/fast.py's stand-in)."""
    if override:
        return override
    state = ctx.find_object(State)
    return (state.project if state else None) or current_project()


def current_project() -> str:
    """The project `shipyard project use` chose (kubectl's namespace of the current context), else default."""
    import json

    from shipyard import config

    try:
        chosen = json.loads(config.paths().cli_config.read_text(encoding="utf-8")).get("project")
    except (OSError, ValueError, AttributeError):
        chosen = None
    return chosen if isinstance(chosen, str) and chosen else DEFAULT_PROJECT


def use_project(project: str) -> None:
    import json

    from shipyard import config

    path = config.paths().cli_config
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        settings = {}
    settings = settings if isinstance(settings, dict) else {}
    settings["project"] = project
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


# The global options of this invocation, for the verbs that build a client without their typer context.
CURRENT_STATE: ContextVar[State] = ContextVar("shipyard_cli_state", default=State())


def make_client() -> Client:
    from shipyard.client import Client

    state = CURRENT_STATE.get()
    if state.context or state.kubeconfig:
        return Client.for_cluster(state.context, state.kubeconfig)
    return Client()


def kind_of(word: str) -> KindName:
    """The kind's names (KIND, PLURAL, SHORT_NAMES); its pydantic class is `resources.kind_class(KIND)`."""
    try:
        return resolve_name(word)
    except KeyError as exc:
        raise CliError(exc.args[0]) from None


def selector_of(text: str | None) -> Selector:
    """kubectl's `-l` text, parsed (`shipyard.resources.selector.parse_selector`); a one-line error if bad."""
    try:
        return parse_selector(text)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def labels_of(wire: dict) -> dict:
    meta = wire.get("metadata")
    return (meta.get("labels") or {}) if isinstance(meta, dict) else {}


def split_ref(what: str, name: str | None) -> tuple[KindName, str | None]:
    """`KIND NAME`, `KIND/NAME` or a bare `KIND`, as kubectl accepts them."""
    if "/" in what:
        kind, _, ref_name = what.partition("/")
        if name is not None:
            raise CliError(f"give either KIND/NAME or KIND NAME, not both ({what!r} and {name!r})")
        if not ref_name:
            raise CliError(f"{what!r} names no object; use KIND/NAME")
        return kind_of(kind), ref_name
    return kind_of(what), name


# --- manifest files -------------------------------------------------------------------------------------

def _read_limited(path: str) -> bytes:
    from shipyard.resources.documents import MAX_TEXT_BYTES

    limit_mb = MAX_TEXT_BYTES >> 20
    if path == "-":
        stream = getattr(sys.stdin, "buffer", None)
        data = stream.read(MAX_TEXT_BYTES + 1) if stream is not None else sys.stdin.read().encode()
        if len(data) > MAX_TEXT_BYTES:
            raise CliError(f"-: standard input exceeds {limit_mb} MiB")
        return data
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_TEXT_BYTES:
                raise CliError(f"{path}: file is larger than {limit_mb} MiB")
            data = f.read(MAX_TEXT_BYTES + 1)  # the size may lie (a FIFO, /proc): cap the read too
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_TEXT_BYTES:
        raise CliError(f"{path}: file is larger than {limit_mb} MiB")
    return data


def expand_paths(paths: list[str], recursive: bool = False) -> list[str]:
    """Files as given; directories become their *.yaml/*.yml files (sorted; with `recursive`, those of every
    subdirectory too, as `kubectl -R`); `-` is stdin."""
    out: list[str] = []
    for raw in paths:
        if raw == "-":
            out.append(raw)
            continue
        path = Path(raw)
        if path.is_dir():
            try:
                listed = path.rglob("*") if recursive else path.iterdir()
                found = sorted(p for p in listed if p.suffix in (".yaml", ".yml") and p.is_file())
            except OSError as exc:
                raise CliError(f"{raw}: cannot list directory: {exc.strerror or exc}") from None
            if not found:
                raise CliError(f"{raw}: directory has no *.yaml or *.yml files")
            out.extend(str(p) for p in found)
        elif not path.exists():
            raise CliError(f"{raw}: no such file or directory")
        else:
            out.append(raw)
    return out


def _complete(doc: Document, project: str, workdir: str | None) -> None:
    """Fill in what the user may leave out: the project, and (for the local runtime) the directory to run in.
    Malformed shapes are left alone for validation to report with the right path."""
    from shipyard.resources.documents import LOCAL_WORKDIR_ANNOTATION

    body = doc.body
    meta = body.get("metadata") if isinstance(body, dict) else None
    if not isinstance(meta, dict):
        return
    if meta.get("namespace") is None:
        meta["namespace"] = project
    if workdir is not None:
        if meta.get("annotations") is None:
            meta["annotations"] = {}
        if isinstance(meta["annotations"], dict):
            meta["annotations"].setdefault(LOCAL_WORKDIR_ANNOTATION, workdir)


def read_manifests(paths: list[str], project: str, local_workdir: bool, recursive: bool = False) -> list[Document]:
    """Parse every document of every path (ManifestError names file, document and field)."""
    from shipyard.resources.documents import parse_yaml

    documents: list[Document] = []
    for path in expand_paths(paths, recursive):
        data = _read_limited(path)
        docs = parse_yaml(data, path)
        workdir = None
        if local_workdir:
            workdir = str(Path.cwd() if path == "-" else Path(path).resolve().parent)
        for doc in docs:
            _complete(doc, project, workdir)
        documents.extend(docs)
    if not documents:
        raise CliError(f"no objects found in {', '.join(paths)}")
    return documents
