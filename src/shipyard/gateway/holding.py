"""What happens to a request that finds its route without a ready upstream: it waits, within bounds.

Why hold instead of failing: an Endpoint scaled to zero, or a single replica restarting, has no upstream for
a few seconds to a minute; a client that gets a 503 at once must implement its own retry loop, while a client
whose request is held simply sees a slower answer. Bounds keep that honest: at most `queue_limit` requests
wait per route (more get 503 at once), and none longer than `hold_timeout` (scale from zero: model loading
takes time) or `restart_hold_timeout` (a route that cannot scale from zero: only a restart can help).

`activate(project, name)` asks the control plane to scale the route up. It is called once per burst — when
the first request of a burst is held, not for every request — and again only after a burst ended without
an upstream appearing, so it must be idempotent. It runs in a worker thread: it may write to the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable

from .routes import RouteEntry, RouteTable

log = logging.getLogger("shipyard.gateway")

Activate = Callable[[str, str], None]


@dataclass(frozen=True)
class Refusal:
    """Why a held request is answered by the gateway instead of an upstream."""

    status: int
    message: str
    code: str
    retry_after: int | None = None


class Holder:
    def __init__(self, routes: RouteTable, activate: Activate | None, hold_timeout: float,
                 restart_hold_timeout: float, queue_limit: int):
        self._routes = routes
        self._activate = activate
        self.hold_timeout = hold_timeout
        self.restart_hold_timeout = restart_hold_timeout
        self.queue_limit = queue_limit

    async def until_ready(self, entry: RouteEntry,
                          deadline: float | None = None) -> tuple[Refusal | None, float | None]:
        """Wait until the route has an upstream. Returns (None, deadline) when it has one, else the refusal.

        The deadline is returned so that a request that comes back here (its upstream vanished between two
        attempts) does not get a fresh timeout each time.
        """
        seen = entry.current
        if seen[1]:
            return None, deadline
        route = seen[0]
        traffic = entry.traffic
        if traffic.queued >= self.queue_limit:
            return Refusal(503, f"{route.kind} {route.project}/{route.name} has no ready replica and "
                           f"{self.queue_limit} requests are already waiting", "queue_full", retry_after=1), deadline
        now = time.monotonic()
        if deadline is None:
            deadline = now + (self.hold_timeout if route.scalable_from_zero else self.restart_hold_timeout)
        traffic.queued += 1
        try:
            if route.scalable_from_zero and not traffic.activation_pending and self._activate is not None:
                traffic.activation_pending = True
                self._start_activation(route.project, route.name)
            while True:
                if entry.removed:
                    return Refusal(404, f"{route.kind} {route.project}/{route.name} was deleted",
                                   "route_not_found"), deadline
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return Refusal(503, f"{route.kind} {route.project}/{route.name} has no ready replica "
                                   "(timed out waiting for one)", "no_ready_replica", retry_after=5), deadline
                await self._routes.wait_for_change(entry, seen, remaining)
                seen = entry.current
                if seen[1]:
                    return None, deadline
        finally:
            traffic.queued -= 1
            if traffic.queued == 0 and not entry.current[1]:
                # the burst is over without an upstream: the next request asks for activation again
                traffic.activation_pending = False

    def _start_activation(self, project: str, name: str) -> None:
        assert self._activate is not None
        activate = self._activate
        future = asyncio.get_running_loop().run_in_executor(None, activate, project, name)

        def done(f: asyncio.Future[None]) -> None:
            if not f.cancelled() and f.exception() is not None:
                log.error("activating %s/%s failed: %r", project, name, f.exception())

        future.add_done_callback(done)
