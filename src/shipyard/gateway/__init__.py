"""The gateway: one port in front of every Endpoint and App, with keys, balancing, retries and holding.

    routes.py     the route table controllers write (Route, Upstream) and its traffic stats (read by autoscalers)
    app.py        the ASGI app: routing, auth, reserved paths, access log        create_gateway_app()
    auth.py       KeyVerifier → KeyGrant (a key's project and restrictions), StaticKeys, bearer tokens
    ratelimit.py  per-key token buckets (429 with Retry-After)
    holding.py    requests held while a route has no upstream; activate() for scale from zero
    proxy.py      HTTP forwarding with retries, streaming and client-disconnect handling
    websocket.py  WebSocket pass-through
    balancer.py   least outstanding requests over two random choices, passive health
    upstream.py   the upstream HTTP client (aiohttp), NotDelivered vs everything else
    headers.py    hop-by-hop removal, X-Forwarded-*, X-Request-Id
    metrics.py    Prometheus series at /-/metrics
    server.py     GatewayServer: uvicorn in a thread of its own
    __main__.py   python -m shipyard.gateway --route project/name=127.0.0.1:PORT … (manual use, benchmarks)

Importing this package stays cheap (controllers import shipyard.gateway.routes): the app and the server, which
pull in aiohttp and uvicorn, are loaded on first use. The gateway imports nothing else of Shipyard.
"""

from typing import TYPE_CHECKING, Any

from .auth import KeyVerifier, StaticKeys
from .routes import Route, RouteStats, RouteTable, Upstream, UpstreamStats

if TYPE_CHECKING:
    from .app import GatewayApp, create_gateway_app
    from .server import GatewayServer

__all__ = ["GatewayApp", "GatewayServer", "KeyVerifier", "Route", "RouteStats", "RouteTable", "StaticKeys",
           "Upstream", "UpstreamStats", "create_gateway_app"]


def __getattr__(name: str) -> Any:
    if name in ("create_gateway_app", "GatewayApp"):
        from . import app

        return getattr(app, name)
    if name == "GatewayServer":
        from .server import GatewayServer

        return GatewayServer
    raise AttributeError(f"module 'shipyard.gateway' has no attribute {name!r}")
