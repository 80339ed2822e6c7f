"""The app factory: wires the store, the log source and the admin token hash into thin routers.

Security posture: every route except /healthz authenticates the caller and authorizes the request with
Kubernetes' RBAC semantics (api/authz.py), and mutations and refusals are audited (api/audit.py); the interactive docs
and the OpenAPI document are off because they would be unauthenticated routes. Request bodies are capped
before they are buffered. Access logging (uvicorn's) records the request line only, never headers, so the
Authorization header never reaches a log.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shipyard.resources.documents import MAX_TEXT_BYTES
from shipyard.store import Store
from shipyard.store.rbac import BuiltinRbac

from . import errors
from .audit import AuditMiddleware
from .logs import LogSource
from .routers import access, apikeys, portforward, projects, rbac, resources, system, workspaces
from .routers import models as registry

MAX_BODY_BYTES = MAX_TEXT_BYTES  # as much as the CLI will read from files: 16 MiB
BOOKMARK_SECONDS = 15.0


class BodyLimitMiddleware:
    """413 for bodies over the limit, by Content-Length up front and by counting as the body arrives."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await errors.error_response(400, "invalid Content-Length header")(scope, receive, send)
                return
            if int(declared) > self.limit:
                await errors.error_response(413, f"request body exceeds {self.limit >> 20} MiB")(
                    scope, receive, send)
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise errors.BodyTooLarge(self.limit)
            return message

        await self.app(scope, counting_receive, send)


def create_app(store: Store, logs: LogSource | None, admin_token_hash: str, version: str,
               port_forward: portforward.PortForwarder | None = None,
               models: registry.ModelRegistry | None = None,
               workspace_tokens: workspaces.WorkspaceTokens | None = None,
               audit_log_json: bool = False) -> FastAPI:
    """`models`: the model registry behind GET /api/v1/models (the daemon's tracker); None when tracking is off."""
    app = FastAPI(title="Shipyard", version=version, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store
    # Keys are a capability of the store (SQLiteStore has them; a store without them serves no key routes).
    app.state.api_keys = getattr(store, "api_keys", None)
    app.state.logs = logs
    app.state.port_forward = port_forward
    app.state.models = models
    app.state.workspace_tokens = workspace_tokens
    app.state.admin_token_hash = admin_token_hash
    # Capabilities of the store, as API keys are: SQLiteStore keeps identities, roles and an audit trail; a
    # store without them leaves only the bootstrap admin (cluster-admin through the built-in bindings).
    app.state.identities = getattr(store, "identities", None)
    app.state.rbac = getattr(store, "rbac", None) or BuiltinRbac()
    app.state.audit = getattr(store, "audit", None)
    app.state.version = version
    # Tests shorten this; clients rely on a line at least this often to notice a dead connection.
    app.state.bookmark_seconds = BOOKMARK_SECONDS
    errors.install(app)
    app.add_middleware(BodyLimitMiddleware, limit=MAX_BODY_BYTES)
    app.state.audit_log_json = audit_log_json
    app.add_middleware(AuditMiddleware)
    # Every route below declares its permission (api/authz.py `allow`); tests fail for one that does not.
    # projects before resources: its /projects routes are more specific than resources' /{plural}.
    for router in (system.public, system.router, projects.router, resources.router, apikeys.router,
                   registry.router, workspaces.router, portforward.router, rbac.router, access.router):
        app.include_router(router)
    return app
