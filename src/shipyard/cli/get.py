"""`shipyard get` and `shipyard describe`: read objects and print them as tables, YAML/JSON or a report.

Both work on the wire form the API sends (camelCase dicts) and never build the pydantic models: printing
needs none of their validation, and importing them would cost more CPU than the rest of the call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Optional

from shipyard.resources.names import KIND_NAMES

from . import _typer as typer  # typer only when typer reads the signatures (cli/_typer.py)
from . import common, printers
from .common import CliError, Selector, echo, kind_of, labels_of, make_client, project_of, selector_of, split_ref

if TYPE_CHECKING:
    from shipyard.client import Client

OUTPUTS = ("wide", "yaml", "json")


def _out(text: str) -> None:
    echo(text, nl=False)


def sort_key(path: str) -> Any:
    """kubectl's `--sort-by` JSONPath (`.metadata.creationTimestamp`, `{.status.phase}`) as a sort key:
    numbers by value, everything else as text, objects without the field last."""
    dotted = path.strip()
    if dotted.startswith("{") and dotted.endswith("}"):
        dotted = dotted[1:-1]
    dotted = dotted.lstrip(".")
    if not dotted or any(ch in dotted for ch in "[]*?@$ "):
        raise CliError(f"--sort-by {path!r}: use a field path such as .metadata.creationTimestamp or .status.phase")

    def key(wire: printers.Wire) -> tuple[int, float, str]:
        value = printers.dig(wire, dotted)
        if value is None:
            return (2, 0.0, "")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (0, float(value), "")
        return (1, 0.0, str(value))

    return key


def get(
    ctx: typer.Context,
    what: Annotated[str, typer.Argument(metavar="KIND[/NAME]", help="e.g. trainingjobs, tj, tj/my-job, all")],
    name: Annotated[Optional[str], typer.Argument(metavar="[NAME]")] = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="wide, yaml or json.")] = None,
    selector: common.SelectorOption = None,
    sort_by: Annotated[Optional[str], typer.Option(
        "--sort-by", metavar="PATH", help="Sort a list by a field, e.g. .metadata.creationTimestamp.")] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="After listing, print a row per change.")] = False,
    all_projects: Annotated[bool, typer.Option("--all-projects", "-A", help="List across all projects.")] = False,
    project: common.ProjectOption = None,
) -> None:
    """List resources, or show one (`get all`: every kind)."""
    if output is not None and output not in OUTPUTS:
        raise CliError(f"--output must be one of {', '.join(OUTPUTS)}, not {output!r}")
    wanted = selector_of(selector)
    key = sort_key(sort_by) if sort_by else None
    if what.lower() == "all":
        if name is not None:
            raise CliError("`get all` lists every kind; give a kind to show one object (get tj NAME)")
        if watch:
            raise CliError("--watch follows one kind; `get all -w` is not supported (use get KIND -w)")
        _get_all(ctx, output, selector, key, all_projects, project)
        return
    cls, name = split_ref(what, name)
    if name and (selector or sort_by):
        raise CliError("-l and --sort-by select among a list; they cannot be combined with a NAME")
    namespace = None if all_projects and not name else project_of(ctx, project)
    with make_client() as client:
        if name:
            wire = client.get_wire(cls.KIND, name, namespace or "default")
            wires, version = [wire], printers.dig(wire, "metadata.resourceVersion")
        else:
            # The server filters (only matches cross the wire); checked here too, for a server that predates it.
            wires, version = client.list_wire(cls.KIND, namespace, selector=selector)
            wires = [w for w in wires if wanted.matches(labels_of(w))]
            if key is not None:
                wires.sort(key=key)
        columns: list[printers.Column] = []
        widths: list[int] | None = None
        if output in ("yaml", "json"):
            _out(printers.dump(wires[0] if name else printers.as_list(wires), output))
        else:
            columns = printers.columns_for(cls.KIND, output == "wide", namespace is None)
            if not wires and not watch:
                echo(f"No {cls.PLURAL} found in {_where(namespace)}{_matching(selector)}.", err=True)
                return
            lines, widths = printers.table(columns, wires)
            _out("".join(line + "\n" for line in lines))
            if name:
                _out(_details(wires[0]))
        if watch:
            _watch(client, cls.KIND, namespace, name, version, output, columns, widths, wanted)


def _where(namespace: str | None) -> str:
    return "any project" if namespace is None else f"project {namespace}"


def _matching(selector: str | None) -> str:
    return f" matching {selector}" if selector else ""


def _get_all(ctx: typer.Context, output: str | None, selector: str | None, key: Any, all_projects: bool,
             project: str | None) -> None:
    """Every kind, one table each (names as KIND/NAME, a blank line between tables), as `kubectl get all`."""
    wanted = selector_of(selector)
    namespace = None if all_projects else project_of(ctx, project)
    found: list[tuple[str, list[printers.Wire]]] = []
    with make_client() as client:
        for names in KIND_NAMES:
            if names.KIND == "Secret" or names.CLUSTER_SCOPED:
                continue  # as kubectl's `get all`, which leaves Secrets and Namespaces out
            listed = client.list_wire(names.KIND, namespace, selector=selector)[0]
            wires = [w for w in listed if wanted.matches(labels_of(w))]
            if key is not None:
                wires.sort(key=key)
            if wires:
                found.append((names.KIND, wires))
    if output in ("yaml", "json"):
        _out(printers.dump(printers.as_list([w for _, wires in found for w in wires]), output))
        return
    if not found:
        echo(f"No resources found in {_where(namespace)}{_matching(selector)}.", err=True)
        return
    tables = []
    for kind, wires in found:
        columns = printers.columns_for(kind, output == "wide", namespace is None)
        prefix = kind_of(kind).KIND.lower() + "/"
        named = [printers.Column("NAME", lambda o, p=prefix: p + str(printers.dig(o, "metadata.name")))
                 if c is printers.NAME else c for c in columns]
        tables.append("".join(line + "\n" for line in printers.table(named, wires)[0]))
    _out("\n".join(tables))


def _watch(client: Client, kind: str, namespace: str | None, name: str | None, version: str | None,
           output: str | None, columns: list[printers.Column], widths: list[int] | None, wanted: Selector) -> None:
    for _type, obj in client.watch(kind, namespace, name=name, resource_version=version):
        wire = obj.to_wire()
        if not wanted.matches(labels_of(wire)):
            continue
        if output in ("yaml", "json"):
            _out(("---\n" if output == "yaml" else "") + printers.dump(wire, output))
        else:
            row = [c.render(wire) for c in columns]
            _out(printers.format_rows([row], widths)[0] + "\n")
            if name:
                _out(_details(wire))


def _details(wire: printers.Wire) -> str:
    """What one object shows under its row: a Sweep's trials, best first."""
    trials = printers.sweep_trials(wire) if wire.get("kind") == "Sweep" else []
    return "".join(f"{line}\n" for line in ["", *trials]) if trials else ""


def describe(
    ctx: typer.Context,
    what: Annotated[str, typer.Argument(metavar="KIND[/NAME]")],
    name: Annotated[Optional[str], typer.Argument(metavar="[NAME]")] = None,
    project: common.ProjectOption = None,
) -> None:
    """Show one resource in detail: metadata, spec, status, conditions, replicas and events."""
    cls, name = split_ref(what, name)
    if not name:
        raise CliError(f"describe needs a name: shipyard describe {cls.PLURAL} NAME")
    namespace = project_of(ctx, project)
    with make_client() as client:
        wire = client.get_wire(cls.KIND, name, namespace)
        events = client.events(cls.KIND, name, namespace)
    _out(printers.describe(wire, events))
