"""The route table, its traffic figures and the balancer, without a network."""

from __future__ import annotations

import asyncio
import threading

import pytest

from shipyard.gateway import Route, RouteStats, RouteTable, Upstream
from shipyard.gateway.balancer import UNREACHABLE_SECONDS, mark_unreachable, pick
from shipyard.gateway.routes import Backend
from shipyard.gateway.traffic import RateWindow, UpstreamTraffic

A, B = Upstream("a", "127.0.0.1", 9001), Upstream("b", "127.0.0.1", 9002)


def route(*upstreams: Upstream, name: str = "llm") -> Route:
    return Route(project="p", name=name, kind="Endpoint", public=False, upstreams=upstreams, scalable_from_zero=True)


def test_table_get_set_remove_and_stats_of_unknown_routes():
    table = RouteTable()
    assert table.get("p", "llm") is None
    assert table.stats("p", "llm") == RouteStats(0, 0, 0, 0.0, None)
    assert table.upstream_stats("p", "llm") == {}
    table.set_route(route(A))
    assert table.get("p", "llm") == route(A)
    table.set_route(route(A, B, name="other"))
    assert [r.name for r in table.routes()] == ["llm", "other"]
    table.remove_route("p", "llm")
    table.remove_route("p", "llm")  # idempotent
    assert table.get("p", "llm") is None


def test_duplicate_upstream_ids_are_rejected():
    with pytest.raises(ValueError, match="twice"):
        RouteTable().set_route(route(A, Upstream("a", "127.0.0.1", 9009)))


def test_upstream_counters_survive_updates_that_keep_the_upstream():
    table = RouteTable()
    table.set_route(route(A, B))
    entry = table.entry("p", "llm")
    backends = {b.upstream.id: b for b in entry.current[1]}
    backends["a"].traffic.in_flight = 3
    backends["b"].traffic.in_flight = 1
    table.set_route(route(A, Upstream("b", "127.0.0.1", 9999)))  # b replaced by a new pod at a new address
    stats = table.upstream_stats("p", "llm")
    assert {k: (v.in_flight, v.requests_per_second) for k, v in stats.items()} == {"a": (3, 0.0), "b": (0, 0.0)}
    assert stats["b"].busy_seconds == 0.0  # a new upstream starts its own counters
    assert entry.current[1][0] is backends["a"]


def test_rate_window_counts_recent_seconds_only():
    now = [1000.5]
    window = RateWindow(10, clock=lambda: now[0])
    for _ in range(95):
        window.add()
    assert window.rate() == pytest.approx(95 / 9.5)
    now[0] = 1009.9  # the events are still inside the last 10 s
    assert window.rate() == pytest.approx(95 / 9.9)
    now[0] = 1010.0  # their second has left the window
    assert window.rate() == 0.0
    window.add()
    assert window.rate() == pytest.approx(1 / 9.0)


def test_a_waiter_is_woken_from_another_thread_when_upstreams_appear():
    table = RouteTable()
    table.set_route(route())
    entry = table.entry("p", "llm")

    async def wait() -> bool:
        seen = entry.current
        threading.Thread(target=table.set_route, args=(route(A),)).start()
        await table.wait_for_change(entry, seen, timeout=30)
        return bool(entry.current[1])

    assert asyncio.run(wait())


def test_wait_for_change_returns_at_once_if_the_route_changed_before_registration():
    table = RouteTable()
    table.set_route(route())
    entry = table.entry("p", "llm")
    seen = entry.current
    table.set_route(route(A))

    async def wait() -> None:
        await asyncio.wait_for(table.wait_for_change(entry, seen, timeout=30), 5)

    asyncio.run(wait())


def test_wait_for_change_times_out_and_forgets_the_waiter():
    table = RouteTable()
    table.set_route(route())
    entry = table.entry("p", "llm")
    asyncio.run(table.wait_for_change(entry, entry.current, timeout=0.01))
    assert entry.waiters == []


def _backend(upstream: Upstream, in_flight: int = 0) -> Backend:
    backend = Backend(upstream, UpstreamTraffic())
    backend.traffic.in_flight = in_flight
    return backend


def test_pick_prefers_fewer_outstanding_requests():
    busy, idle = _backend(A, in_flight=5), _backend(B, in_flight=0)
    assert {pick([busy, idle], now=0.0).upstream.id for _ in range(50)} == {"b"}


def test_pick_spreads_ties_over_both():
    a, b = _backend(A), _backend(B)
    assert {pick([a, b], now=0.0).upstream.id for _ in range(200)} == {"a", "b"}


def test_pick_skips_tried_and_unreachable_backends_unless_nothing_else_is_left():
    a, b = _backend(A), _backend(B, in_flight=10)
    mark_unreachable(a, now=100.0)
    assert pick([a, b], now=100.0).upstream.id == "b"
    assert pick([a, b], now=100.0 + UNREACHABLE_SECONDS).upstream.id == "a"  # the mark expired
    assert pick([a], now=100.0).upstream.id == "a"  # the only one is still tried
    assert pick([a, b], now=100.0, tried=[b]).upstream.id == "a"
    assert pick([a, b], now=0.0, tried=[a, b]) is None
    assert pick([], now=0.0) is None
