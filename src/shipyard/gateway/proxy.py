"""Forwarding one HTTP request: buffer the body, pick an upstream, retry what never arrived, stream back.

Retry rule: a request is sent again (to another upstream when there is one) only when it never reached an
upstream that answered it (see upstream.NotDelivered), at most `max_attempts` times, and only if its body was
buffered — bodies up to `retry_body_limit` are; larger ones stream to the upstream as they arrive and cannot
be replayed. Once a response head has been relayed, an upstream failure is passed through: the client's
connection is closed mid-body, which every HTTP client reports as a truncated response (a clean end would
pass a partial answer off as a whole one).

Client disconnects: uvicorn silently drops what is sent after the client left, so without a watcher an
abandoned SSE stream would keep an LLM replica generating for nobody. Once the body is read, a watcher task
waits on `receive()` (which answers http.disconnect when the client leaves or when the response completes)
and cancels the forwarding task in the first case; the cancellation closes the upstream connection, which
is how the upstream learns that the client has gone. The watcher starts only once a request has lasted
WATCH_AFTER_SECONDS: most requests are over sooner, and a timer costs a fraction of a task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator, Callable

import aiohttp

from .balancer import mark_unreachable, pick
from .headers import downstream_response_headers
from .holding import Holder, Refusal
from .metrics import GatewayMetrics
from .responses import send_error
from .routes import RouteEntry
from .upstream import NotDelivered, UpstreamClient, UpstreamFailed

log = logging.getLogger("shipyard.gateway")

CLIENT_CLOSED = 499  # nginx's code for "the client went away first", used in logs and metrics only
WATCH_AFTER_SECONDS = 0.05


class Exchange:
    """What the access log and the metrics need to know about one request once it is over."""

    __slots__ = ("method", "project", "name", "path", "request_id", "upstream", "status", "bytes", "ttfb",
                 "attempts", "client_gone", "response_complete", "note", "watcher")

    def __init__(self, method: str, project: str, name: str, path: str):
        self.method, self.project, self.name, self.path = method, project, name, path
        self.request_id = ""
        self.upstream = "-"
        self.status = 0
        self.bytes = 0
        self.ttfb: float | None = None
        self.attempts = 0
        self.client_gone = False
        self.response_complete = False
        self.note = ""
        self.watcher: asyncio.Task | None = None


async def send_refusal(send: Callable, refusal: Refusal, ex: Exchange) -> None:
    ex.status = refusal.status
    extra = [(b"retry-after", str(refusal.retry_after).encode())] if refusal.retry_after is not None else None
    error_type = "not_found_error" if refusal.status == 404 else "service_unavailable"
    await send_error(send, refusal.status, refusal.message, error_type, refusal.code, extra)


class HttpProxy:
    def __init__(self, client: UpstreamClient, holder: Holder, metrics: GatewayMetrics, max_attempts: int,
                 retry_body_limit: int):
        self.client = client
        self.holder = holder
        self.metrics = metrics
        self.max_attempts = max_attempts
        self.retry_body_limit = retry_body_limit

    async def forward(self, scope: dict[str, Any], receive: Callable, send: Callable, entry: RouteEntry,
                      path: str, query: str, headers: list[tuple[str, str]], ex: Exchange, started: float) -> None:
        body = await self._read_body(receive, ex)
        if ex.client_gone:
            ex.status = CLIENT_CLOSED
            return
        task = asyncio.current_task()
        assert task is not None
        retryable = isinstance(body, bytes)
        # a streamed body is still being read through receive(): no watcher can share it
        timer = (asyncio.get_running_loop().call_later(WATCH_AFTER_SECONDS, _start_watcher, receive, ex, task)
                 if retryable else None)
        try:
            await self._attempts(scope, send, entry, path, query, headers, body, retryable, ex, started)
        except asyncio.CancelledError:
            if not ex.client_gone:
                raise
            task.uncancel()
        finally:
            ex.response_complete = True
            if timer is not None:
                timer.cancel()
            if ex.watcher is not None and not ex.watcher.done():
                ex.watcher.cancel()
        if ex.client_gone:
            ex.status = CLIENT_CLOSED

    async def _attempts(self, scope: dict[str, Any], send: Callable, entry: RouteEntry, path: str, query: str,
                        headers: list[tuple[str, str]], body: bytes | AsyncIterator[bytes], retryable: bool,
                        ex: Exchange, started: float) -> None:
        deadline: float | None = None
        tried: list = []
        method = scope["method"]
        payload = (body or None) if retryable else body
        for attempt in range(1, self.max_attempts + 1):
            refusal, deadline = await self.holder.until_ready(entry, deadline)
            if refusal is not None:
                await send_refusal(send, refusal, ex)
                return
            now = time.monotonic()
            backends = entry.current[1]
            # Untried upstreams first; when all were tried, any of them again (a stale pooled connection to
            # the only replica fails once, and a fresh connection to it then succeeds).
            backend = pick(backends, now, tried) or pick(backends, now)
            if backend is None:  # the route lost its upstreams just now: hold again
                continue
            tried.append(backend)
            traffic = backend.traffic
            traffic.begin(now)
            traffic.requests_total += 1
            traffic.rate.add(now)
            ex.upstream = backend.upstream.id
            ex.attempts = attempt
            try:
                try:
                    response = await self.client.send(backend.upstream, method, path, query, headers, payload)
                except NotDelivered as exc:
                    if exc.refused:
                        mark_unreachable(backend, time.monotonic())
                    if ex.client_gone:
                        return
                    if retryable and attempt < self.max_attempts:
                        log.debug("request %s to %s not delivered (%s); retrying", ex.request_id, ex.upstream, exc)
                        self.metrics.retried(ex.project, ex.name)
                        continue
                    ex.status = 502
                    await send_error(send, 502, f"upstream {ex.upstream} unreachable: {exc}", "bad_gateway",
                                     "upstream_unreachable")
                    return
                except UpstreamFailed as exc:
                    ex.status = 502
                    await send_error(send, 502, f"upstream {ex.upstream} failed: {exc}", "bad_gateway",
                                     "upstream_failed")
                    return
                await self._relay(response, send, ex, started)
                return
            finally:
                traffic.end(time.monotonic())
        ex.status = 502
        await send_error(send, 502, f"no upstream answered after {self.max_attempts} attempts", "bad_gateway",
                         "upstream_unreachable")

    async def _relay(self, response: aiohttp.ClientResponse, send: Callable, ex: Exchange, started: float) -> None:
        try:
            ex.status = response.status
            await send({"type": "http.response.start", "status": response.status,
                        "headers": downstream_response_headers(response.raw_headers, ex.request_id)})
            ex.ttfb = time.monotonic() - started
            content = response.content
            while True:
                try:
                    chunk = await content.readany()
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    ex.note = "truncated"
                    log.warning("request %s: upstream %s failed mid-response (%s); closing the client "
                                "connection", ex.request_id, ex.upstream, exc)
                    response.close()
                    return  # leaving the response incomplete makes the server close the connection
                if not chunk:
                    ex.response_complete = True
                    await send({"type": "http.response.body", "body": b""})
                    break
                ex.bytes += len(chunk)
                if content.at_eof():
                    ex.response_complete = True
                    await send({"type": "http.response.body", "body": chunk})
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            response.release()
        except BaseException:
            response.close()
            raise

    async def _read_body(self, receive: Callable, ex: Exchange) -> bytes | AsyncIterator[bytes]:
        """The whole body when it fits the retry limit, else a stream of it (not retryable)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                ex.client_gone = True
                return b""
            chunk = message.get("body", b"")
            if not message.get("more_body"):
                if not chunks:
                    return chunk
                chunks.append(chunk)
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
            if size > self.retry_body_limit:
                return _stream_body(chunks, receive, ex)


async def _stream_body(prefix: list[bytes], receive: Callable, ex: Exchange) -> AsyncIterator[bytes]:
    for chunk in prefix:
        yield chunk
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            ex.client_gone = True
            # an error, not an early end: the upstream must not take a partial body for a whole one
            raise ConnectionResetError("the client disconnected during the upload")
        yield message.get("body", b"")
        if not message.get("more_body"):
            return


def _start_watcher(receive: Callable, ex: Exchange, task: asyncio.Task) -> None:
    if not ex.response_complete:
        ex.watcher = asyncio.get_running_loop().create_task(_watch(receive, ex, task))


async def _watch(receive: Callable, ex: Exchange, task: asyncio.Task) -> None:
    message = await receive()
    if message["type"] == "http.disconnect" and not ex.response_complete:
        ex.client_gone = True
        task.cancel()
