"""Per-project API keys for the gateway: create (the token is shown once, in this response only), list, revoke.

Managing them is a project right (`apikeys`; role edit). The store keeps the key's
sha256 and a hint; nothing here logs a token.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from shipyard.resources.base import check_dns1123_label
from shipyard.store import ApiKey, ApiKeyStore

from shipyard.tokens import HINT_CHARS, hash_token, new_api_key

from ..authz import allow

PREFIX = "/api/v1/projects/{project}/apikeys"

router = APIRouter()


class CreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=63)


def _keys(request: Request) -> ApiKeyStore:
    keys = request.app.state.api_keys
    if keys is None:
        raise HTTPException(404, "this control plane's store keeps no API keys")
    return keys  # type: ignore[no-any-return]


def _checked(value: str, what: str) -> str:
    try:
        return check_dns1123_label(value, what)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


def _wire(key: ApiKey) -> dict[str, Any]:
    return {"project": key.project, "name": key.name, "hint": key.hint + "…",
            "createdAt": key.created_at.isoformat(),
            "revokedAt": key.revoked_at.isoformat() if key.revoked_at else None,
            "status": "revoked" if key.revoked_at else "active"}


@router.post(PREFIX, status_code=201, dependencies=[Depends(allow("create", "apikeys"))])
def create(project: str, body: CreateRequest, request: Request) -> dict[str, Any]:
    _checked(project, "project")
    _checked(body.name, "key name")
    token = new_api_key()
    key = _keys(request).add_api_key(project, body.name, hash_token(token), token[:HINT_CHARS])
    return {**_wire(key), "token": token}


@router.get(PREFIX, dependencies=[Depends(allow("list", "apikeys"))])
def list_keys(project: str, request: Request) -> dict[str, Any]:
    return {"items": [_wire(k) for k in _keys(request).list_api_keys(_checked(project, "project"))]}


@router.delete(PREFIX + "/{name}", dependencies=[Depends(allow("delete", "apikeys"))])
def revoke(project: str, name: str, request: Request) -> dict[str, Any]:
    return _wire(_keys(request).revoke_api_key(_checked(project, "project"), _checked(name, "key name")))
