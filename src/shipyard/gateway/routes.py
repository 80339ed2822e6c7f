"""The routing table: which ready pods serve each Endpoint or App, and the traffic each one sees.

Controllers write it from their own threads as replicas become ready or go away; the gateway reads it on
its event loop for every request; the autoscaler and the local HPA read its traffic figures. Why a table
of immutable snapshots: a request reads `(route, backends)` with one attribute access and no lock, and a
controller replaces that pair in one assignment, so the gateway never sees a route with half-updated
upstreams. Requests held while a route has no upstream wait on futures of the gateway's loop, which a
writer resolves with `call_soon_threadsafe` — the only thread-safe way to wake an asyncio waiter.

This module must stay importable without the gateway's server dependencies (controllers import it).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

from .traffic import RouteTraffic, UpstreamTraffic


@dataclass(frozen=True)
class Upstream:
    """One ready replica: `id` is its pod name (metrics and access logs name it), reachable at host:port."""

    id: str
    host: str
    port: int


@dataclass(frozen=True)
class Route:
    """What the gateway serves at /{project}/{name}/: the ready upstreams of one Endpoint or App.

    `kind` is informational (Endpoint, App, Workspace). `public` routes need no API key. `scalable_from_zero`
    routes call the gateway's `activate` when a request finds no upstream, and hold requests for longer.
    `keep_prefix` routes get the whole path, /{project}/{name} included, for servers that must be told their
    base path and cannot take it from X-Forwarded-Prefix (Jupyter's base_url).
    """

    project: str
    name: str
    kind: str
    public: bool
    upstreams: tuple[Upstream, ...]
    scalable_from_zero: bool
    keep_prefix: bool = False


@dataclass(frozen=True)
class RouteStats:
    in_flight: int  # requests being proxied (held ones not included)
    queued: int  # requests held while the route has no upstream
    requests_total: int
    requests_per_second: float  # over the last ~10 s
    last_request_at: float | None  # time.time() of the latest arrival


@dataclass(frozen=True)
class UpstreamStats:
    in_flight: int
    requests_per_second: float
    busy_seconds: float = 0.0  # in-flight integrated over time.monotonic(): sample twice for a mean concurrency


class Backend:
    """An upstream as the balancer sees it: the address and its live counters."""

    __slots__ = ("upstream", "traffic")

    def __init__(self, upstream: Upstream, traffic: UpstreamTraffic):
        self.upstream = upstream
        self.traffic = traffic


class RouteEntry:
    """Gateway-internal state of one route; lives from set_route until remove_route."""

    __slots__ = ("current", "traffic", "waiters", "removed")

    def __init__(self, route: Route):
        self.current: tuple[Route, tuple[Backend, ...]] = (route, tuple(Backend(u, UpstreamTraffic())
                                                                        for u in route.upstreams))
        self.traffic = RouteTraffic()
        self.waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.removed = False


_ZERO = RouteStats(in_flight=0, queued=0, requests_total=0, requests_per_second=0.0, last_request_at=None)


class RouteTable:
    """Thread-safe map (project, name) → route; see the module docstring for who reads and writes it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], RouteEntry] = {}

    # --- written by controllers ---------------------------------------------------------------------------

    def set_route(self, route: Route) -> None:
        ids = [u.id for u in route.upstreams]
        if len(set(ids)) != len(ids):
            raise ValueError(f"route {route.project}/{route.name} lists an upstream id twice: {ids}")
        key = (route.project, route.name)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._entries[key] = RouteEntry(route)
                return
            # Counters (and passive-health marks) follow an upstream across updates as long as its id and
            # address stay the same; a replaced pod starts afresh.
            previous = {b.upstream.id: b for b in entry.current[1]}
            backends = tuple(old if (old := previous.get(u.id)) is not None and old.upstream == u
                             else Backend(u, UpstreamTraffic()) for u in route.upstreams)
            entry.current = (route, backends)
            if route.upstreams:
                entry.traffic.activation_pending = False
            waiters, entry.waiters = entry.waiters, []
        _wake(waiters)

    def remove_route(self, project: str, name: str) -> None:
        with self._lock:
            entry = self._entries.pop((project, name), None)
            if entry is None:
                return
            entry.removed = True
            waiters, entry.waiters = entry.waiters, []
        _wake(waiters)

    # --- read by anyone ---------------------------------------------------------------------------------

    def get(self, project: str, name: str) -> Route | None:
        entry = self._entries.get((project, name))
        return entry.current[0] if entry is not None else None

    def routes(self) -> list[Route]:
        with self._lock:
            entries = list(self._entries.values())
        return sorted((e.current[0] for e in entries), key=lambda r: (r.project, r.name))

    def stats(self, project: str, name: str) -> RouteStats:
        entry = self._entries.get((project, name))
        if entry is None:
            return _ZERO
        t = entry.traffic
        return RouteStats(in_flight=t.in_flight, queued=t.queued, requests_total=t.requests_total,
                          requests_per_second=t.rate.rate(), last_request_at=t.last_request_at)

    def upstream_stats(self, project: str, name: str) -> dict[str, UpstreamStats]:
        entry = self._entries.get((project, name))
        if entry is None:
            return {}
        now = time.monotonic()
        return {b.upstream.id: UpstreamStats(in_flight=b.traffic.in_flight,
                                             requests_per_second=b.traffic.rate.rate(now),
                                             busy_seconds=b.traffic.busy_seconds(now))
                for b in entry.current[1]}

    # --- used by the gateway on its event loop ----------------------------------------------------------

    def entry(self, project: str, name: str) -> RouteEntry | None:
        return self._entries.get((project, name))

    def entries(self) -> list[RouteEntry]:
        with self._lock:
            return list(self._entries.values())

    async def wait_for_change(self, entry: RouteEntry, seen: tuple[Route, tuple[Backend, ...]],
                              timeout: float) -> None:
        """Return once `entry` no longer holds the snapshot `seen` (or is removed), or after `timeout`.

        Passing what the caller saw closes the race where a controller updates the route between the
        caller's check and its registration as a waiter.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiter = (loop, future)
        with self._lock:
            if entry.removed or entry.current is not seen:
                return
            entry.waiters.append(waiter)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                if waiter in entry.waiters:
                    entry.waiters.remove(waiter)


def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
    for loop, future in waiters:
        try:
            loop.call_soon_threadsafe(_resolve, future)
        except RuntimeError:  # that loop is closed: nobody is waiting any more
            pass


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
