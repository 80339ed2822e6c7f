"""The gateway apart from the operator: routes built from the API's objects (gateway_cluster), and the traffic
reports through which its replicas wake routes from zero and keep them awake (gateway_reports)."""

from __future__ import annotations

from typing import Any

from shipyard.gateway.routes import RouteTable
from shipyard.gateway_cluster import ClusterRoutes, route_target
from shipyard.gateway_reports import HEARTBEAT_SECONDS, STALE_SECONDS, ReportedTraffic, TrafficReporter
from shipyard.gateway_wiring import GatewayTraffic


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeApi:
    """The few KubeApi calls the gateway and the operator make for routes and reports."""

    def __init__(self) -> None:
        self.objects: dict[str, list[dict[str, Any]]] = {}
        self.applied: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str | None, str]] = []

    def list(self, kind: str, namespace: str | None = None, labels: dict[str, str] | None = None) -> list[dict]:
        return [o for o in self.objects.get(kind, [])
                if all((o["metadata"].get("labels") or {}).get(k) == v for k, v in (labels or {}).items())]

    def apply(self, obj: dict[str, Any], force: bool = True, field_manager: str | None = None) -> dict[str, Any]:
        self.applied.append(obj)
        return obj

    def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        self.deleted.append((kind, namespace, name))
        return True


def endpoint(name: str, **spec: Any) -> dict[str, Any]:
    return {"kind": "Endpoint", "metadata": {"name": name, "namespace": "research"},
            "spec": {"model": "/models/m", "volumes": [{"name": "models", "mountPath": "/models"}], **spec}}


def pod(name: str, owner: str, kind: str = "endpoint", ready: bool = True, ip: str = "10.0.0.5") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "research",
                         "labels": {"shipyard.dev/kind": kind, "shipyard.dev/name": owner}},
            "spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8000}]}]},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_a_route_is_what_the_controller_would_publish():
    route, routed = route_target("Endpoint", endpoint("chat", public=True, scaleToZero={"idleSeconds": 60}),
                                 [pod("chat-b", "chat"), pod("chat-a", "chat", ready=False)], {})
    assert route is not None and route.public and route.scalable_from_zero
    assert [(u.id, u.host, u.port) for u in route.upstreams] == [("chat-b", "10.0.0.5", 8000)]
    assert routed == {"chat-b": 0}
    gone, _ = route_target("Endpoint", {**endpoint("chat"), "metadata": {
        "name": "chat", "namespace": "research", "deletionTimestamp": "2026-12-07T00:00:00Z"}}, [], {})
    assert gone is None  # being deleted: no route, as the controller's finalizer removes it
    invalid, _ = route_target("Endpoint", {"metadata": {"name": "x", "namespace": "research"},
                                           "spec": {"model": "/nowhere"}}, [], {})
    assert invalid is None
    ide, _ = route_target("Workspace", {"metadata": {"name": "ws", "namespace": "research"},
                                        "spec": {"idleTimeout": 600}}, [pod("ws-0", "ws", "workspace")], {})
    assert ide is not None and ide.keep_prefix and ide.public and ide.scalable_from_zero
    suspended, _ = route_target("Workspace", {"metadata": {"name": "ws", "namespace": "research"},
                                              "spec": {"idleTimeout": 600, "suspend": True}}, [], {})
    assert suspended is not None and not suspended.scalable_from_zero  # suspended by hand: never woken


def test_cluster_routes_follow_the_api_and_drop_what_was_deleted():
    api = FakeApi()
    api.objects = {"Endpoint": [endpoint("chat")], "Pod": [pod("chat-a", "chat")]}
    table = RouteTable()
    routes = ClusterRoutes(api, GatewayTraffic(table, ""))  # type: ignore[arg-type]
    routes.resync()
    assert routes.synced.is_set()
    route = table.get("research", "chat")
    assert route is not None and [u.id for u in route.upstreams] == ["chat-a"] and not route.public
    api.objects = {"Endpoint": [], "Pod": []}  # deleted while no watch was connected
    routes.resync()
    assert table.get("research", "chat") is None

    # A pod that becomes ready while a relist is under way: the watch's news is newer than the list's.
    api.objects = {"Endpoint": [endpoint("chat")], "Pod": [pod("chat-b", "chat", ready=False)]}
    listing = api.list

    def list_while_the_pod_becomes_ready(kind: str, namespace: str | None = None, labels=None) -> list[dict]:
        found = listing(kind, namespace, labels)
        if kind == "Pod" and labels == {"shipyard.dev/kind": "endpoint"}:
            routes.observe_pod("Endpoint", "MODIFIED", pod("chat-b", "chat"))
        return found
    api.list = list_while_the_pod_becomes_ready  # type: ignore[method-assign]
    routes.resync()
    route = table.get("research", "chat")
    assert route is not None and [u.id for u in route.upstreams] == ["chat-b"]
    routes.observe_resource("Endpoint", "DELETED", endpoint("chat"))
    assert table.get("research", "chat") is None


def test_a_held_request_is_reported_at_once_and_wakes_its_route_in_the_operator():
    clock = Clock(1000.0)
    table = RouteTable()
    GatewayTraffic(table, "").set_route(route_target("Endpoint", endpoint("chat", scaleToZero={"idleSeconds": 60}),
                                                     [], {})[0])
    gateway_api, operator_api = FakeApi(), FakeApi()
    reporter = TrafficReporter(gateway_api, table, "shipyard-system", "gw-a", clock=clock)  # type: ignore[arg-type]
    assert reporter.report() and not reporter.report()  # an empty report first, then only changes
    entry = table.entry("research", "chat")
    entry.traffic.queued = 1  # what the holder does for a request with no upstream
    entry.traffic.last_request_at = 999.0
    reporter.activate("research", "chat")
    written = gateway_api.applied[-1]
    assert written["kind"] == "ConfigMap" and written["metadata"]["namespace"] == "shipyard-system"

    woken: list[tuple[str, str, str]] = []
    traffic = ReportedTraffic(operator_api, "shipyard-system", "http://gw", on_demand=lambda *k: woken.append(k),
                              clock=clock)  # type: ignore[arg-type]
    traffic.observe("ADDED", written)
    assert woken == [("Endpoint", "research", "chat")]
    stats = traffic.stats("research", "chat")
    assert stats is not None and stats.queued == 1 and stats.last_request_at == 999.0
    assert traffic.stats("research", "other") is None

    # Unchanged: not rewritten, until the heartbeat keeps it fresh.
    assert not reporter.report()
    clock.now += HEARTBEAT_SECONDS
    assert reporter.report()
    reporter.stop()
    assert gateway_api.deleted == [("ConfigMap", "shipyard-system", "shipyard-gateway-report-gw-a")]


def test_reports_of_several_replicas_are_summed_and_a_dead_ones_counts_no_longer_count():
    clock = Clock(5000.0)
    traffic = ReportedTraffic(FakeApi(), "shipyard-system", "http://gw/", clock=clock)  # type: ignore[arg-type]

    def report(name: str, at: float, in_flight: int, last: float) -> dict[str, Any]:
        import json

        body = {"gateway": name, "reportedAt": at, "routes": {"research/chat": {
            "kind": "Endpoint", "inFlight": in_flight, "queued": 0, "rps": 2.0, "lastRequestAt": last}}}
        return {"metadata": {"name": f"shipyard-gateway-report-{name}"}, "data": {"report.json": json.dumps(body)}}

    traffic.observe("ADDED", report("a", 4999.0, 2, 4990.0))
    traffic.observe("ADDED", report("b", 4998.0, 3, 4995.0))
    stats = traffic.stats("research", "chat")
    assert (stats.in_flight, stats.requests_per_second, stats.last_request_at) == (5, 4.0, 4995.0)
    clock.now += STALE_SECONDS  # b stops reporting (a keeps its heartbeat)
    traffic.observe("MODIFIED", report("a", clock.now, 1, 4990.0))
    stats = traffic.stats("research", "chat")
    assert (stats.in_flight, stats.last_request_at) == (1, 4995.0)  # b's history still counts, its load not
    traffic.observe("DELETED", report("a", clock.now, 1, 4990.0))
    assert traffic.stats("research", "chat").in_flight == 0
    assert traffic.url("research", "chat") == "http://gw/research/chat/"
