"""Per-key request rates: a token bucket per API key, in this gateway process's memory.

Why a token bucket: it allows a key's burst at once and then its steady rate, and a refusal can say exactly
when the next request would pass (Retry-After). Why in memory: the check runs on every request of a limited
key, so it may cost a lock and a few float operations, not a round trip. With several gateway replicas each
keeps its own buckets, so a key's effective rate is up to its rate times the replicas a client reaches (a
documented limit, not a quota system). Time is the monotonic clock: a wall-clock step must neither refill
nor drain a bucket.

Thread and async safety: one lock guards the buckets. The gateway's event loop is the only caller in practice
(so it is never contended), and the check never awaits, so no request can interleave within one.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable

from .auth import KeyGrant, default_burst

SWEEP_AT = 4096  # buckets: past this many, full ones are dropped (a full bucket is the same as a new one)


class TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "updated")

    def __init__(self, rate: float, burst: int, now: float):
        self.rate, self.burst = rate, burst
        self.tokens, self.updated = float(burst), now

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def take(self, now: float) -> float:
        """0.0 if a request may pass now (it takes a token); else the seconds until a token is there."""
        tokens = self.tokens
        if now > self.updated:  # refill inline: this runs per request
            tokens = min(float(self.burst), tokens + (now - self.updated) * self.rate)
            self.updated = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / self.rate


class RateLimiter:
    """The buckets of every rate-limited key this gateway has seen, by the grant's id."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}
        self._sweep_at = SWEEP_AT

    def retry_after(self, grant: KeyGrant) -> int:
        """0 if the key may make this request now (and it is counted); else the whole seconds (≥ 1) to wait,
        for a Retry-After header."""
        rate = grant.requests_per_second
        if not rate or rate <= 0:
            return 0
        burst = grant.burst or default_burst(rate)
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(grant.id)
            if bucket is None or bucket.rate != rate or bucket.burst != burst:  # new key, or its limit changed
                if len(self._buckets) >= self._sweep_at:
                    self._sweep(now)
                bucket = self._buckets[grant.id] = TokenBucket(rate, burst, now)
            wait = bucket.take(now)
        return 0 if wait == 0.0 else max(1, math.ceil(wait))

    def _sweep(self, now: float) -> None:
        """Forget full buckets (keys idle long enough to have refilled, revoked ones among them): memory stays
        bounded by the keys that are busy, and forgetting a full bucket changes no answer."""
        for key, bucket in list(self._buckets.items()):
            bucket.refill(now)
            if bucket.tokens >= bucket.burst:
                del self._buckets[key]
        self._sweep_at = max(SWEEP_AT, 2 * len(self._buckets))

    def __len__(self) -> int:
        return len(self._buckets)
