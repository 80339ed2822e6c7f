"""When an Endpoint or App goes to zero replicas, and when it comes back (KEDA's split of work: the HPA
scales between 1 and max, this policy between 0 and 1). Pure: the caller passes the clock's `now`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .traffic import TrafficStats


@dataclass(frozen=True)
class Decision:
    idle: bool
    reason: str
    message: str


def decide(idle_seconds: int | None, currently_idle: bool, stats: TrafficStats | None,
           active_since: datetime | None, last_request: datetime | None, now: datetime) -> Decision:
    """`active_since`: when replicas were last asked for (creation or activation); `last_request`: the last
    request the gateway saw. Both bound the idle time, so a fresh or just-woken endpoint is not put back to
    sleep before it has had `idle_seconds` to get traffic."""
    busy = stats is not None and (stats.in_flight > 0 or stats.queued > 0)
    if idle_seconds is None:
        return Decision(False, "AlwaysOn", "scaleToZero is not set")
    if currently_idle:
        if busy:
            return Decision(False, "Activated", f"{stats.queued} request(s) waiting at the gateway")  # type: ignore[union-attr]
        return Decision(True, "Idle", f"no requests for {idle_seconds}s or more")
    if busy:
        return Decision(False, "Active", "requests in flight")
    latest = max((t for t in (active_since, last_request) if t is not None), default=None)
    if latest is not None and now - latest < timedelta(seconds=idle_seconds):
        return Decision(False, "Active", "recent requests")
    return Decision(True, "ScaledToZero", f"no requests for {idle_seconds}s")
