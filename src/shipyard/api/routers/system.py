"""Liveness and version: the only unauthenticated route is /healthz, which reveals nothing."""

from __future__ import annotations

from fastapi import APIRouter, Request

from shipyard.resources import API_VERSION

public = APIRouter()
router = APIRouter()


@public.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/version")
def version(request: Request) -> dict[str, str]:
    return {"version": request.app.state.version, "apiVersion": API_VERSION}
