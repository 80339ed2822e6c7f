"""`shipyard get` and `shipyard describe`: read objects and print them as tables, YAML/JSON or a report."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from shipyard.client import Client

from . import printers
from .common import CliError, ProjectOption, make_client, project_of, split_ref

OUTPUTS = ("wide", "yaml", "json")


def _out(text: str) -> None:
    typer.echo(text, nl=False)


def get(
    ctx: typer.Context,
    what: Annotated[str, typer.Argument(metavar="KIND[/NAME]", help="e.g. trainingjobs, tj, tj/my-job")],
    name: Annotated[Optional[str], typer.Argument(metavar="[NAME]")] = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="wide, yaml or json.")] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="After listing, print a row per change.")] = False,
    all_projects: Annotated[bool, typer.Option("--all-projects", "-A", help="List across all projects.")] = False,
    project: ProjectOption = None,
) -> None:
    """List resources, or show one."""
    if output is not None and output not in OUTPUTS:
        raise CliError(f"--output must be one of {', '.join(OUTPUTS)}, not {output!r}")
    cls, name = split_ref(what, name)
    namespace = None if all_projects and not name else project_of(ctx, project)
    with make_client() as client:
        if name:
            obj = client.get(cls.KIND, name, namespace or "default")
            objects, version = [obj], obj.metadata.resource_version
        else:
            objects, version = client.list_with_version(cls.KIND, namespace)
        wires = [o.to_wire() for o in objects]
        columns: list[printers.Column] = []
        widths: list[int] | None = None
        if output in ("yaml", "json"):
            _out(printers.dump(wires[0] if name else printers.as_list(wires), output))
        else:
            columns = printers.columns_for(cls.KIND, output == "wide", namespace is None)
            if not wires and not watch:
                where = "any project" if namespace is None else f"project {namespace}"
                typer.echo(f"No {cls.PLURAL} found in {where}.", err=True)
                return
            lines, widths = printers.table(columns, wires)
            _out("".join(line + "\n" for line in lines))
            if name:
                _out(_details(wires[0]))
        if watch:
            _watch(client, cls.KIND, namespace, name, version, output, columns, widths)


def _watch(client: Client, kind: str, namespace: str | None, name: str | None, version: str | None,
           output: str | None, columns: list[printers.Column], widths: list[int] | None) -> None:
    for _type, obj in client.watch(kind, namespace, name=name, resource_version=version):
        wire = obj.to_wire()
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
    project: ProjectOption = None,
) -> None:
    """Show one resource in detail: metadata, spec, status, conditions, replicas and events."""
    cls, name = split_ref(what, name)
    if not name:
        raise CliError(f"describe needs a name: shipyard describe {cls.PLURAL} NAME")
    namespace = project_of(ctx, project)
    with make_client() as client:
        obj = client.get(cls.KIND, name, namespace)
        events = client.events(cls.KIND, name, namespace)
    _out(printers.describe(obj.to_wire(), events))
