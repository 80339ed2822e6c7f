"""Liveness and version: the only unauthenticated route is /healthz, which reveals nothing (PUBLIC_ROUTES)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from shipyard.resources import API_VERSION

from ..authz import allow

public = APIRouter()
router = APIRouter()


@public.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/version", dependencies=[Depends(allow("get", path="/version"))])
def version(request: Request) -> dict[str, str]:
    return {"version": request.app.state.version, "apiVersion": API_VERSION}
