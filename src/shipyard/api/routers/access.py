"""Identities and what they may do: users, per-project service accounts, their named tokens, `whoami`, access
reviews (what `shipyard auth can-i` asks), and the audit log.

Tokens are shown once, in the answer that creates them; only a keyed hash is kept (store/identities.py).
A user may always list, create and revoke their own tokens (that is how `shipyard login` gets one);
anybody else's need the RBAC permission (`users/tokens`, `serviceaccounts/token`). Access reviews use the
Kubernetes shapes (`SelfSubjectAccessReview`, `SubjectAccessReview` of `authorization.k8s.io/v1`), so the
same client code asks a cluster's API server.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from shipyard.rbac import Attributes, UserInfo, service_account_user

from ..authz import allow, check, identify

router = APIRouter()
AUTHZ_GROUP = "authorization.k8s.io"
USERS = "/api/v1/users"
SERVICE_ACCOUNTS = "/api/v1/namespaces/{namespace}/serviceaccounts"
MAX_TOKEN_DAYS = 366


class UserRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=253)
    email: str | None = Field(None, max_length=254)
    groups: list[str] = Field(default_factory=list, max_length=64)


class NameRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=63)


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=63)
    expiresInDays: float | None = Field(None, gt=0, le=MAX_TOKEN_DAYS)


def _identities(request: Request) -> Any:
    found = getattr(request.app.state, "identities", None)
    if found is None:
        raise HTTPException(404, "this control plane keeps no users (on a cluster, Kubernetes authenticates them)")
    return found


def _wire(record: Any) -> dict[str, Any]:
    out = {}
    for key, value in record._asdict().items() if hasattr(record, "_asdict") else vars(record).items():
        camel = key.split("_")[0] + "".join(p.title() for p in key.split("_")[1:])
        out[camel] = value.isoformat() if isinstance(value, datetime) else list(value) if isinstance(value, tuple) \
            else value
    return out


def _token_answer(token: str, record: Any) -> dict[str, Any]:
    return {**_wire(record), "token": token}


def _expiry(body: TokenRequest) -> timedelta | None:
    return timedelta(days=body.expiresInDays) if body.expiresInDays else None


def _is_self(request: Request, user: str) -> bool:
    return bool(request.state.user.name == user)


# --- users ------------------------------------------------------------------------------------------------

@router.get(USERS, dependencies=[Depends(allow("list", "users", cluster_scoped=True))])
def list_users(request: Request) -> dict[str, Any]:
    return {"items": [_wire(u) for u in _identities(request).list_users()]}


@router.post(USERS, status_code=201, dependencies=[Depends(allow("create", "users", cluster_scoped=True))])
def create_user(request: Request, body: UserRequest) -> dict[str, Any]:
    try:
        user = _identities(request).create_user(body.name, body.email, tuple(body.groups))
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return _wire(user)


@router.get(USERS + "/{name}", dependencies=[Depends(allow("get", "users", cluster_scoped=True))])
def get_user(request: Request, name: str) -> dict[str, Any]:
    user = _identities(request).get_user(name)
    if user is None:
        raise HTTPException(404, f"user {name} not found")
    return _wire(user)


@router.delete(USERS + "/{name}", dependencies=[Depends(allow("delete", "users", cluster_scoped=True))])
def delete_user(request: Request, name: str) -> dict[str, Any]:
    return _wire(_identities(request).delete_user(name))


def _may_manage_tokens_of(request: Request, user: str, verb: str) -> None:
    if not _is_self(request, user):
        check(request, verb, "users", name=user, subresource="tokens")


@router.get(USERS + "/{name}/tokens", dependencies=[Depends(allow(None))])
def list_user_tokens(request: Request, name: str) -> dict[str, Any]:
    _may_manage_tokens_of(request, name, "list")
    return {"items": [_wire(t) for t in _identities(request).list_tokens("User", name, None)]}


@router.post(USERS + "/{name}/tokens", status_code=201, dependencies=[Depends(allow(None))])
def create_user_token(request: Request, name: str, body: TokenRequest) -> dict[str, Any]:
    _may_manage_tokens_of(request, name, "create")
    if _identities(request).get_user(name) is None:
        raise HTTPException(404, f"user {name} not found")
    token, record = _identities(request).create_token("User", name, None, body.name, _expiry(body))
    return _token_answer(token, record)


@router.delete(USERS + "/{name}/tokens/{token}", dependencies=[Depends(allow(None))])
def revoke_user_token(request: Request, name: str, token: str) -> dict[str, Any]:
    _may_manage_tokens_of(request, name, "delete")
    return _wire(_identities(request).revoke_token("User", name, None, token))


# --- service accounts -------------------------------------------------------------------------------------

@router.get(SERVICE_ACCOUNTS, dependencies=[Depends(allow("list", "serviceaccounts"))])
def list_service_accounts(request: Request, namespace: str) -> dict[str, Any]:
    return {"items": [_wire(s) for s in _identities(request).list_service_accounts(namespace)]}


@router.post(SERVICE_ACCOUNTS, status_code=201, dependencies=[Depends(allow("create", "serviceaccounts"))])
def create_service_account(request: Request, namespace: str, body: NameRequest) -> dict[str, Any]:
    try:
        return _wire(_identities(request).create_service_account(namespace, body.name))
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


@router.delete(SERVICE_ACCOUNTS + "/{name}", dependencies=[Depends(allow("delete", "serviceaccounts"))])
def delete_service_account(request: Request, namespace: str, name: str) -> dict[str, Any]:
    return _wire(_identities(request).delete_service_account(namespace, name))


@router.get(SERVICE_ACCOUNTS + "/{name}/tokens",
            dependencies=[Depends(allow("list", "serviceaccounts", subresource="token"))])
def list_service_account_tokens(request: Request, namespace: str, name: str) -> dict[str, Any]:
    return {"items": [_wire(t) for t in _identities(request).list_tokens("ServiceAccount", name, namespace)]}


@router.post(SERVICE_ACCOUNTS + "/{name}/tokens", status_code=201,
             dependencies=[Depends(allow("create", "serviceaccounts", subresource="token"))])
def create_service_account_token(request: Request, namespace: str, name: str, body: TokenRequest) -> dict[str, Any]:
    if _identities(request).get_service_account(namespace, name) is None:
        raise HTTPException(404, f"serviceaccount {name} not found in project {namespace}")
    token, record = _identities(request).create_token("ServiceAccount", name, namespace, body.name, _expiry(body))
    return _token_answer(token, record)


@router.delete(SERVICE_ACCOUNTS + "/{name}/tokens/{token}",
               dependencies=[Depends(allow("delete", "serviceaccounts", subresource="token"))])
def revoke_service_account_token(request: Request, namespace: str, name: str, token: str) -> dict[str, Any]:
    return _wire(_identities(request).revoke_token("ServiceAccount", name, namespace, token))


# --- who am I, and may I ----------------------------------------------------------------------------------

@router.get("/api/v1/whoami", dependencies=[Depends(allow("create", "selfsubjectreviews",
                                                          group="authentication.k8s.io", cluster_scoped=True))])
def whoami(request: Request) -> dict[str, Any]:
    user: UserInfo = request.state.user
    return {"username": user.name, "groups": list(user.groups)}


def _review(request: Request, user: UserInfo, spec: dict[str, Any]) -> dict[str, Any]:
    resource = spec.get("resourceAttributes")
    non_resource = spec.get("nonResourceAttributes")
    if isinstance(resource, dict):
        attrs = Attributes(user=user, verb=str(resource.get("verb", "")), namespace=str(resource.get("namespace", "")),
                           api_group=str(resource.get("group", "shipyard.dev")),
                           resource=str(resource.get("resource", "")),
                           subresource=str(resource.get("subresource", "")), name=str(resource.get("name", "")))
    elif isinstance(non_resource, dict):
        attrs = Attributes(user=user, verb=str(non_resource.get("verb", "get")), path=str(non_resource.get("path", "")))
    else:
        raise HTTPException(422, "spec needs resourceAttributes or nonResourceAttributes")
    if not attrs.verb or not (attrs.resource or attrs.path):
        raise HTTPException(422, "spec.resourceAttributes needs a verb and a resource")
    decision = request.app.state.rbac.authorize(attrs)
    status = {"allowed": decision.allowed, "reason": decision.reason} if decision.allowed else \
        {"allowed": False, "denied": False, "reason": decision.reason}
    return {"apiVersion": f"{AUTHZ_GROUP}/v1", "kind": "SubjectAccessReview", "spec": spec, "status": status}


@router.post(f"/apis/{AUTHZ_GROUP}/v1/selfsubjectaccessreviews", status_code=201,
             dependencies=[Depends(allow("create", "selfsubjectaccessreviews", group=AUTHZ_GROUP,
                                         cluster_scoped=True))])
def self_review(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    answer = _review(request, request.state.user, body.get("spec") or {})
    return {**answer, "kind": "SelfSubjectAccessReview"}


@router.post(f"/apis/{AUTHZ_GROUP}/v1/subjectaccessreviews", status_code=201,
             dependencies=[Depends(allow("create", "subjectaccessreviews", group=AUTHZ_GROUP,
                                         cluster_scoped=True))])
def review(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    spec = body.get("spec") or {}
    user = str(spec.get("user") or "")
    if not user:
        raise HTTPException(422, "spec.user is required")
    if user.startswith("system:serviceaccount:") and user.count(":") == 3:
        subject = service_account_user(*user.split(":")[2:])
    else:
        subject = UserInfo(user, tuple(dict.fromkeys([*map(str, spec.get("groups") or []),
                                                      "system:authenticated"])))
    return _review(request, subject, spec)


# --- audit ------------------------------------------------------------------------------------------------

@router.get("/api/v1/audit", dependencies=[Depends(allow(None))])
def audit(request: Request, project: str | None = Query(None, max_length=63),
          user: str | None = Query(None, max_length=253), since_seconds: int | None = Query(
              None, alias="sinceSeconds", ge=1, le=366 * 86400),
          limit: int = Query(1000, ge=1, le=10000)) -> dict[str, Any]:
    # Reading a project's trail is a project right (admin); everything, a cluster one.
    check(request, "list", "auditevents", namespace=project or "")
    sink = getattr(request.app.state, "audit", None)
    if sink is None:
        raise HTTPException(404, "this control plane keeps no audit log here (on a cluster: the operator's log)")
    since = datetime.now(timezone.utc) - timedelta(seconds=since_seconds) if since_seconds else None
    return {"items": [_wire(r) for r in sink.query(namespace=project, user=user, since=since, limit=limit)]}


__all__ = ["router", "identify"]
