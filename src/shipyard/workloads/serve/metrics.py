"""Prometheus metrics for the server, and the ASGI middleware that counts every request.

Why a private registry: the process-global default registry would also export whatever else registered
there (and make two servers in one test process collide); `/metrics` shows exactly these series.

Why pure ASGI rather than Starlette's BaseHTTPMiddleware: the latter wraps streamed bodies in its own task and
has historically interfered with cancellation on client disconnect, which is how an abandoned SSE stream frees
its batch slot. The route label is the path for known routes and "other" otherwise, so scanners probing random
URLs cannot blow up the label cardinality.
"""

from __future__ import annotations

from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

GENERATION_ROUTES = ("/v1/completions", "/v1/chat/completions")
KNOWN_ROUTES = (*GENERATION_ROUTES, "/v1/models", "/health", "/metrics")
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
_TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)


class ServeMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("shipyard_serve_requests", "HTTP requests by route and status code",
                                ["route", "status"], registry=r)
        self.prompt_tokens = Counter("shipyard_serve_prompt_tokens", "Prompt tokens of finished requests", registry=r)
        self.completion_tokens = Counter("shipyard_serve_completion_tokens", "Generated tokens", registry=r)
        self.ttft = Histogram("shipyard_serve_time_to_first_token_seconds",
                              "From request arrival to its first generated token", buckets=_TTFT_BUCKETS, registry=r)
        self.latency = Histogram("shipyard_serve_request_latency_seconds", "From request arrival to its last token",
                                 ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("shipyard_serve_requests_in_flight", "Generation requests being handled", registry=r)
        self.batch_size = Histogram("shipyard_serve_batch_size", "Sequences in each decode step",
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.waiting = Gauge("shipyard_serve_sequences_waiting", "Sequences queued for a batch slot", registry=r)
        self.running = Gauge("shipyard_serve_sequences_running", "Sequences in the running batch", registry=r)

    def track_engine(self, engine: Any) -> None:
        """Queue depths are read from the engine when scraped, not pushed on every step."""
        self.waiting.set_function(lambda: engine.num_waiting)
        self.running.set_function(lambda: engine.num_running)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    def __init__(self, app: Callable, metrics: ServeMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path if path in KNOWN_ROUTES else "other"
        status = 500  # what an exception escaping the app turns into

        async def send_and_watch(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        tracked = route in GENERATION_ROUTES
        if tracked:
            self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            if tracked:
                self.metrics.in_flight.dec()
            self.metrics.requests.labels(route, str(status)).inc()
