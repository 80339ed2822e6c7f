"""Per-project API keys for the gateway: create (the token is shown once, in this response only), list, revoke.

Managing them is a project right (`apikeys`; role edit). The store keeps the key's sha256 and a hint;
nothing here logs a token. A key records who created it (the authenticated caller) and may carry
restrictions the gateway enforces: an expiry, the Endpoints/Apps it may reach, a request rate.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from shipyard.resources.base import check_dns1123_label
from shipyard.store import ApiKey, ApiKeyStore
from shipyard.store.protocol import RateLimit, default_burst

from shipyard.tokens import HINT_CHARS, hash_token, new_api_key

from ..authz import allow

PREFIX = "/api/v1/projects/{project}/apikeys"
MAX_KEY_DAYS = 366  # as for user tokens: a credential that outlives a year should be a deliberate new one
MAX_ENDPOINTS = 64
MAX_RATE = 100_000.0  # requests per second: beyond this a limit limits nothing a gateway could serve
MAX_BURST = 1_000_000

router = APIRouter()


class RateLimitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    requestsPerSecond: float = Field(gt=0, le=MAX_RATE, allow_inf_nan=False)
    burst: int | None = Field(None, ge=1, le=MAX_BURST)


class CreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=63)
    expiresInDays: float | None = Field(None, gt=0, le=MAX_KEY_DAYS, allow_inf_nan=False)
    endpoints: list[str] = Field(default_factory=list, max_length=MAX_ENDPOINTS)
    rateLimit: RateLimitRequest | None = None


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


def _status(key: ApiKey, now: datetime) -> str:
    return "revoked" if key.revoked_at else "expired" if key.expired(now) else "active"


def _wire(key: ApiKey, now: datetime) -> dict[str, Any]:
    rate = key.rate_limit
    return {"project": key.project, "name": key.name, "hint": key.hint + "…",
            "createdAt": key.created_at.isoformat(), "createdBy": key.created_by,
            "expiresAt": key.expires_at.isoformat() if key.expires_at else None,
            "endpoints": list(key.endpoints),
            "rateLimit": {"requestsPerSecond": rate.requests_per_second, "burst": rate.burst} if rate else None,
            "revokedAt": key.revoked_at.isoformat() if key.revoked_at else None,
            "status": _status(key, now)}


def _caller(request: Request) -> str:
    user = getattr(request.state, "user", None)
    return str(user.name) if user is not None and getattr(user, "name", "") else "unknown"


@router.post(PREFIX, status_code=201, dependencies=[Depends(allow("create", "apikeys"))])
def create(project: str, body: CreateRequest, request: Request) -> dict[str, Any]:
    _checked(project, "project")
    _checked(body.name, "key name")
    endpoints = tuple(dict.fromkeys(_checked(e, "endpoints entry") for e in body.endpoints))  # order kept, once
    rate = None
    if body.rateLimit is not None:
        per_second = body.rateLimit.requestsPerSecond
        rate = RateLimit(per_second, body.rateLimit.burst or default_burst(per_second))
    now = datetime.now(timezone.utc)
    expires_at = now + timedelta(days=body.expiresInDays) if body.expiresInDays else None
    token = new_api_key()
    key = _keys(request).add_api_key(project, body.name, hash_token(token), token[:HINT_CHARS],
                                     created_by=_caller(request), expires_at=expires_at, endpoints=endpoints,
                                     rate_limit=rate)
    return {**_wire(key, now), "token": token}


@router.get(PREFIX, dependencies=[Depends(allow("list", "apikeys"))])
def list_keys(project: str, request: Request) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    return {"items": [_wire(k, now) for k in _keys(request).list_api_keys(_checked(project, "project"))]}


@router.delete(PREFIX + "/{name}", dependencies=[Depends(allow("delete", "apikeys"))])
def revoke(project: str, name: str, request: Request) -> dict[str, Any]:
    key = _keys(request).revoke_api_key(_checked(project, "project"), _checked(name, "key name"))
    return _wire(key, datetime.now(timezone.utc))
