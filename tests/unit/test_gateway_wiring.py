"""The adapters between the gateway and the platform: the HPA's in-flight metric is a mean over time."""

from __future__ import annotations

from shipyard.controllers.serving import RouteTarget, Upstream
from shipyard.gateway.routes import RouteTable
from shipyard.gateway_wiring import GatewayTraffic
from shipyard.runtime.protocol import IN_FLIGHT_METRIC


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_hpa_reads_mean_concurrency_between_reads_not_one_count(monkeypatch):
    import shipyard.gateway.routes as routes_module

    clock = Clock(1000.0)
    monkeypatch.setattr(routes_module.time, "monotonic", clock)  # the table reads counters on the same clock
    table = RouteTable()
    traffic = GatewayTraffic(table, "http://gw", clock=clock)
    traffic.set_route(RouteTarget("p", "chat", "Endpoint", False, (Upstream("pod-a", "127.0.0.1", 1),), False))
    upstream = table.entry("p", "chat").current[1][0].traffic
    for _ in range(6):  # a burst of six requests arrives at once …
        upstream.begin(1000.0)
    assert traffic.pod_metric("p", "pod-a", IN_FLIGHT_METRIC) == 6.0  # first read: the count itself
    for _ in range(6):  # … and is over 0.1 s later
        upstream.end(1000.1)
    clock.now = 1001.0
    # Over the second since the last read: 6 requests × 0.1 s = 0.6 request-seconds → mean 0.6, not 0 or 6.
    assert abs(traffic.pod_metric("p", "pod-a", IN_FLIGHT_METRIC) - 0.6) < 1e-9
    clock.now = 1001.1
    assert abs(traffic.pod_metric("p", "pod-a", IN_FLIGHT_METRIC) - 0.6) < 1e-9  # too soon: the last mean
    upstream.begin(1001.5)
    clock.now = 1002.0
    assert abs(traffic.pod_metric("p", "pod-a", IN_FLIGHT_METRIC) - 0.5) < 1e-9  # one request for half a second
    assert traffic.pod_metric("p", "pod-gone", IN_FLIGHT_METRIC) is None
