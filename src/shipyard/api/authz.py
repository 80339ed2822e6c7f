"""Who is calling, and may they: authentication and Kubernetes-RBAC authorization on every route.

Every route declares what it does as Kubernetes request attributes (`allow("delete")`: verb; the resource is
the route's `{plural}` unless given; the project is its `{namespace}`/`{project}`, none for cluster-scoped
routes), and a test fails for a route without a declaration. The dependency then

1. authenticates the bearer token (or X-Shipyard-Token through a cluster's service proxy): the bootstrap
   admin token is user `admin` in group `system:masters` (bound to `cluster-admin`, as Kubernetes binds that
   group); any other token is looked up in the identities store (users and service accounts, hashed tokens,
   expiry, revocation at once); nothing else gets in (401);
2. authorizes with the app's RBAC authority (`state.rbac.authorize`): locally the pure RBAC authorizer
   (`shipyard.rbac`) over the stored Roles and bindings plus the built-in ones; on a cluster Kubernetes
   itself, by SubjectAccessReview (shipyard/cluster/authority.py). A refusal is a 403 that says what is missing ("user alice cannot delete trainingjobs in
   project vision: needs role edit");
3. leaves the decision in the request's state for the audit middleware (`api/audit.py`), which records
   every mutating request and every refusal once the response status is known.

Routes whose permission depends on the body (apply: each object's kind and project) declare `allow(None)` and
call `check()` per object. Nothing here logs or echoes a token.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any, Callable

from fastapi import HTTPException, Request
from starlette.requests import HTTPConnection

from shipyard.rbac import Attributes, UserInfo
from shipyard.tokens import hash_token

UNAUTHORIZED = "missing or invalid API token"
PROXY_TOKEN_HEADER = "x-shipyard-token"
GROUP = "shipyard.dev"
ADMIN = UserInfo("admin", ("system:masters", "system:authenticated"))
MUTATING = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclass(frozen=True)
class Permission:
    """What a route does, as Kubernetes request attributes; `verb` None: the handler checks per object."""
    verb: str | None
    resource: str | None = None  # None: the route's {plural}
    subresource: str = ""
    group: str = GROUP
    cluster_scoped: bool = False
    path: str = ""  # a non-resource request (/version)


def bearer_token(conn: HTTPConnection) -> str:
    token = conn.headers.get(PROXY_TOKEN_HEADER, "").strip()
    if token:
        return token
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def authenticate(conn: HTTPConnection) -> tuple[UserInfo, str] | None:
    """(user, token name) for a valid token, None otherwise."""
    token = bearer_token(conn)
    if not token:
        return None
    state = conn.app.state
    if hmac.compare_digest(hash_token(token).encode(), state.admin_token_hash.encode()):
        return ADMIN, "bootstrap-admin"
    identities = getattr(state, "identities", None)
    found = identities.authenticate(token) if identities is not None else None
    if found is None:
        return None
    groups = tuple(dict.fromkeys((*found.groups, "system:authenticated")))
    return UserInfo(found.name, groups), found.token_name


def _scope_of(conn: HTTPConnection, permission: Permission) -> tuple[str, str, str]:
    """(namespace, resource, name) of a request from its path parameters."""
    params = conn.path_params
    namespace = "" if permission.cluster_scoped else params.get("namespace") or params.get("project") or ""
    resource = permission.resource or params.get("plural", "")
    return namespace, resource, params.get("name", "")


def check(conn: HTTPConnection, verb: str, resource: str, namespace: str = "", name: str = "",
          subresource: str = "", group: str = GROUP) -> None:
    """403 unless the authenticated caller may do this (the dependency authenticated it first)."""
    user: UserInfo = conn.state.user
    attrs = Attributes(user=user, verb=verb, namespace=namespace, api_group=group, resource=resource,
                       subresource=subresource, name=name)
    decision = conn.app.state.rbac.authorize(attrs)
    _note(conn, verb=verb, resource=resource, subresource=subresource, namespace=namespace, name=name,
          reason=decision.reason)
    if not decision.allowed:
        raise HTTPException(403, decision.reason)


def check_path(conn: HTTPConnection, path: str) -> None:
    user: UserInfo = conn.state.user
    decision = conn.app.state.rbac.authorize(Attributes(user=user, verb="get", path=path))
    _note(conn, verb="get", resource="", subresource="", namespace="", name=path, reason=decision.reason)
    if not decision.allowed:
        raise HTTPException(403, decision.reason)


def _note(conn: HTTPConnection, **fields: Any) -> None:
    """What the audit middleware records for this request (the last check wins: apply checks several)."""
    conn.scope.setdefault("state", {}).setdefault("audit", {}).update(fields)


def identify(conn: HTTPConnection) -> UserInfo:
    """Authenticate (401 if no valid token) and remember who called, for checks and the audit log."""
    found = authenticate(conn)
    _note(conn, user=found[0].name if found else "", groups=found[0].groups if found else (),
          token_name=found[1] if found else "")
    if found is None:
        raise HTTPException(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
    conn.state.user = found[0]
    return found[0]


def allow(verb: str | None, resource: str | None = None, *, subresource: str = "", group: str = GROUP,
          cluster_scoped: bool = False, path: str = "") -> Callable[[Request], None]:
    """The dependency a route declares: authenticate, then authorize this verb on the route's resource."""
    permission = Permission(verb, resource, subresource, group, cluster_scoped, path)

    def dependency(request: Request) -> None:
        namespace, resource_, name = _scope_of(request, permission)
        # Noted before authenticating, so that a refused token is audited with what it tried.
        _note(request, verb=permission.verb or "", resource=resource_, subresource=permission.subresource,
              namespace=namespace, name=name or permission.path)
        identify(request)
        if permission.path:
            check_path(request, permission.path)
        elif permission.verb is not None:
            verb = permission.verb
            if verb == "list" and request.query_params.get("watch", "").lower() in ("true", "1"):
                verb = "watch"  # one route lists and watches, as Kubernetes'; RBAC tells the two apart
            check(request, verb, resource_, namespace, name, permission.subresource, permission.group)

    dependency.permission = permission  # type: ignore[attr-defined] # read by the every-route test
    return dependency


def declares(permission: Permission) -> Callable[[Any], Any]:
    """For a route that checks by hand (a WebSocket): record what it checks, for the every-route test."""
    def mark(endpoint: Any) -> Any:
        endpoint.permission = permission
        return endpoint
    return mark


def permission_of(route: Any) -> Permission | None:
    """The permission a route declared through `allow` (None if it declared none)."""
    for dep in getattr(getattr(route, "dependant", None), "dependencies", []):
        found = getattr(dep.call, "permission", None)
        if isinstance(found, Permission):
            return found
    return getattr(getattr(route, "endpoint", None), "permission", None)
