"""Prometheus metrics of the gateway, served at /-/metrics.

Why a private registry: the process-global one would also export whatever else the daemon registered, and
two gateways in one test process would collide. Why gauges are collected at scrape time from the route
table instead of being set per request: the table already counts in-flight and queued requests for the
autoscaler, so the hot path pays for counting once.

Series (labels project, route; upstream series add pod = the upstream id):
  shipyard_gateway_requests_total{code}                 requests answered, by status code
  shipyard_gateway_request_duration_seconds             arrival → last byte (histogram)
  shipyard_gateway_time_to_first_byte_seconds           arrival → response head sent (histogram)
  shipyard_gateway_retries_total                        attempts sent again to another upstream
  shipyard_gateway_in_flight, shipyard_gateway_queued   gauges
  shipyard_gateway_upstreams                            ready upstreams of the route
  shipyard_gateway_upstream_in_flight                   gauge per upstream
  shipyard_gateway_upstream_requests_total              counter per upstream; its rate is the
      shipyard_gateway_upstream_requests_per_second an HPA scales on, e.g. with the prometheus-adapter rule
      `rate(shipyard_gateway_upstream_requests_total[30s])` named `shipyard_gateway_upstream_requests_per_second`
Requests for unknown routes are counted with empty project and route labels, so that scanners probing random
paths cannot grow the label set.
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .routes import RouteTable

_DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    content_type = CONTENT_TYPE_LATEST.encode()

    def __init__(self, routes: RouteTable):
        self.registry = r = CollectorRegistry()
        labels = ["project", "route"]
        self._requests = Counter("shipyard_gateway_requests", "Requests answered by the gateway, by status code",
                                 [*labels, "code"], registry=r)
        self._duration = Histogram("shipyard_gateway_request_duration_seconds",
                                   "From request arrival to the last response byte", labels,
                                   buckets=_DURATION_BUCKETS, registry=r)
        self._ttfb = Histogram("shipyard_gateway_time_to_first_byte_seconds",
                               "From request arrival to the response head", labels, buckets=_DURATION_BUCKETS,
                               registry=r)
        self._retries = Counter("shipyard_gateway_retries", "Requests sent again to another upstream because "
                                "the previous one never received them", labels, registry=r)
        r.register(_TableCollector(routes))
        # Label lookups take a lock and hash the label tuple; the children are cached per route instead.
        self._code_children: dict[tuple[str, str, int], Counter] = {}
        self._timing_children: dict[tuple[str, str], tuple[Histogram, Histogram]] = {}

    def observe(self, project: str, route: str, code: int, duration: float, ttfb: float | None) -> None:
        key = (project, route, code)
        counter = self._code_children.get(key)
        if counter is None:
            counter = self._code_children[key] = self._requests.labels(project, route, str(code))
        counter.inc()
        timing = self._timing_children.get((project, route))
        if timing is None:
            timing = self._timing_children[(project, route)] = (self._duration.labels(project, route),
                                                                 self._ttfb.labels(project, route))
        timing[0].observe(duration)
        if ttfb is not None:
            timing[1].observe(ttfb)

    def retried(self, project: str, route: str) -> None:
        self._retries.labels(project, route).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _TableCollector:
    def __init__(self, routes: RouteTable):
        self._routes = routes

    def collect(self) -> Iterator[Metric]:
        labels = ["project", "route"]
        in_flight = GaugeMetricFamily("shipyard_gateway_in_flight", "Requests being proxied", labels=labels)
        queued = GaugeMetricFamily("shipyard_gateway_queued", "Requests held while the route has no upstream",
                                   labels=labels)
        upstreams = GaugeMetricFamily("shipyard_gateway_upstreams", "Ready upstreams of the route", labels=labels)
        up_in_flight = GaugeMetricFamily("shipyard_gateway_upstream_in_flight", "Requests being proxied to the "
                                         "upstream", labels=[*labels, "pod"])
        up_requests = CounterMetricFamily("shipyard_gateway_upstream_requests", "Requests sent to the upstream",
                                          labels=[*labels, "pod"])
        for entry in self._routes.entries():
            route, backends = entry.current
            key = [route.project, route.name]
            in_flight.add_metric(key, entry.traffic.in_flight)
            queued.add_metric(key, entry.traffic.queued)
            upstreams.add_metric(key, len(backends))
            for b in backends:
                up_in_flight.add_metric([*key, b.upstream.id], b.traffic.in_flight)
                up_requests.add_metric([*key, b.upstream.id], b.traffic.requests_total)
        yield from (in_flight, queued, upstreams, up_in_flight, up_requests)
