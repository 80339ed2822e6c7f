"""`GET …/workspaces/NAME/access`: the URL and token that open a Workspace (`shipyard open`).

The token is a secret, so it is never part of the Workspace (not in `get -o yaml`, not in status); only the
caller allowed `get workspaces/open` (role edit: a viewer cannot open a member's workspace) reads it. Where it lives (a Secret the controller made) is the composition root's
business: a `WorkspaceTokens` answers.
"""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from shipyard.resources import API_VERSION, Workspace

from ..authz import allow

router = APIRouter()


class WorkspaceTokens(Protocol):
    def token(self, workspace: Workspace) -> str | None:
        """The workspace's access token, None until its controller has made one."""


@router.get(f"/apis/{API_VERSION}/namespaces/{{namespace}}/workspaces/{{name}}/access",
            dependencies=[Depends(allow("get", "workspaces", subresource="open"))])
async def access(request: Request, namespace: str, name: str) -> dict[str, Any]:
    store = request.app.state.store
    tokens: WorkspaceTokens | None = request.app.state.workspace_tokens
    workspace = await run_in_threadpool(store.get, "Workspace", namespace, name)
    if workspace is None:
        raise HTTPException(404, f"workspace {name!r} not found in project {namespace!r}")
    if tokens is None:
        raise HTTPException(501, "this control plane serves no workspaces")
    token = await run_in_threadpool(tokens.token, workspace)
    if token is None or workspace.status.url is None:
        raise HTTPException(409, f"workspace {name!r} is not set up yet (no token or URL); try again shortly")
    return {"url": workspace.status.url, "token": token, "ide": workspace.spec.ide,
            "phase": workspace.status.phase, "suspendReason": workspace.status.suspend_reason}
