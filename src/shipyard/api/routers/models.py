"""The model registry, read-only: every registered model version, from the tracker the daemon was given.

The API may not import controllers (where the Tracker protocol and its TrackingError live), so it sees the
registry as anything with `list_models()` returning model versions, and treats any failure of that call as
the registry being unavailable.
"""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import APIRouter, Depends, HTTPException, Request

from ..authz import allow

router = APIRouter()


class ModelRegistry(Protocol):
    def list_models(self) -> list[Any]:
        """Objects with name, version, aliases, volume, path, run_id and project (controllers.tracking.ModelVersion)."""


def _wire(mv: Any) -> dict[str, Any]:
    return {"name": mv.name, "version": mv.version, "aliases": list(mv.aliases), "project": mv.project,
            "volume": mv.volume, "path": mv.path, "runId": mv.run_id}


@router.get("/api/v1/models", dependencies=[Depends(allow("list", "models", cluster_scoped=True))])
def list_models(request: Request) -> dict[str, Any]:
    registry: ModelRegistry | None = request.app.state.models
    if registry is None:
        raise HTTPException(404, "this control plane runs without experiment tracking, so it has no model "
                                 "registry (it needs shipyard[tracking] installed and SHIPYARD_TRACKING not off; "
                                 "then restart it: `shipyard down && shipyard up`)")
    try:
        versions = registry.list_models()
    except Exception as exc:  # noqa: BLE001 - the tracker's TrackingError, which this layer may not import
        raise HTTPException(503, f"the model registry is unavailable: {exc}") from None
    return {"items": [_wire(mv) for mv in sorted(versions, key=lambda mv: (mv.name, -mv.version))]}
