"""`shipyard project create|get|describe|delete|add-member|remove-member|members|use|current`.

A project is kind Project (cluster-scoped): its members are `spec.members`, each bound to a built-in role
(view, edit, admin) by a RoleBinding in the project's namespace named `member-KIND-NAME`, the objects a cluster
holds natively. `add-member` writes both the Project's spec (what the controller keeps true from then on) and
the binding itself, so the member can work the moment the command returns.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

from . import _typer as typer  # typer only when typer reads the signatures (cli/_typer.py)
from . import common, printers
from .common import CliError, echo, make_client

ROLES = ("view", "edit", "admin")
SUBJECT_KINDS = {"user": "User", "group": "Group", "serviceaccount": "ServiceAccount"}

project_app = typer.Typer(help="Create and delete projects, choose one (use, current) and who may work in it.",
                          no_args_is_help=True)


def _checked_name(name: str) -> str:
    from shipyard.resources.base import check_dns1123_label

    try:
        return check_dns1123_label(name, "project")
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _applicable(wire: dict[str, Any]) -> dict[str, Any]:
    """The user-owned parts of a Project as read, to apply back changed."""
    meta = wire.get("metadata") or {}
    return {"apiVersion": wire["apiVersion"], "kind": "Project",
            "metadata": {k: meta[k] for k in ("name", "labels", "annotations") if meta.get(k)},
            "spec": wire.get("spec") or {}}


def _read(client: Any, name: str) -> dict[str, Any]:
    from shipyard.client import ShipyardError

    try:
        return dict(client.get_wire("Project", name))
    except ShipyardError as exc:
        if getattr(exc, "status", None) == 404:
            raise CliError(f"project {name} does not exist (a cluster-admin creates it: shipyard project create "
                           f"{name})") from None
        raise


# --- create, get, describe, delete ------------------------------------------------------------------------

@project_app.command("create")
def create(name: Annotated[str, typer.Argument(help="The project (a DNS label: the namespace it owns).")],
           display_name: Annotated[str, typer.Option("--display-name", help="A human name.")] = "",
           description: Annotated[str, typer.Option("--description", help="What it is for.")] = "",
           priority_class: Annotated[Optional[str], typer.Option(
               "--priority-class", help="The priority class its workloads get by default.")] = None) -> None:
    """Create a project (cluster-admin): its namespace, policies and limits follow."""
    spec: dict[str, Any] = {"displayName": display_name, "description": description}
    if priority_class:
        spec["defaults"] = {"priorityClass": priority_class}
    obj = {"apiVersion": "shipyard.dev/v1alpha1", "kind": "Project",
           "metadata": {"name": _checked_name(name)}, "spec": spec}
    with make_client() as client:
        if _exists(client, name):
            raise CliError(f"project {name} already exists")
        client.apply([("project create", 1, obj)])
    echo(f"project/{name} created")


def _exists(client: Any, name: str) -> bool:
    from shipyard.client import ShipyardError

    try:
        client.get_wire("Project", name)
        return True
    except ShipyardError as exc:
        # 403: the caller may not see it (whether it exists or not); the apply's own refusal says why.
        if getattr(exc, "status", None) in (403, 404):
            return False
        raise


@project_app.command("get")
def get(name: Annotated[Optional[str], typer.Argument(help="One project; all you may see by default.")] = None,
        output: Annotated[Optional[str], typer.Option("--output", "-o", help="wide, yaml or json")] = None) -> None:
    """List the projects you may see (every one for a cluster-admin), or show one."""
    if output not in (None, "wide", "yaml", "json"):
        raise CliError(f"--output must be wide, yaml or json, not {output!r}")
    with make_client() as client:
        wires = [_read(client, name)] if name else client.list_wire("Project", None)[0]
    if output in ("yaml", "json"):
        echo(printers.dump(wires[0] if name else printers.as_list(wires), output).rstrip("\n"))
        return
    if not wires:
        echo("No projects found.", err=True)
        return
    for line in printers.table(printers.columns_for("Project", output == "wide", False), wires)[0]:
        echo(line)


@project_app.command("describe")
def describe(name: Annotated[str, typer.Argument(help="The project.")]) -> None:
    """A project in detail: description, defaults, members, what it holds, events."""
    from shipyard.resources.names import KIND_NAMES

    with make_client() as client:
        wire = _read(client, name)
        events = client.events("Project", name)
        # What it holds, counted now (the controller does not keep a count: it would wake on every change).
        held = {k.KIND: n for k in KIND_NAMES if not k.CLUSTER_SCOPED if (n := _count(client, k.KIND, name))}
    echo(printers.describe({**wire, "held": held}, events).rstrip("\n"))


def _count(client: Any, kind: str, project: str) -> int:
    from shipyard.client import ApiError

    try:
        return len(client.list_wire(kind, project)[0])
    except ApiError as exc:
        if exc.status == 403:  # a kind the caller may not list (a viewer and Secrets): not theirs to count
            return 0
        raise


@project_app.command("delete")
def delete(name: Annotated[str, typer.Argument(help="The project.")],
           force: Annotated[bool, typer.Option("--force", help="Delete what it holds too.")] = False) -> None:
    """Delete a project (cluster-admin); refused while it holds anything, unless --force deletes that too."""
    with make_client() as client:
        client.delete_wire("Project", name, force=force)
    echo(f"project/{name} deleted" + (" with everything it held" if force else ""))


# --- members ----------------------------------------------------------------------------------------------

@project_app.command("add-member")
def add_member(project: Annotated[str, typer.Argument(help="The project.")],
               subject: Annotated[str, typer.Argument(help="A user (or --kind group|serviceaccount).")],
               role: Annotated[str, typer.Option("--role", help="view, edit or admin.")] = "view",
               kind: Annotated[str, typer.Option("--kind", help="user, group or serviceaccount.")] = "user") -> None:
    """Give a user, group or service account a role in a project (replacing the one they had)."""
    if role not in ROLES:
        raise CliError(f"--role must be one of {', '.join(ROLES)}, not {role!r}")
    if kind not in SUBJECT_KINDS:
        raise CliError(f"--kind must be one of {', '.join(SUBJECT_KINDS)}, not {kind!r}")
    member = {"kind": SUBJECT_KINDS[kind], "name": subject, "role": role}
    _change_members(project, member["kind"], subject, member)
    echo(f"{kind} {subject} is now {role} in project {project}")


@project_app.command("remove-member")
def remove_member(project: Annotated[str, typer.Argument()], subject: Annotated[str, typer.Argument()],
                  kind: Annotated[str, typer.Option("--kind", help="user, group or serviceaccount.")] = "user") -> None:
    """Take a member's role in a project away."""
    if kind not in SUBJECT_KINDS:
        raise CliError(f"--kind must be one of {', '.join(SUBJECT_KINDS)}, not {kind!r}")
    _change_members(project, SUBJECT_KINDS[kind], subject, None)
    echo(f"{kind} {subject} removed from project {project}")


def _change_members(project: str, kind: str, subject: str, member: dict[str, Any] | None) -> None:
    from shipyard.client import ShipyardError
    from shipyard.compiler.project import member_bindings
    from shipyard.resources import Project

    with make_client() as client:
        wire = _applicable(_read(client, project))
        before = Project.model_validate(wire)
        members = [m for m in wire["spec"].get("members") or []
                   if (m.get("kind", "User"), m.get("name")) != (kind, subject)]
        if member is None and len(members) == len(wire["spec"].get("members") or []):
            raise CliError(f"{kind.lower()} {subject} is not a member of project {project}")
        wire["spec"]["members"] = members + ([member] if member else [])
        try:
            typed = Project.model_validate(wire)
        except ValueError as exc:
            raise CliError(f"member {subject!r}: {str(exc).splitlines()[-1].strip()}") from None
        client.apply([(f"project {project}", 1, wire)])
        # The controller keeps the bindings equal to the members; writing this one now means the member can
        # work as soon as this returns (the API checks that the caller may grant the role).
        binding = next((b for b in member_bindings(typed) if b["subjects"][0]["kind"] == kind
                        and b["subjects"][0]["name"] == subject), None)
        if binding is not None:
            client.put_rbac(binding)
        else:
            # Named as the spec before had it (two members whose names clash get hashed names).
            old = next(b for b in member_bindings(before) if b["subjects"][0]["kind"] == kind
                       and b["subjects"][0]["name"] == subject)
            try:
                client.delete_rbac("RoleBinding", old["metadata"]["name"], project)
            except ShipyardError as exc:
                if getattr(exc, "status", None) != 404:
                    raise


@project_app.command("members")
def members(project: Annotated[str, typer.Argument()]) -> None:
    """Everyone bound to a role in the project, by any RoleBinding."""
    with make_client() as client:
        bindings = client.list_rbac("RoleBinding", project)
    rows = [["SUBJECT", "KIND", "ROLE", "BINDING"]]
    for b in bindings:
        for s in b.get("subjects") or []:
            rows.append([s.get("name", ""), s.get("kind", ""), b.get("roleRef", {}).get("name", ""),
                         b["metadata"]["name"]])
    for line in printers.format_rows(rows):
        echo(line)


# --- the current project ------------------------------------------------------------------------------------

@project_app.command("use")
def use(project: Annotated[str, typer.Argument(help="The project later commands work in by default.")]) -> None:
    """Work in this project from now on (as kubectl's namespace of the current context); -p overrides it."""
    common.use_project(_checked_name(project))
    echo(f"Now working in project {project}")


@project_app.command("current")
def current() -> None:
    """The project commands work in when -p is not given."""
    echo(common.current_project())
