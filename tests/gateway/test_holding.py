"""Requests held while a route has no upstream: released when one appears, refused within their bounds."""

from __future__ import annotations

import threading
import time

import httpx

from tests.conftest import wait_for
from tests.gateway.conftest import route


def _send_in_background(gateway, count: int, path: str = "/proj/llm/v1/models") -> tuple[list, list[threading.Thread]]:
    results: list = []

    def one() -> None:
        try:
            with gateway.client() as client:
                r = client.get(path)
                results.append((r.status_code, r.headers.get("retry-after"), r.json()))
        except httpx.HTTPError as exc:
            results.append(repr(exc))

    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    return results, threads


def test_held_requests_complete_once_an_upstream_appears_and_activate_is_called_once(gateway, start_upstream):
    gateway.table.set_route(route("llm", scalable_from_zero=True))
    results, threads = _send_in_background(gateway, 5)
    wait_for(lambda: gateway.table.stats("proj", "llm").queued == 5, timeout=20, message="5 held requests")
    wait_for(lambda: gateway.activations, timeout=10, message="activate() to be called")
    upstream = start_upstream("woken-0")
    gateway.table.set_route(route("llm", upstream.upstream, scalable_from_zero=True))
    for t in threads:
        t.join(20)
    assert [r[0] for r in results] == [200] * 5, results
    assert gateway.activations == [("proj", "llm")]
    assert gateway.table.stats("proj", "llm").queued == 0


def test_a_new_burst_after_scaling_to_zero_activates_again(gateway, start_upstream):
    upstream = start_upstream("up-0")
    gateway.table.set_route(route("llm", upstream.upstream, scalable_from_zero=True))
    for _ in range(2):
        gateway.table.set_route(route("llm", scalable_from_zero=True))  # scaled to zero
        results, threads = _send_in_background(gateway, 1)
        wait_for(lambda: gateway.table.stats("proj", "llm").queued == 1, timeout=20, message="a held request")
        gateway.table.set_route(route("llm", upstream.upstream, scalable_from_zero=True))
        threads[0].join(20)
        assert results[0][0] == 200
    assert gateway.activations == [("proj", "llm")] * 2


def test_hold_timeout_is_503_with_retry_after(make_gateway):
    gateway = make_gateway(hold_timeout=0.3)
    gateway.table.set_route(route("llm", scalable_from_zero=True))
    started = time.monotonic()
    with gateway.client() as client:
        r = client.get("/proj/llm/")
    assert time.monotonic() - started >= 0.3
    assert r.status_code == 503 and r.headers["retry-after"]
    assert r.json()["error"]["code"] == "no_ready_replica"
    assert gateway.activations == [("proj", "llm")]


def test_a_route_that_cannot_scale_from_zero_is_held_only_briefly(make_gateway, start_upstream):
    gateway = make_gateway(hold_timeout=60, restart_hold_timeout=0.2)
    gateway.table.set_route(route("llm"))
    with gateway.client() as client:
        r = client.get("/proj/llm/")
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_ready_replica"
    assert gateway.activations == []
    # …but it is held: a replica coming back within the bound answers the request
    gateway = make_gateway(restart_hold_timeout=30)
    gateway.table.set_route(route("llm"))
    results, threads = _send_in_background(gateway, 1)
    wait_for(lambda: gateway.table.stats("proj", "llm").queued == 1, timeout=20, message="a held request")
    gateway.table.set_route(route("llm", start_upstream("back-0").upstream))
    threads[0].join(20)
    assert results[0][0] == 200


def test_queue_limit_refuses_at_once_with_503(make_gateway, start_upstream):
    gateway = make_gateway(queue_limit=2)
    gateway.table.set_route(route("llm", scalable_from_zero=True))
    results, threads = _send_in_background(gateway, 2)
    wait_for(lambda: gateway.table.stats("proj", "llm").queued == 2, timeout=20, message="2 held requests")
    with gateway.client() as client:
        r = client.get("/proj/llm/")
    assert r.status_code == 503 and r.json()["error"]["code"] == "queue_full" and r.headers["retry-after"]
    gateway.table.set_route(route("llm", start_upstream("late-0").upstream, scalable_from_zero=True))
    for t in threads:
        t.join(20)
    assert [r[0] for r in results] == [200, 200]


def test_a_route_deleted_while_requests_wait_answers_404(gateway):
    gateway.table.set_route(route("llm", scalable_from_zero=True))
    results, threads = _send_in_background(gateway, 1)
    wait_for(lambda: gateway.table.stats("proj", "llm").queued == 1, timeout=20, message="a held request")
    gateway.table.remove_route("proj", "llm")
    threads[0].join(20)
    assert results[0][0] == 404


def test_a_client_that_gives_up_leaves_the_queue(gateway):
    gateway.table.set_route(route("llm", scalable_from_zero=True))
    with gateway.client() as client:
        try:
            client.get("/proj/llm/", timeout=httpx.Timeout(30, read=0.3))
        except httpx.ReadTimeout:
            pass
    wait_for(lambda: gateway.table.stats("proj", "llm").queued == 0, timeout=10, message="the queue to empty")


def test_a_request_coming_back_to_the_hold_keeps_its_first_deadline():
    import asyncio

    from shipyard.gateway import RouteTable, Upstream
    from shipyard.gateway.holding import Holder

    table = RouteTable()
    table.set_route(route("llm", Upstream("a", "127.0.0.1", 9)))
    holder = Holder(table, None, hold_timeout=120, restart_hold_timeout=10, queue_limit=4)
    entry = table.entry("proj", "llm")
    assert asyncio.run(holder.until_ready(entry)) == (None, None)  # no hold: no deadline set
    assert asyncio.run(holder.until_ready(entry, deadline=123.0)) == (None, 123.0)
    table.set_route(route("llm"))
    refusal, deadline = asyncio.run(holder.until_ready(entry, deadline=0.0))  # a deadline already past
    assert refusal is not None and refusal.code == "no_ready_replica" and deadline == 0.0
