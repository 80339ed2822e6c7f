"""The scale-to-zero policy as a table: (idle seconds, idle now, traffic, active since, last request) → idle?"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from shipyard.controllers.serving.scale_to_zero import decide
from shipyard.controllers.serving.traffic import TrafficStats

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
QUIET = TrafficStats(in_flight=0, queued=0, requests_per_second=0.0, last_request_at=None)
BUSY = TrafficStats(in_flight=2, queued=0, requests_per_second=3.0, last_request_at=NOW.timestamp())
WAITING = TrafficStats(in_flight=0, queued=1, requests_per_second=0.0, last_request_at=NOW.timestamp())


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


@pytest.mark.parametrize("idle_seconds, idle_now, stats, active_since, last_request, expect_idle, reason", [
    (None, False, QUIET, ago(9999), None, False, "AlwaysOn"),            # not configured: never to zero
    (60, False, QUIET, ago(30), None, False, "Active"),                  # woke 30 s ago: give it its minute
    (60, False, QUIET, ago(600), ago(59), False, "Active"),              # last request 59 s ago
    (60, False, QUIET, ago(600), ago(61), True, "ScaledToZero"),         # quiet for longer than the window
    (60, False, None, ago(600), None, True, "ScaledToZero"),             # no traffic ever (no gateway stats)
    (60, False, BUSY, ago(600), ago(600), False, "Active"),              # in flight, whatever the times say
    (60, True, QUIET, ago(600), ago(600), True, "Idle"),                 # stays asleep
    (60, True, WAITING, ago(600), ago(600), False, "Activated"),         # a held request wakes it
    (60, True, BUSY, ago(600), ago(600), False, "Activated"),
])
def test_scale_to_zero(idle_seconds, idle_now, stats, active_since, last_request, expect_idle, reason):
    decision = decide(idle_seconds, idle_now, stats, active_since, last_request, NOW)
    assert (decision.idle, decision.reason) == (expect_idle, reason)
    assert decision.message
