"""The HTTP client that carries requests to upstreams: aiohttp with a keep-alive pool, chosen by measurement.

Measured on this project's 2-core machine (shared, so ranges) with a trivial upstream, 64 concurrent keep-alive
clients, and the same minimal proxy around each client (uvicorn + httptools + uvloop on the server side):
httpx.AsyncClient about 110 requests/s (its pool serialises under that concurrency), aiohttp 4,300–4,700
(≈ 210 µs of proxy CPU per request), and a hand-written pool over asyncio protocols with httptools' parser
6,100–6,800 (≈ 90 µs). The whole gateway on aiohttp does 4,500–5,900 requests/s and adds ≈ 0.3–0.6 ms at the
median, well inside its targets (≥ 2,000 requests/s, ≤ 1 ms), and its latency tail on this machine is set by
other tenants' load, which the hand-written client did not escape either. A maintained client is worth more
than the remaining CPU, so there is no hand-written HTTP client here; benchmarks/gateway_overhead.py reports
the figures, nginx's beside them.

What this module adds is the one distinction the retry policy needs: `NotDelivered` means the request never
reached an upstream that answered it — the connection was refused, timed out, or closed before a response
head arrived (a pooled keep-alive connection the upstream had just closed, or a replica killed before it
answered) — so it is safe to send it to another replica. Anything after the response head has started is
the response's own business and is passed through to the client.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterable

import aiohttp
from yarl import URL

from .routes import Upstream

# Below uvicorn's default keep-alive (5 s), so that the pool drops an idle connection before the upstream
# does; the race that remains (the upstream closes just as a request is written) ends in NotDelivered.
KEEPALIVE_SECONDS = 4.0
CONNECT_TIMEOUT_SECONDS = 5.0
MAX_HEADER_BYTES = 65536


class NotDelivered(Exception):
    """The request did not reach an upstream that answered it; `refused` if no connection was made."""

    def __init__(self, message: str, refused: bool):
        super().__init__(message)
        self.refused = refused


class UpstreamFailed(Exception):
    """The upstream answered with something that is not an HTTP response, or failed in another way."""


class UpstreamClient:
    """One connection pool for every upstream; created and closed on the gateway's event loop."""

    def __init__(self, connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
                 keepalive_timeout: float = KEEPALIVE_SECONDS):
        self._connect_timeout = connect_timeout
        self._keepalive_timeout = keepalive_timeout
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=self._keepalive_timeout,
                                         use_dns_cache=False)
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            # Bodies pass through as the upstream encoded them; the client decides what to decompress.
            auto_decompress=False,
            # Streams (LLM tokens, SSE, long polls) may legitimately stay open for a long time.
            timeout=aiohttp.ClientTimeout(total=None, connect=self._connect_timeout,
                                          sock_connect=self._connect_timeout),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            trust_env=False,
            max_line_size=MAX_HEADER_BYTES,
            max_field_size=MAX_HEADER_BYTES,
        )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def send(self, upstream: Upstream, method: str, path: str, query: str, headers: list[tuple[str, str]],
                   body: bytes | AsyncIterable[bytes] | None) -> aiohttp.ClientResponse:
        """Send the request and return once the response head has arrived; the caller reads the body and
        must release() (complete) or close() (abandoned) the response."""
        session = self._session or self._open()
        url = URL.build(scheme="http", host=upstream.host, port=upstream.port, path=path, query_string=query,
                        encoded=True)
        try:
            return await session.request(method, url, headers=headers, data=body, allow_redirects=False)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise NotDelivered(f"cannot connect: {exc}", refused=True) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise NotDelivered(f"connection closed before a response: {exc!r}", refused=False) from None
        except asyncio.TimeoutError as exc:
            raise UpstreamFailed(f"timed out: {exc!r}") from None
        except aiohttp.ClientError as exc:
            raise UpstreamFailed(f"{type(exc).__name__}: {exc}") from None
