"""Which upstream gets the next request: least outstanding requests over two random choices.

Why two choices instead of the global minimum: with several gateways (or a counter that lags) everyone
chasing the single least-loaded replica herds onto it; comparing two random replicas keeps most of the
benefit and none of the herding (Mitzenmacher, "The Power of Two Choices"). With two upstreams it is exact.

Passive health: an upstream that refused a connection is skipped for UNREACHABLE_SECONDS, unless nothing
else is left — a restarting single replica must still be tried, or its route would serve nothing at all.
"""

from __future__ import annotations

import random
from typing import Sequence

from .routes import Backend

UNREACHABLE_SECONDS = 2.0

_random = random.random


def pick(backends: Sequence[Backend], now: float, tried: Sequence[Backend] = ()) -> Backend | None:
    """The backend for the next attempt (None when every backend was tried); `now` is time.monotonic()."""
    candidates = [b for b in backends if b not in tried] if tried else backends
    healthy = [b for b in candidates if b.traffic.unreachable_until <= now]
    if not healthy:
        healthy = candidates
    n = len(healthy)
    if n <= 1:
        return healthy[0] if n else None
    i = int(_random() * n)
    j = int(_random() * (n - 1))
    if j >= i:
        j += 1
    a, b = healthy[i], healthy[j]
    return a if a.traffic.in_flight <= b.traffic.in_flight else b


def mark_unreachable(backend: Backend, now: float) -> None:
    backend.traffic.unreachable_until = now + UNREACHABLE_SECONDS
