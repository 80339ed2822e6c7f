"""The Endpoint/App controller over a fake runtime, a fake gateway and a fake clock: no processes."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from shipyard.controllers.clock import FakeClock
from shipyard.controllers.manager import ObjectKey
from shipyard.controllers.serving import RouteTarget, ServingController, TrafficStats
from shipyard.controllers.serving.controller import FINALIZER
from shipyard.resources import Endpoint
from shipyard.runtime.fake import FakeRuntime
from shipyard.store.sqlite import SQLiteStore

KEY = ObjectKey("Endpoint", "default", "chat")


class FakeTraffic:
    def __init__(self):
        self.routes: dict[tuple[str, str], RouteTarget] = {}
        self.traffic: dict[tuple[str, str], TrafficStats] = {}

    def set_route(self, route: RouteTarget) -> None:
        self.routes[(route.project, route.name)] = route

    def remove_route(self, project: str, name: str) -> None:
        self.routes.pop((project, name), None)

    def stats(self, project: str, name: str) -> TrafficStats | None:
        return self.traffic.get((project, name))

    def url(self, project: str, name: str) -> str:
        return f"http://gateway.test/{project}/{name}/"


def endpoint(**spec):
    base = {"model": "/models/chat", "volumes": [{"name": "models", "mountPath": "/models"}]}
    base.update(spec)
    return Endpoint.model_validate({"metadata": {"name": "chat"}, "spec": base})


@pytest.fixture
def world(tmp_path):
    store = SQLiteStore(tmp_path / "db")
    runtime, traffic = FakeRuntime(), FakeTraffic()
    clock = FakeClock(datetime.now(timezone.utc))  # the store stamps creation with real time
    yield store, runtime, traffic, clock, ServingController("Endpoint", store, runtime, traffic, clock)
    store.close()


def ready_pod(runtime, name: str, port: int, ready: bool = True) -> None:
    runtime.objects[("Pod", "default", name)] = {
        "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                                    "labels": {"shipyard.dev/kind": "endpoint", "shipyard.dev/name": "chat"}},
        "spec": {"containers": [{"name": "server", "ports": [{"name": "http", "containerPort": 8000}]}]},
        "status": {"phase": "Running", "podIP": "127.0.0.1", "hostPorts": {"8000": port},
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def deployment(runtime) -> dict:
    return runtime.get("Deployment", "default", "chat")


def current(store):
    return store.get("Endpoint", "default", "chat")


def test_first_reconcile_creates_objects_route_and_status(world):
    store, runtime, traffic, clock, ctl = world
    store.apply([endpoint()])
    ctl.reconcile(KEY)
    assert FINALIZER in current(store).metadata.finalizers
    kinds = {k[0] for k in runtime.objects}
    assert {"Deployment", "Service", "NetworkPolicy", "PersistentVolumeClaim"} <= kinds
    assert "HorizontalPodAutoscaler" not in kinds  # min = max = 1: nothing to autoscale
    assert deployment(runtime)["spec"]["replicas"] == 1
    route = traffic.routes[("default", "chat")]
    assert route.upstreams == () and not route.public and not route.scalable_from_zero
    status = current(store).status
    assert status.phase == "Pending" and status.url == "http://gateway.test/default/chat/"


def test_only_ready_pods_are_routed(world):
    store, runtime, traffic, clock, ctl = world
    store.apply([endpoint(replicas={"min": 2, "max": 2})])
    ctl.reconcile(KEY)
    ready_pod(runtime, "chat-a", 40001)
    ready_pod(runtime, "chat-b", 40002, ready=False)
    ctl.reconcile(KEY)
    assert [(u.id, u.port) for u in traffic.routes[("default", "chat")].upstreams] == [("chat-a", 40001)]
    runtime.objects[("Pod", "default", "chat-a")]["metadata"]["deletionTimestamp"] = "now"  # draining
    ctl.reconcile(KEY)
    assert traffic.routes[("default", "chat")].upstreams == ()
    ready_pod(runtime, "chat-b", 40002)
    ctl.reconcile(KEY)
    status = current(store).status
    assert status.phase == "Ready" and status.ready_replicas == 1


def test_autoscaled_deployment_leaves_replicas_to_the_hpa(world):
    store, runtime, traffic, clock, ctl = world
    store.apply([endpoint(replicas={"min": 1, "max": 4}, autoscaling={"target": 2})])
    ctl.reconcile(KEY)
    assert deployment(runtime)["spec"]["replicas"] == 1  # the first start sets the count once
    hpa = runtime.get("HorizontalPodAutoscaler", "default", "chat")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    runtime.objects[("Deployment", "default", "chat")]["spec"]["replicas"] = 3  # what the HPA did
    ctl.reconcile(KEY)
    applied = [o for o in runtime.applied if o["kind"] == "Deployment"][-1]
    assert "replicas" not in applied["spec"]


def test_scale_to_zero_and_back_on_a_held_request(world):
    store, runtime, traffic, clock, ctl = world
    store.apply([endpoint(replicas={"min": 0, "max": 3}, autoscaling={"target": 2},
                          scaleToZero={"idleSeconds": 60})])
    ctl.reconcile(KEY)
    assert deployment(runtime)["spec"]["replicas"] == 1 and traffic.routes[("default", "chat")].scalable_from_zero
    ready_pod(runtime, "chat-a", 40001)
    clock.advance(30)
    traffic.traffic[("default", "chat")] = TrafficStats(0, 0, 0.0, clock.now().timestamp())
    ctl.reconcile(KEY)
    assert current(store).status.phase == "Ready"
    clock.advance(61)  # a minute without requests
    ctl.reconcile(KEY)
    assert deployment(runtime)["spec"]["replicas"] == 0
    assert runtime.get("HorizontalPodAutoscaler", "default", "chat") is None  # no HPA may fight the zero
    status = current(store).status
    assert status.phase == "Idle" and status.last_scale_time == clock.now()
    del runtime.objects[("Pod", "default", "chat-a")]
    ctl.reconcile(KEY)
    assert current(store).status.phase == "Idle"  # stays asleep while nothing arrives
    traffic.traffic[("default", "chat")] = TrafficStats(0, 3, 0.0, clock.now().timestamp())  # held requests
    ctl.reconcile(KEY)
    assert deployment(runtime)["spec"]["replicas"] == 1
    assert runtime.get("HorizontalPodAutoscaler", "default", "chat") is not None
    assert current(store).status.phase == "Pending"
    reasons = [e.reason for e in store.list_events("Endpoint", "default", "chat")]
    assert reasons == ["ScaledToZero", "Activated"]


def test_drift_is_corrected_and_removed_objects_are_pruned(world):
    store, runtime, traffic, clock, ctl = world
    store.apply([endpoint(public=True, ingress={"host": "chat.example.com"})])
    ctl.reconcile(KEY)
    assert runtime.get("Ingress", "default", "chat") is not None
    runtime.objects[("Deployment", "default", "chat")]["spec"]["template"]["spec"]["containers"][0]["image"] = "x"
    store.apply([endpoint(public=True)])  # ingress removed from the spec
    ctl.reconcile(KEY)
    assert deployment(runtime)["spec"]["template"]["spec"]["containers"][0]["image"] != "x"
    assert runtime.get("Ingress", "default", "chat") is None
    assert traffic.routes[("default", "chat")].public


def test_delete_removes_route_and_children_then_the_finalizer(world):
    store, runtime, traffic, clock, ctl = world
    store.apply([endpoint()])
    ctl.reconcile(KEY)
    store.delete("Endpoint", "default", "chat")
    ctl.reconcile(KEY)
    assert current(store) is None
    assert ("default", "chat") not in traffic.routes
    assert {k[0] for k in runtime.objects} == {"PersistentVolumeClaim"}  # data outlives the endpoint


def test_gateway_key_is_created_into_a_secret_and_revoked_with_the_resource(tmp_path):
    from shipyard.tokens import hash_token

    store = SQLiteStore(tmp_path / "db")
    runtime, traffic = FakeRuntime(), FakeTraffic()
    ctl = ServingController("Endpoint", store, runtime, traffic, FakeClock(datetime.now(timezone.utc)),
                            keys=store.api_keys)
    store.apply([endpoint(gatewayKey={"env": "OPENAI_API_KEY"})])
    ctl.reconcile(KEY)
    secret = runtime.get("Secret", "default", "chat-gateway-key")
    token = secret["stringData"]["token"]
    assert store.api_keys.api_key_project(hash_token(token)) == "default"
    env = deployment(runtime)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {"name": "chat-gateway-key", "key": "token"}}} \
        in env
    assert token not in json.dumps(current(store).to_wire())  # the resource never holds the token
    ctl.reconcile(KEY)
    assert runtime.get("Secret", "default", "chat-gateway-key")["stringData"]["token"] == token  # kept, not rotated

    store.apply([endpoint()])  # gatewayKey removed from the spec: key revoked, Secret pruned
    ctl.reconcile(KEY)
    assert runtime.get("Secret", "default", "chat-gateway-key") is None
    assert store.api_keys.api_key_project(hash_token(token)) is None
    store.close()
