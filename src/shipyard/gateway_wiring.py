"""Adapters between the gateway and the rest, used only by the composition root (server.py).

The gateway knows nothing of Shipyard, controllers see it as `Traffic`, the local runtime's HPA as
`PodMetrics`, and API keys live in the store: these three small classes are the only place all of them meet.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from shipyard.controllers.serving import RouteTarget, TrafficStats
from shipyard.gateway.routes import Route, RouteTable, Upstream
from shipyard.runtime.protocol import IN_FLIGHT_METRIC, REQUESTS_PER_SECOND_METRIC
from shipyard.store import ApiKeyStore
from shipyard.store.protocol import ApiKeyGrant
from shipyard.tokens import hash_token


class GatewayTraffic:
    """controllers.serving.Traffic over the gateway's route table; also indexes pod → route for metrics."""

    def __init__(self, table: RouteTable, base_url: str, clock: Callable[[], float] = time.monotonic):
        self._table = table
        self._clock = clock  # the gateway's counters run on time.monotonic
        self._base_url = base_url.rstrip("/")
        self._lock = threading.Lock()
        self._route_of_pod: dict[tuple[str, str], str] = {}  # (project, pod) → route name
        # (project, pod) → (monotonic time, busy seconds, mean in-flight) of the previous HPA read
        self._last_read: dict[tuple[str, str], tuple[float, float, float]] = {}

    def set_route(self, route: RouteTarget) -> None:
        self._table.set_route(Route(
            project=route.project, name=route.name, kind=route.kind, public=route.public,
            upstreams=tuple(Upstream(u.id, u.host, u.port) for u in route.upstreams),
            scalable_from_zero=route.scalable_from_zero, keep_prefix=route.keep_prefix))
        with self._lock:
            for key in [k for k, v in self._route_of_pod.items() if k[0] == route.project and v == route.name]:
                del self._route_of_pod[key]
            for upstream in route.upstreams:
                self._route_of_pod[(route.project, upstream.id)] = route.name
            for key in [k for k in self._last_read if k not in self._route_of_pod]:
                del self._last_read[key]

    def remove_route(self, project: str, name: str) -> None:
        self._table.remove_route(project, name)
        with self._lock:
            for key in [k for k, v in self._route_of_pod.items() if k[0] == project and v == name]:
                del self._route_of_pod[key]

    def stats(self, project: str, name: str) -> TrafficStats | None:
        if self._table.get(project, name) is None:
            return None
        s = self._table.stats(project, name)
        return TrafficStats(in_flight=s.in_flight, queued=s.queued, requests_per_second=s.requests_per_second,
                            last_request_at=s.last_request_at)

    def url(self, project: str, name: str) -> str:
        return f"{self._base_url}/{project}/{name}/"

    # --- runtime.protocol.PodMetrics (the local HPA's input) ---------------------------------------------

    def pod_metric(self, namespace: str, pod: str, metric: str) -> float | None:
        with self._lock:
            route = self._route_of_pod.get((namespace, pod))
        if route is None:
            return None  # not routed (not ready yet): the HPA leaves it out, as Kubernetes does
        upstream = self._table.upstream_stats(namespace, route).get(pod)
        if upstream is None:
            return None
        if metric == IN_FLIGHT_METRIC:
            return self._mean_in_flight((namespace, pod), upstream.in_flight, upstream.busy_seconds)
        if metric == REQUESTS_PER_SECOND_METRIC:
            return upstream.requests_per_second
        return None


    def _mean_in_flight(self, key: tuple[str, str], now_in_flight: int, busy: float) -> float:
        """Mean concurrency since the previous read (the HPA reads once per sync): steadier than one count,
        which a burst of short requests makes jump and the HPA then overshoots on. The first read, or one
        sooner than MIN_WINDOW after the last, falls back to the count or to the previous mean."""
        now = self._clock()
        with self._lock:
            previous = self._last_read.get(key)
            if previous is not None and now - previous[0] < MIN_WINDOW:
                return previous[2]
            mean = float(now_in_flight) if previous is None else max(0.0, busy - previous[1]) / (now - previous[0])
            self._last_read[key] = (now, busy, mean)
        return mean


MIN_WINDOW = 0.25  # seconds: below this the mean of a few requests is noise


class StoreKeys:
    """gateway.KeyVerifier over the store's hashed project keys (an in-memory lookup: no I/O per request).
    The store's ApiKeyGrant is structurally the gateway's KeyGrant, so it is handed over as it is."""

    def __init__(self, keys: ApiKeyStore):
        self._keys = keys

    def grant(self, token: str) -> ApiKeyGrant | None:
        return self._keys.api_key_grant(hash_token(token))

    def verify(self, project: str, token: str) -> bool:
        grant = self.grant(token)
        return grant is not None and grant.project == project


def activator(table: RouteTable, enqueue: Callable[[str, str, str], None]) -> Callable[[str, str], None]:
    """The gateway's activate(project, name): wake the controller of that route's kind at once (it sees the
    held requests in the route's stats and scales up; this only saves waiting for its next resync)."""
    def activate(project: str, name: str) -> None:
        route = table.get(project, name)
        if route is not None:
            enqueue(route.kind, project, name)
    return activate
