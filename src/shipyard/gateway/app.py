"""The gateway's ASGI app: resolve the route, check the key, hold if needed, then proxy (HTTP or WebSocket).

Routing: `/{project}/{name}/{rest}` goes to `/{rest}` on an upstream (query kept), with X-Forwarded-Prefix
`/{project}/{name}`; with a `domain`, `{name}.{project}.{domain}` routes by Host and keeps the path whole.
`/-/healthz` and `/-/metrics` are the gateway's own. A raw ASGI callable rather than a framework: the hot
path is a dict lookup and a few header operations, and a router would cost more than the rest together.

Order of checks: a public route needs no key; for anything else the key is checked before the route's
existence is revealed, so that without a key of the project nobody can probe which names exist (401, never
404). Then the key's own restrictions, still before existence: a name outside its Endpoint/App list is 403,
a key over its request rate 429 with Retry-After (a refused name costs no rate token). An expired key is
refused as a revoked one is (401). Tokens are never logged; the access log records the path without its
query string.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from .auth import KeyGrant, KeyVerifier, bearer_token
from .balancer import mark_unreachable, pick
from .headers import upstream_request_headers
from .holding import Activate, Holder
from .metrics import GatewayMetrics
from .proxy import Exchange, HttpProxy
from .ratelimit import RateLimiter
from .responses import error_body, send_bytes, send_error
from .routes import RouteEntry, RouteTable
from .upstream import UpstreamClient
from .websocket import HandshakeRefused, deny, deny_error, open_upstream, relay

log = logging.getLogger("shipyard.gateway")
access_log = logging.getLogger("shipyard.gateway.access")

RESERVED_PREFIX = "/-/"
DEFAULT_RETRY_BODY_LIMIT = 8 * 1024 * 1024


def create_gateway_app(routes: RouteTable, keys: KeyVerifier, activate: Activate | None = None, *,
                       domain: str | None = None, hold_timeout: float = 120.0, queue_limit: int = 256,
                       restart_hold_timeout: float = 10.0, max_attempts: int = 3,
                       retry_body_limit: int = DEFAULT_RETRY_BODY_LIMIT, connect_timeout: float = 5.0,
                       ready: Callable[[], bool] | None = None,
                       rate_limiter: RateLimiter | None = None) -> "GatewayApp":
    """The gateway as an ASGI app (serve it with GatewayServer, or any ASGI server with lifespan on).

    `ready`: whether this gateway has routes to serve (`/-/ready`); a cluster gateway replica that has not
    loaded its routes yet, or is shutting down, answers 503 there so that its Service sends it no traffic."""
    return GatewayApp(routes, keys, activate, domain=domain, hold_timeout=hold_timeout, queue_limit=queue_limit,
                      restart_hold_timeout=restart_hold_timeout, max_attempts=max_attempts,
                      retry_body_limit=retry_body_limit, connect_timeout=connect_timeout, ready=ready,
                      rate_limiter=rate_limiter)


class _Target:
    __slots__ = ("project", "name", "path", "prefix", "redirect")

    def __init__(self, project: str, name: str, path: str, prefix: str | None, redirect: bool = False):
        self.project, self.name, self.path, self.prefix, self.redirect = project, name, path, prefix, redirect


class _Refusal:
    __slots__ = ("status", "message", "type", "code", "headers")

    def __init__(self, status: int, message: str, type_: str, code: str,
                 headers: list[tuple[bytes, bytes]] | None = None):
        self.status, self.message, self.type, self.code, self.headers = status, message, type_, code, headers or []


class GatewayApp:
    def __init__(self, routes: RouteTable, keys: KeyVerifier, activate: Activate | None, *, domain: str | None,
                 hold_timeout: float, queue_limit: int, restart_hold_timeout: float, max_attempts: int,
                 retry_body_limit: int, connect_timeout: float, ready: Callable[[], bool] | None = None,
                 rate_limiter: RateLimiter | None = None):
        if max_attempts < 1 or queue_limit < 0:
            raise ValueError("max_attempts must be at least 1 and queue_limit not negative")
        self.routes = routes
        self.keys = keys
        self.rates = rate_limiter if rate_limiter is not None else RateLimiter()
        self.ready = ready
        self.domain_suffix = "." + domain.strip(".").lower() if domain else None
        self.metrics = GatewayMetrics(routes)
        self.client = UpstreamClient(connect_timeout=connect_timeout)
        self.connect_timeout = connect_timeout
        self.holder = Holder(routes, activate, hold_timeout, restart_hold_timeout, queue_limit)
        self.proxy = HttpProxy(self.client, self.holder, self.metrics, max_attempts, retry_body_limit)

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def aclose(self) -> None:
        """Close the pooled upstream connections (the lifespan shutdown does this)."""
        await self.client.close()

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- routing ----------------------------------------------------------------------------------------

    def _target(self, scope: dict[str, Any]) -> _Target | None:
        if self.domain_suffix is not None:
            host = _host(scope)
            if host is not None and host.endswith(self.domain_suffix):
                labels = host[:-len(self.domain_suffix)].split(".")
                if len(labels) == 2 and all(labels):
                    return _Target(labels[1], labels[0], _raw_path(scope), None)
        raw = _raw_path(scope)
        parts = raw.split("/", 3)
        if len(parts) < 3 or not parts[1] or not parts[2] or raw.startswith(RESERVED_PREFIX):
            return None
        project, name = parts[1], parts[2]
        prefix = f"/{project}/{name}"
        if len(parts) == 3:  # "/p/n": relative URLs of an app only work below "/p/n/"
            return _Target(project, name, "/", prefix, redirect=scope["method"] in ("GET", "HEAD"))
        return _Target(project, name, "/" + parts[3], prefix)

    def _grant(self, scope: dict[str, Any], project: str) -> KeyGrant | None:
        """The grant of the request's key if it is a live key of `project` (keys never reach another)."""
        token = bearer_token(scope["headers"])
        if token is None:
            return None
        grant = self.keys.grant(token)
        if grant is None or grant.project != project:
            return None
        if grant.expires_at is not None and time.time() >= grant.expires_at:
            return None  # the verifier should have said so already; a cached grant must not outlive its key
        return grant

    def _refusal(self, scope: dict[str, Any], target: _Target, entry: RouteEntry | None) -> _Refusal | None:
        """Why this request may not go on (None: it may): no valid key, a name the key may not reach, or the
        key's rate spent. A public route needs no key, so none of its restrictions apply there."""
        if entry is not None and entry.current[0].public:
            return None
        grant = self._grant(scope, target.project)
        if grant is None:
            return _Refusal(401, "missing or invalid API key: send 'Authorization: Bearer <key>' with a key of "
                            f"project {target.project!r}", "invalid_request_error", "invalid_api_key",
                            [(b"www-authenticate", b'Bearer realm="shipyard"')])
        if grant.endpoints and target.name not in grant.endpoints:
            return _Refusal(403, f"this API key may not reach {target.name!r} in project {target.project!r}: it "
                            "is limited to other endpoints and apps", "permission_error", "endpoint_not_allowed")
        wait = self.rates.retry_after(grant)
        if wait:
            return _Refusal(429, f"this API key's request rate ({grant.requests_per_second:g}/s) is spent: retry "
                            f"in {wait} s", "rate_limit_error", "rate_limit_exceeded",
                            [(b"retry-after", str(wait).encode())])
        return None

    def _apps_own_auth(self, scope: dict[str, Any], target: _Target, entry: RouteEntry) -> bool:
        """Whether the client's Authorization header goes on: on a public route it is the app's own (an IDE's
        token), unless it is a project key, which no upstream ever sees."""
        if not entry.current[0].public:
            return False
        token = bearer_token(scope["headers"])
        if token is None:
            return True
        grant = self.keys.grant(token)
        return grant is None or grant.project != target.project

    # --- HTTP -------------------------------------------------------------------------------------------

    async def _http(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        started = time.monotonic()
        target = self._target(scope)
        if target is None:
            await self._own(scope, send, started)
            return
        ex = Exchange(scope["method"], target.project, target.name, target.path)
        entry = self.routes.entry(target.project, target.name)
        try:
            refusal = self._refusal(scope, target, entry)
            if refusal is not None:
                ex.status = refusal.status
                await send_error(send, refusal.status, refusal.message, refusal.type, refusal.code, refusal.headers)
                return
            if entry is None:
                ex.status = 404
                await send_error(send, 404, f"no endpoint or app {target.name!r} in project {target.project!r}",
                                 "not_found_error", "route_not_found")
                return
            if target.redirect:
                ex.status = 308
                query = scope.get("query_string") or b""
                location = (target.prefix or "").encode() + b"/" + (b"?" + query if query else b"")
                await send_bytes(send, 308, b"", b"text/plain", [(b"location", location)])
                return
            headers, ex.request_id = upstream_request_headers(scope["headers"], _client_host(scope),
                                                              scope.get("scheme", "http"), target.prefix,
                                                              keep_authorization=self._apps_own_auth(scope, target,
                                                                                                     entry))
            traffic = entry.traffic
            traffic.arrived(started)
            traffic.in_flight += 1
            path = target.path
            if target.prefix and entry.current[0].keep_prefix:
                path = target.prefix + target.path
            try:
                await self.proxy.forward(scope, receive, send, entry, path,
                                         (scope.get("query_string") or b"").decode("latin-1"), headers, ex, started)
            finally:
                traffic.in_flight -= 1
        finally:
            self._finished(ex, started, entry is not None)

    async def _own(self, scope: dict[str, Any], send: Callable, started: float) -> None:
        path = scope["path"]
        if path == "/-/healthz":
            await send_bytes(send, 200, b"ok\n", b"text/plain; charset=utf-8")
        elif path == "/-/ready":
            if self.ready is None or self.ready():
                await send_bytes(send, 200, b"ready\n", b"text/plain; charset=utf-8")
            else:
                await send_bytes(send, 503, b"standby: not serving routes (loading them, or shutting down)\n",
                                 b"text/plain; charset=utf-8")
        elif path == "/-/metrics":
            body = await asyncio.get_running_loop().run_in_executor(None, self.metrics.render)
            await send_bytes(send, 200, body, self.metrics.content_type)
        else:
            await send_error(send, 404, "not a route: use /{project}/{name}/…", "not_found_error",
                             "route_not_found")
            self.metrics.observe("", "", 404, time.monotonic() - started, None)

    def _finished(self, ex: Exchange, started: float, known_route: bool) -> None:
        duration = time.monotonic() - started
        if ex.status == 0:  # an exception escaped: the server answers 500
            ex.status = 500
        if known_route:
            self.metrics.observe(ex.project, ex.name, ex.status, duration, ex.ttfb)
        else:
            self.metrics.observe("", "", ex.status, duration, ex.ttfb)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info("%s /%s/%s%s upstream=%s status=%d bytes=%d duration_ms=%.1f attempts=%d "
                            "request_id=%s%s", ex.method, ex.project, ex.name, ex.path, ex.upstream, ex.status,
                            ex.bytes, duration * 1000, ex.attempts, ex.request_id or "-",
                            f" {ex.note}" if ex.note else "")

    # --- WebSocket --------------------------------------------------------------------------------------

    async def _websocket(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        started = time.monotonic()
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        target = self._target(scope)
        if target is None:
            await deny_error(scope, send, 404, "not a route: use /{project}/{name}/…", "not_found_error",
                             "route_not_found")
            return
        ex = Exchange("WS", target.project, target.name, target.path)
        entry = self.routes.entry(target.project, target.name)
        try:
            refusal = self._refusal(scope, target, entry)
            if refusal is not None:
                ex.status = refusal.status
                await deny(scope, send, refusal.status, error_body(refusal.message, refusal.type, refusal.code),
                           [(b"content-type", b"application/json"), *refusal.headers])
                return
            if entry is None:
                ex.status = 404
                await deny_error(scope, send, 404, f"no endpoint or app {target.name!r} in project "
                                 f"{target.project!r}", "not_found_error", "route_not_found")
                return
            headers, ex.request_id = upstream_request_headers(scope["headers"], _client_host(scope),
                                                              "https" if scope.get("scheme") == "wss" else "http",
                                                              target.prefix,
                                                              keep_authorization=self._apps_own_auth(scope, target,
                                                                                                     entry))
            entry.traffic.arrived(started)
            entry.traffic.in_flight += 1
            try:
                await self._websocket_session(scope, receive, send, entry, target, headers, ex)
            finally:
                entry.traffic.in_flight -= 1
        finally:
            self._finished(ex, started, entry is not None)

    async def _websocket_session(self, scope: dict[str, Any], receive: Callable, send: Callable,
                                 entry: RouteEntry, target: _Target, headers: list[tuple[str, str]],
                                 ex: Exchange) -> None:
        query = (scope.get("query_string") or b"").decode("latin-1")
        deadline: float | None = None
        tried: list = []
        for attempt in range(1, self.proxy.max_attempts + 1):
            refusal, deadline = await self.holder.until_ready(entry, deadline)
            if refusal is not None:
                ex.status = refusal.status
                await deny_error(scope, send, refusal.status, refusal.message, "service_unavailable", refusal.code)
                return
            now = time.monotonic()
            backend = pick(entry.current[1], now, tried) or pick(entry.current[1], now)
            if backend is None:
                continue
            tried.append(backend)
            ex.upstream, ex.attempts = backend.upstream.id, attempt
            traffic = backend.traffic
            traffic.begin(now)
            traffic.requests_total += 1
            traffic.rate.add(now)
            try:
                try:
                    path = target.prefix + target.path if target.prefix and entry.current[0].keep_prefix \
                        else target.path
                    upstream_ws = await open_upstream(backend.upstream, scope, path, query, headers,
                                                      self.connect_timeout)
                except HandshakeRefused as exc:
                    ex.status = exc.status
                    await deny(scope, send, exc.status, exc.body, exc.headers)
                    return
                except (OSError, asyncio.TimeoutError) as exc:
                    if isinstance(exc, ConnectionRefusedError):
                        mark_unreachable(backend, time.monotonic())
                    log.debug("websocket to %s failed: %r", ex.upstream, exc)
                    continue
                except Exception as exc:  # noqa: BLE001 - a broken handshake of one upstream is a 502
                    ex.status = 502
                    await deny_error(scope, send, 502, f"upstream {ex.upstream} failed the WebSocket handshake: "
                                     f"{exc}", "bad_gateway", "upstream_failed")
                    return
                ex.status = 101
                code = await relay(upstream_ws, receive, send)
                ex.note = f"close={code}"
                return
            finally:
                traffic.end(time.monotonic())
        ex.status = 502
        await deny_error(scope, send, 502, f"no upstream accepted the WebSocket after {self.proxy.max_attempts} "
                         "attempts", "bad_gateway", "upstream_unreachable")


def _raw_path(scope: dict[str, Any]) -> str:
    raw = scope.get("raw_path")
    return raw.decode("latin-1") if raw else scope["path"]


def _host(scope: dict[str, Any]) -> str | None:
    for name, value in scope["headers"]:
        if name == b"host":
            return value.decode("latin-1").rsplit(":", 1)[0].lower() if value else None
    return None


def _client_host(scope: dict[str, Any]) -> str | None:
    client = scope.get("client")
    return client[0] if client else None

