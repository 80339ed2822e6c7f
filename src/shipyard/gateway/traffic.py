"""Traffic counters the gateway keeps per route and per upstream, readable from any thread.

Why this shape: the gateway's event loop is the only writer (one increment per request on the hot path, so
no lock there), while the autoscaler and the local HPA read from their own threads. Plain int attributes
are read atomically under the GIL; the rate window, whose buckets are reset as time moves on, takes a small
lock so that a reader never sums a bucket that is half rolled over.
"""

from __future__ import annotations

import threading
import time

RATE_WINDOW_SECONDS = 10


class RateWindow:
    """Events per second over the last `seconds` whole seconds plus the current partial one."""

    __slots__ = ("_seconds", "_counts", "_stamps", "_lock", "_clock")

    def __init__(self, seconds: int = RATE_WINDOW_SECONDS, clock=time.monotonic):
        self._seconds = seconds
        self._counts = [0] * seconds
        self._stamps = [-1] * seconds
        self._lock = threading.Lock()
        self._clock = clock

    def add(self, now: float | None = None) -> None:
        second = int(self._clock() if now is None else now)
        slot = second % self._seconds
        with self._lock:
            if self._stamps[slot] != second:
                self._stamps[slot] = second
                self._counts[slot] = 0
            self._counts[slot] += 1

    def rate(self, now: float | None = None) -> float:
        now = self._clock() if now is None else now
        second = int(now)
        oldest = second - self._seconds + 1
        with self._lock:
            total = sum(c for c, s in zip(self._counts, self._stamps) if s >= oldest)
        # The current second is only partly over: dividing by the time the window really spans keeps a
        # steady rate steady instead of dipping at the start of every second.
        span = self._seconds - 1 + (now - second)
        return total / span if span > 0 else 0.0


class UpstreamTraffic:
    """Counters of one upstream (a pod): requests being proxied to it and its recent request rate.

    `busy_seconds` integrates in-flight over time (request-seconds), so a reader that samples it twice gets
    the *average* concurrency in between: what an autoscaler should act on, as Knative's does, rather than
    one instantaneous count that a burst of short requests makes jump.
    """

    __slots__ = ("in_flight", "requests_total", "rate", "unreachable_until", "_busy", "_changed")

    def __init__(self) -> None:
        self.in_flight = 0
        self.requests_total = 0
        self.rate = RateWindow()
        self._busy = 0.0
        self._changed = time.monotonic()
        # Passive health: monotonic time until which the balancer avoids this upstream (it refused a
        # connection); kept here because it belongs to the same upstream as long as the route lists it.
        self.unreachable_until = 0.0

    def begin(self, now: float) -> None:
        self._advance(now)
        self.in_flight += 1

    def end(self, now: float) -> None:
        self._advance(now)
        self.in_flight -= 1

    def _advance(self, now: float) -> None:
        self._busy += self.in_flight * max(0.0, now - self._changed)
        self._changed = now

    def busy_seconds(self, now: float) -> float:
        """Request-seconds so far (monotonic clock); read from any thread (a stale pair is off by one step)."""
        return self._busy + self.in_flight * max(0.0, now - self._changed)


class RouteTraffic:
    """Counters of one route; `queued` are requests held while the route has no upstream."""

    __slots__ = ("in_flight", "queued", "requests_total", "rate", "last_request_at", "activation_pending")

    def __init__(self) -> None:
        self.in_flight = 0
        self.queued = 0
        self.requests_total = 0
        self.rate = RateWindow()
        self.last_request_at: float | None = None
        self.activation_pending = False

    def arrived(self, monotonic_now: float) -> None:
        self.requests_total += 1
        self.rate.add(monotonic_now)
        self.last_request_at = time.time()
