"""Project routes: the one cluster-scoped kind (`/apis/shipyard.dev/v1alpha1/projects[/NAME]`).

Projects are applied like every kind (routers/resources.py `apply`); these routes read and delete them.

Who may see a project: as OpenShift does for its projects, a Project is authorized in its own namespace
(`get projects` in project P), so a project's admin — bound in P — reads and updates it, while creating and
deleting one (and listing all of them, or watching) is a cluster-scoped right (cluster-admin). A list by
someone without that right is not refused but narrowed to the projects they may get: `shipyard project get`
shows everyone their own.

Deleting a project deletes what it holds; while it holds anything the API refuses (409) unless `force=true`,
as a guard against deleting a team's work by a typo. `default` cannot be deleted (Kubernetes' namespace of
that name cannot either).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from shipyard.rbac import Attributes
from shipyard.resources import API_VERSION
from shipyard.resources.project import DEFAULT_PROJECT, Project
from shipyard.store import Store
from shipyard.store.projects import held_objects

from ..authz import GROUP, allow, check
from . import resources

PREFIX = f"/apis/{API_VERSION}/projects"
router = APIRouter()


def _store(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def _may(request: Request, verb: str, namespace: str, name: str = "") -> bool:
    attrs = Attributes(user=request.state.user, verb=verb, namespace=namespace, api_group=GROUP,
                       resource="projects", name=name)
    return bool(request.app.state.rbac.authorize(attrs).allowed)


def _get(store: Store, name: str) -> Project:
    found = store.get("Project", "", name)
    if not isinstance(found, Project):
        raise HTTPException(404, f"project/{name} not found")
    return found


@router.get(PREFIX, response_model=None, dependencies=[Depends(allow(None, "projects", cluster_scoped=True))])
async def list_projects(request: Request, q: resources.ListQuery = Depends(resources.list_query)) -> Response:
    verb = "watch" if q.watch else "list"
    if q.watch or _may(request, verb, ""):
        check(request, verb, "projects")  # noted for the audit log; a watch needs the right outright
        return await resources.list_kind(request, Project, None, q)
    labels = resources.parse_label_query(q.label_selector)
    store = _store(request)
    every = await run_in_threadpool(store.list, "Project", None, labels)
    mine = [p.to_wire() for p in every if _may(request, "get", p.metadata.name, p.metadata.name)]
    return JSONResponse({"apiVersion": API_VERSION, "kind": "ProjectList",
                         "metadata": {"resourceVersion": str(store.current_version())}, "items": mine})


# The path parameter is `{project}`: the authorizer takes a route's project from it, so a Project is
# authorized in its own namespace (see above).
@router.get(PREFIX + "/{project}", dependencies=[Depends(allow("get", "projects"))])
def get_project(request: Request, project: str) -> JSONResponse:
    return JSONResponse(_get(_store(request), project).to_wire())


@router.get(PREFIX + "/{project}/events", dependencies=[Depends(allow("list", "events"))])
def project_events(request: Request, project: str) -> JSONResponse:
    store = _store(request)
    _get(store, project)
    items = [{"type": e.type, "reason": e.reason, "message": e.message, "count": e.count,
              "firstTimestamp": e.first_timestamp.isoformat(), "lastTimestamp": e.last_timestamp.isoformat()}
             for e in store.list_events("Project", "", project)]
    return JSONResponse({"items": items})


@router.delete(PREFIX + "/{name}", dependencies=[Depends(allow("delete", "projects", cluster_scoped=True))])
def delete_project(request: Request, name: str, force: bool = False) -> JSONResponse:
    if name == DEFAULT_PROJECT:
        raise HTTPException(409, f"project {DEFAULT_PROJECT} cannot be deleted: it is where work goes when no "
                                 "project is named")
    store = _store(request)
    project = _get(store, name)
    held = held_objects(store, name)
    if held and not force:
        what = ", ".join(f"{n} {kind}{'s' if n != 1 else ''}" for kind, n in held.items())
        raise HTTPException(409, f"project {name} still holds {what}: delete them first, or delete the project "
                                 "with --force to delete them too")
    # The controller's finalizer deletes what is left too; deleting here as well means nothing is orphaned
    # when the project is deleted before the controller ever saw it.
    for kind in held:
        for obj in store.list(kind, name):
            store.delete(kind, name, obj.metadata.name)
    deleted: Any = store.delete("Project", "", name) or project
    return JSONResponse(deleted.to_wire())
