"""WebSocket pass-through: Streamlit, Gradio and Jupyter keep a socket open to their server.

The client's handshake is answered only after the upstream's: the upstream chooses the subprotocol, and an
upstream that refuses the handshake (403, 404…) has its HTTP answer relayed as is through ASGI's
`websocket.http.response` extension. Then messages are relayed whole in both directions until one side
closes, and the close code and reason are passed on to the other side. Codes that must never be sent on the
wire (1005 no status, 1006 abnormal closure) become 1000 towards the upstream and 1011 towards the client.

The upstream connection is made to the replica's address, with the client's Host kept in the handshake
(some servers, Streamlit's Tornado among them, compare Origin with Host).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI
from websockets.frames import CloseCode

from .responses import error_body
from .routes import Upstream

log = logging.getLogger("shipyard.gateway")

_UNSENDABLE = {CloseCode.NO_STATUS_RCVD, CloseCode.ABNORMAL_CLOSURE, CloseCode.TLS_HANDSHAKE}
# Handshake headers the websockets client writes itself.
_OWN_HEADERS = {"host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version",
                "sec-websocket-extensions", "sec-websocket-protocol", "sec-websocket-accept"}


class HandshakeRefused(Exception):
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes):
        super().__init__(f"upstream answered the handshake with {status}")
        self.status, self.headers, self.body = status, headers, body


async def open_upstream(upstream: Upstream, scope: dict[str, Any], path: str, query: str,
                        headers: list[tuple[str, str]], open_timeout: float) -> ClientConnection:
    """Connect and complete the handshake; OSError/TimeoutError when unreachable, HandshakeRefused when the
    upstream answers with HTTP."""
    target = path + ("?" + query if query else "")
    host = next((v for n, v in headers if n == "host"), None)
    forwarded = [(n, v) for n, v in headers if n not in _OWN_HEADERS]
    kwargs: dict[str, Any] = dict(
        subprotocols=scope.get("subprotocols") or None, additional_headers=forwarded, user_agent_header=None,
        compression=None, max_size=None, open_timeout=open_timeout, ping_interval=None, proxy=None,
        host=upstream.host, port=upstream.port)
    try:
        return await connect(f"ws://{host or f'{upstream.host}:{upstream.port}'}{target}", **kwargs)
    except InvalidURI:  # a Host header that is no URI authority: use the upstream's address instead
        return await connect(f"ws://{upstream.host}:{upstream.port}{target}", **kwargs)
    except InvalidStatus as exc:
        response = exc.response
        kept = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.raw_items()
                if k.lower() in ("content-type", "set-cookie", "www-authenticate", "location")]
        raise HandshakeRefused(response.status_code, kept, response.body or b"") from None


async def deny(scope: dict[str, Any], send: Callable, status: int, body: bytes,
               headers: list[tuple[bytes, bytes]] | None = None, content_type: bytes = b"application/json") -> None:
    """Refuse a WebSocket handshake with an HTTP response (or a bare 403 if the server cannot send one)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        hdrs = headers if headers is not None else [(b"content-type", content_type)]
        await send({"type": "websocket.http.response.start", "status": status, "headers": hdrs})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


async def deny_error(scope: dict[str, Any], send: Callable, status: int, message: str, type_: str, code: str) -> None:
    await deny(scope, send, status, error_body(message, type_, code))


async def relay(upstream_ws: ClientConnection, receive: Callable, send: Callable) -> int:
    """Accept the client, relay until either side closes; returns the close code the client was given."""
    accept: dict[str, Any] = {"type": "websocket.accept", "subprotocol": upstream_ws.subprotocol}
    cookies = [(b"set-cookie", v.encode("latin-1")) for v in upstream_ws.response.headers.get_all("set-cookie")]
    if cookies:
        accept["headers"] = cookies
    await send(accept)
    to_upstream = asyncio.ensure_future(_client_to_upstream(receive, upstream_ws))
    to_client = asyncio.ensure_future(_upstream_to_client(upstream_ws, send))
    try:
        done, _ = await asyncio.wait({to_upstream, to_client}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (to_upstream, to_client):
            if not task.done():
                task.cancel()
        await asyncio.gather(to_upstream, to_client, return_exceptions=True)
        await upstream_ws.close()
    for task in (to_client, to_upstream):
        if task in done and not task.cancelled():
            if task.exception() is None:
                return task.result()
            log.warning("WebSocket relay failed: %r", task.exception())
    return CloseCode.INTERNAL_ERROR


async def _client_to_upstream(receive: Callable, upstream_ws: ClientConnection) -> int:
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            try:
                await upstream_ws.send(text if text is not None else message.get("bytes") or b"")
            except ConnectionClosed:
                # the other direction reports how the upstream closed; wait for it to do so
                await asyncio.Future()
        elif kind == "websocket.disconnect":
            code = message.get("code", CloseCode.NORMAL_CLOSURE)
            reason = message.get("reason") or ""
            await upstream_ws.close(CloseCode.NORMAL_CLOSURE if code in _UNSENDABLE else code, reason)
            return code


async def _upstream_to_client(upstream_ws: ClientConnection, send: Callable) -> int:
    try:
        async for data in upstream_ws:
            if isinstance(data, str):
                await send({"type": "websocket.send", "text": data})
            else:
                await send({"type": "websocket.send", "bytes": data})
    except ConnectionClosed:
        pass
    received = upstream_ws.protocol.close_rcvd
    code = received.code if received is not None else CloseCode.ABNORMAL_CLOSURE
    reason = received.reason if received is not None else ""
    if code in _UNSENDABLE:
        code = CloseCode.NORMAL_CLOSURE if code == CloseCode.NO_STATUS_RCVD else CloseCode.INTERNAL_ERROR
    await send({"type": "websocket.close", "code": code, "reason": reason})
    return code
