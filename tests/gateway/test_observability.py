"""Metrics per route and per upstream, and an access log without secrets."""

from __future__ import annotations

import logging
import threading

from tests.conftest import wait_for
from tests.gateway.conftest import KEY, metric_value, route


def test_metrics_expose_route_and_upstream_series(gateway, start_upstream):
    a, b = start_upstream("pod-a"), start_upstream("pod-b")
    gateway.table.set_route(route("llm", a.upstream, b.upstream))
    gateway.table.set_route(route("idle", scalable_from_zero=True))
    slow = threading.Thread(target=_get, args=(gateway, "/proj/llm/slow"))
    slow.start()
    wait_for(lambda: a.app.in_flight + b.app.in_flight == 1, timeout=10, message="a request in flight")
    busy = "pod-a" if a.app.in_flight else "pod-b"
    with gateway.client() as client:
        for _ in range(6):
            client.get("/proj/llm/x")
        client.get("/proj/missing/x")
        client.get("/nowhere")
        text = client.get("/-/metrics").text
    labels = {"project": "proj", "route": "llm"}
    assert metric_value(text, "shipyard_gateway_requests_total", code="200", **labels) == 6
    assert metric_value(text, "shipyard_gateway_requests_total", code="404", project="", route="") == 2
    assert metric_value(text, "shipyard_gateway_request_duration_seconds_count", **labels) == 6
    assert metric_value(text, "shipyard_gateway_time_to_first_byte_seconds_count", **labels) == 6
    assert metric_value(text, "shipyard_gateway_in_flight", **labels) == 1
    assert metric_value(text, "shipyard_gateway_queued", project="proj", route="idle") == 0
    assert metric_value(text, "shipyard_gateway_upstreams", **labels) == 2
    assert metric_value(text, "shipyard_gateway_upstream_in_flight", pod=busy, **labels) == 1
    assert metric_value(text, "shipyard_gateway_upstream_requests_total", pod="pod-a", **labels) + \
        metric_value(text, "shipyard_gateway_upstream_requests_total", pod="pod-b", **labels) == 7
    stats = gateway.table.stats("proj", "llm")
    assert (stats.in_flight, stats.requests_total) == (1, 7)
    assert stats.requests_per_second > 0 and stats.last_request_at is not None
    per_upstream = gateway.table.upstream_stats("proj", "llm")
    assert per_upstream[busy].in_flight == 1 and per_upstream[busy].requests_per_second > 0
    a.app.gate.set()
    b.app.gate.set()
    slow.join(10)


def test_access_log_has_one_line_per_request_and_no_secret(gateway, start_upstream, caplog):
    upstream = start_upstream("pod-a")
    gateway.table.set_route(route("llm", upstream.upstream))
    secret_query = "sk-query-secret-987"
    with caplog.at_level(logging.DEBUG):
        with gateway.client() as client:
            assert client.get(f"/proj/llm/v1/models?api_key={secret_query}").status_code == 200
            assert client.get("/proj/llm/v1/models", headers={"Authorization": "Bearer sk-wrong-secret"}
                              ).status_code == 401
        wait_for(lambda: len([r for r in caplog.records if r.name == "shipyard.gateway.access"]) == 2,
                 timeout=10, message="two access log lines")
    lines = [r.getMessage() for r in caplog.records if r.name == "shipyard.gateway.access"]
    assert lines[0].startswith("GET /proj/llm/v1/models upstream=pod-a status=200 bytes=")
    assert "duration_ms=" in lines[0]
    assert "status=401" in lines[1]
    # everything logged in this process except by the test's own HTTP client
    everything = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore")))
    for secret in (KEY, secret_query, "sk-wrong-secret"):
        assert secret not in everything


def _get(gateway, path: str) -> None:
    with gateway.client() as client:
        client.get(path)
