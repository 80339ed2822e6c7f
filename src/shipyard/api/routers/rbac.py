"""Roles and bindings at Kubernetes' own paths (`/apis/rbac.authorization.k8s.io/v1/...`), so the objects a user
writes here are the objects a cluster holds natively, and `kubectl`-shaped tools read them unchanged.

Escalation is prevented as Kubernetes does: writing a Role or ClusterRole needs every permission it grants
(or the `escalate` verb on it), and writing a binding needs every permission of the role it binds (or the
`bind` verb on that role), in the binding's project. So a project admin can give members `edit` or `view`
in their project but can make nobody a cluster-admin.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request

from shipyard.rbac import Attributes
from shipyard.store.rbac import KINDS, NAMESPACED, RBAC_GROUP

from ..authz import allow

router = APIRouter()
PREFIX = f"/apis/{RBAC_GROUP}/v1"
NAMESPACED_PATH = PREFIX + "/namespaces/{namespace}/{plural}"
CLUSTER_PATH = PREFIX + "/{plural}"


def _kind(plural: str, namespaced: bool) -> str:
    kind = KINDS.get(plural)
    if kind is None or (kind in NAMESPACED) != namespaced:
        where = "per project" if namespaced else "cluster-wide"
        known = sorted(p for p, k in KINDS.items() if (k in NAMESPACED) == namespaced)
        raise HTTPException(404, f"no {plural!r} {where} (known: {', '.join(known)})")
    return kind


def _list(kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": f"{RBAC_GROUP}/v1", "kind": f"{kind}List", "items": items}


def _rules_of_role(request: Request, role_kind: str, name: str, namespace: str) -> list[dict[str, Any]]:
    role = request.app.state.rbac.get(role_kind, namespace, name)
    return list((role or {}).get("rules") or [])


def _holds(request: Request, rules: list[dict[str, Any]], namespace: str) -> str | None:
    """The first permission among `rules` that the caller lacks in `namespace` (None: holds them all).
    A wildcard is only covered by the same wildcard, so nobody widens a grant beyond their own."""
    rbac, user = request.app.state.rbac, request.state.user
    for rule in rules:
        for verb in rule.get("verbs") or []:
            for url in rule.get("nonResourceURLs") or []:
                if not rbac.authorize(Attributes(user=user, verb=verb, path=url)).allowed:
                    return f"{verb} {url}"
            for group in rule.get("apiGroups") or []:
                for resource in rule.get("resources") or []:
                    base, _, sub = resource.partition("/")
                    for name in rule.get("resourceNames") or [""]:
                        attrs = Attributes(user=user, verb=verb, namespace=namespace, api_group=group,
                                           resource=base, subresource=sub, name=name)
                        if not rbac.authorize(attrs).allowed:
                            return f"{verb} {resource}" + (f" in API group {group!r}" if group else "")
    return None


def _no_escalation(request: Request, obj: dict[str, Any], kind: str, namespace: str) -> None:
    rbac, user = request.app.state.rbac, request.state.user
    name = (obj.get("metadata") or {}).get("name", "")
    if kind in ("Role", "ClusterRole"):
        plural = "roles" if kind == "Role" else "clusterroles"
        if rbac.authorize(Attributes(user=user, verb="escalate", namespace=namespace, api_group=RBAC_GROUP,
                                        resource=plural, name=name)).allowed:
            return
        missing = _holds(request, list(obj.get("rules") or []), namespace)
    else:
        ref = obj.get("roleRef") or {}
        plural = "roles" if ref.get("kind") == "Role" else "clusterroles"
        if rbac.authorize(Attributes(user=user, verb="bind", namespace=namespace, api_group=RBAC_GROUP,
                                        resource=plural, name=ref.get("name", ""))).allowed:
            return
        missing = _holds(request, _rules_of_role(request, ref.get("kind", ""), ref.get("name", ""), namespace),
                         namespace)
    if missing is not None:
        raise HTTPException(403, f"user {user.name} cannot grant {missing}"
                                 f"{' in project ' + namespace if namespace else ''}: it would exceed their own "
                                 f"permissions (escalation)")


def _write(request: Request, plural: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    kind = _kind(plural, bool(namespace))
    if not isinstance(obj, dict) or obj.get("kind", kind) != kind:
        raise HTTPException(422, f"the body must be a {kind}")
    obj = {**obj, "kind": kind, "metadata": {**(obj.get("metadata") or {})}}
    if namespace:
        if obj["metadata"].get("namespace", namespace) != namespace:
            raise HTTPException(422, f"metadata.namespace {obj['metadata']['namespace']!r} is not the path's "
                                     f"project {namespace!r}")
        obj["metadata"]["namespace"] = namespace
    _no_escalation(request, obj, kind, namespace)
    stored, _ = request.app.state.rbac.put(obj)
    return stored


@router.get(NAMESPACED_PATH, dependencies=[Depends(allow("list", group=RBAC_GROUP))])
def list_namespaced(request: Request, namespace: str, plural: str) -> dict[str, Any]:
    kind = _kind(plural, True)
    return _list(kind, request.app.state.rbac.list(kind, namespace))


@router.get(CLUSTER_PATH, dependencies=[Depends(allow("list", group=RBAC_GROUP, cluster_scoped=True))])
def list_cluster(request: Request, plural: str) -> dict[str, Any]:
    kind = _kind(plural, False)
    return _list(kind, request.app.state.rbac.list(kind))


@router.post(NAMESPACED_PATH, status_code=201, dependencies=[Depends(allow("create", group=RBAC_GROUP))])
def create_namespaced(request: Request, namespace: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
    return _write(request, plural, namespace, body)


@router.post(CLUSTER_PATH, status_code=201,
             dependencies=[Depends(allow("create", group=RBAC_GROUP, cluster_scoped=True))])
def create_cluster(request: Request, plural: str, body: dict[str, Any]) -> dict[str, Any]:
    return _write(request, plural, "", body)


@router.get(NAMESPACED_PATH + "/{name}", dependencies=[Depends(allow("get", group=RBAC_GROUP))])
def get_namespaced(request: Request, namespace: str, plural: str, name: str) -> dict[str, Any]:
    kind = _kind(plural, True)
    found = request.app.state.rbac.get(kind, namespace, name)
    if found is None:
        raise HTTPException(404, f"{kind.lower()}/{name} not found in project {namespace}")
    return found  # type: ignore[no-any-return]


@router.get(CLUSTER_PATH + "/{name}",
            dependencies=[Depends(allow("get", group=RBAC_GROUP, cluster_scoped=True))])
def get_cluster(request: Request, plural: str, name: str) -> dict[str, Any]:
    kind = _kind(plural, False)
    found = request.app.state.rbac.get(kind, "", name)
    if found is None:
        raise HTTPException(404, f"{kind.lower()}/{name} not found")
    return found  # type: ignore[no-any-return]


@router.delete(NAMESPACED_PATH + "/{name}", dependencies=[Depends(allow("delete", group=RBAC_GROUP))])
def delete_namespaced(request: Request, namespace: str, plural: str, name: str) -> dict[str, Any]:
    return request.app.state.rbac.delete(_kind(plural, True), namespace, name)  # type: ignore[no-any-return]


@router.delete(CLUSTER_PATH + "/{name}",
               dependencies=[Depends(allow("delete", group=RBAC_GROUP, cluster_scoped=True))])
def delete_cluster(request: Request, plural: str, name: str) -> dict[str, Any]:
    return request.app.state.rbac.delete(_kind(plural, False), "", name)  # type: ignore[no-any-return]
