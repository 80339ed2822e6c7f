"""The audit trail: every mutating request and every refused one, with who, what, where and the outcome.

An ASGI middleware rather than a dependency, because the outcome (the status code) exists only once the
route has answered. The authorization dependency (`api/authz.py`) leaves what it decided in the request's
scope; this records it with the status, the time and the client address. Request bodies are never
recorded (a Secret's values or a token must not land here); `apply` notes one entry per object it applied.
On a cluster the same records go to the operator's log as JSON lines (`log_json`).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import anyio.to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shipyard.store.audit import AuditRecord, to_json_line

from .authz import MUTATING

log = logging.getLogger("shipyard.audit")
_VERB_OF_METHOD = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
                   "DELETE": "delete"}


class AuditMiddleware:
    """Records to the app's `state.audit` (a store's audit trail) and/or, with `state.audit_log_json`, the log;
    both read per request, so a test or the composition root may set them after the app is built."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["app"].state if "app" in scope else None
        sink = getattr(state, "audit", None)
        log_json = bool(getattr(state, "audit_log_json", False))
        if scope["type"] != "http" or (sink is None and not log_json):
            await self.app(scope, receive, send)
            return
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            records = self._records(scope, status)
            if records and sink is not None:
                # One transaction for the request (an apply notes every object), off the event loop.
                try:
                    await anyio.to_thread.run_sync(sink.record_many, records)
                except Exception:  # noqa: BLE001 - a full disk must not turn every request into a 500
                    log.exception("could not write audit records")
            if log_json:
                for record in records:
                    log.info(to_json_line(record))

    @staticmethod
    def _records(scope: Scope, status: int) -> list[AuditRecord]:
        noted: dict[str, Any] = (scope.get("state") or {}).get("audit") or {}
        verb = noted.get("verb") or _VERB_OF_METHOD.get(scope.get("method", ""), "")
        if verb not in MUTATING and status not in (401, 403):
            return []
        client = scope.get("client")
        now = datetime.now(timezone.utc)
        entries = noted.get("objects") or [noted]
        records = []
        for entry in entries:
            records.append(AuditRecord(
                time=now, user=noted.get("user", ""), groups=tuple(noted.get("groups", ())),
                token_name=noted.get("token_name", ""), verb=entry.get("verb") or verb,
                resource=entry.get("resource", ""), subresource=entry.get("subresource", ""),
                namespace=entry.get("namespace", ""), name=entry.get("name", ""), code=status,
                client=client[0] if client else "", reason=noted.get("reason", "") if status >= 400 else ""))
        return records
