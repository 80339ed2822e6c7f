"""Header rewriting between the client and the upstream, both ways.

Hop-by-hop headers (RFC 9110 §7.6.1, and any header the Connection header names) describe one connection
and must not be forwarded. The client's Authorization header is dropped too on routes that need a project key:
upstreams never see project keys. A public route's Authorization belongs to the app behind it (a workspace's
IDE checks its own token there), so it is passed on, unless it is a project key (the caller decides). X-Forwarded-* are set by the gateway, never trusted from the client (except that X-Forwarded-For is
appended to, as every proxy does): X-Forwarded-Prefix tells apps served under /{project}/{name} (Gradio,
Streamlit) where they live so they build correct URLs. The Host header is kept, so that absolute URLs an
app builds point back at the gateway.
"""

from __future__ import annotations

import os
import re

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"proxy-connection", b"te",
    b"trailer", b"transfer-encoding", b"upgrade",
})
# Also never forwarded upstream: what the gateway consumes or sets itself. Content-Length is recomputed by
# the upstream client from the body it sends; Expect is answered by the gateway's own server.
_DROP_UPSTREAM = HOP_BY_HOP | {
    b"authorization", b"content-length", b"expect", b"forwarded", b"x-forwarded-for", b"x-forwarded-host",
    b"x-forwarded-proto", b"x-forwarded-prefix", b"x-forwarded-port", b"x-real-ip", b"x-request-id",
}
_DROP_DOWNSTREAM = HOP_BY_HOP
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def new_request_id() -> str:
    return os.urandom(12).hex()


def upstream_request_headers(headers: list[tuple[bytes, bytes]], client_host: str | None, scheme: str,
                             prefix: str | None, extra_drop: frozenset[bytes] = frozenset(),
                             keep_authorization: bool = False) -> tuple[list[tuple[str, str]], str]:
    """(headers for the upstream as str pairs, the request id) from the client's ASGI headers."""
    out: list[tuple[str, str]] = []
    forwarded_for = host = request_id = None
    connection_named: set[bytes] | None = None
    for name, value in headers:
        if name == b"authorization" and keep_authorization and name not in extra_drop:
            out.append(("authorization", value.decode("latin-1")))
            continue
        if name in _DROP_UPSTREAM or name in extra_drop:
            if name == b"x-forwarded-for":
                forwarded_for = value
            elif name == b"x-request-id" and _REQUEST_ID.fullmatch(value):
                request_id = value.decode()
            elif name == b"connection":
                connection_named = {t.strip().lower() for t in value.split(b",")}
            continue
        if name == b"host":
            host = value
        out.append((name.decode("latin-1"), value.decode("latin-1")))
    if connection_named:
        out = [(n, v) for n, v in out if n.encode("latin-1") not in connection_named]
    if request_id is None:
        request_id = new_request_id()
    if client_host:
        out.append(("x-forwarded-for", f"{forwarded_for.decode('latin-1')}, {client_host}" if forwarded_for
                    else client_host))
    out.append(("x-forwarded-proto", scheme))
    if host is not None:
        out.append(("x-forwarded-host", host.decode("latin-1")))
    if prefix:
        out.append(("x-forwarded-prefix", prefix))
    out.append(("x-request-id", request_id))
    return out, request_id


def downstream_response_headers(raw: tuple[tuple[bytes, bytes], ...] | list[tuple[bytes, bytes]],
                                request_id: str) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers as the client gets them (hop-by-hop removed, X-Request-Id added)."""
    out = []
    has_id = False
    connection_named: set[bytes] | None = None
    for name, value in raw:
        lower = name.lower()
        if lower in _DROP_DOWNSTREAM:
            if lower == b"connection":
                connection_named = {t.strip().lower() for t in value.split(b",")}
            continue
        if lower == b"x-request-id":
            has_id = True
        out.append((lower, value))
    if connection_named:
        out = [(n, v) for n, v in out if n not in connection_named]
    if not has_id:
        out.append((b"x-request-id", request_id.encode()))
    return out
