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
    made = {k.name: k.created_by for k in store.api_keys.list_api_keys("default")}
    assert made == {"endpoint-chat": "system:shipyard:serving-controller"}  # not "unknown"
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


# --- models:/ references, resolved through the tracker's registry ------------------------------------------

def registry_world(tmp_path, tracker):
    store = SQLiteStore(tmp_path / "db")
    runtime, traffic = FakeRuntime(), FakeTraffic()
    clock = FakeClock(datetime.now(timezone.utc))
    return store, runtime, clock, ServingController("Endpoint", store, runtime, traffic, clock, tracker=tracker)


def registry_endpoint(model="models:/chat@champion", **spec):
    return Endpoint.model_validate({"metadata": {"name": "chat"}, "spec": {"model": model, **spec}})


def served(runtime):
    container = deployment(runtime)["spec"]["template"]["spec"]["containers"][0]
    volumes = deployment(runtime)["spec"]["template"]["spec"]["volumes"]
    return container["args"][0], [v["persistentVolumeClaim"]["claimName"] for v in volumes
                                  if "persistentVolumeClaim" in v]


def test_a_registry_model_is_resolved_recorded_and_served_from_its_volume(tmp_path):
    from shipyard.controllers.tracking import FakeTracker

    tracker = FakeTracker()
    tracker.register_model("chat", None, "lifecycle", "/finetune/merged", aliases=("champion",), project="default")
    store, runtime, clock, ctl = registry_world(tmp_path, tracker)
    store.apply([registry_endpoint()])
    ctl.reconcile(KEY)
    assert served(runtime) == ("/models/registry/finetune/merged", ["lifecycle"])
    status = current(store).status
    assert status.resolved_model.to_wire() == {"uri": "models:/chat@champion", "name": "chat", "version": 1,
                                               "volume": "lifecycle", "path": "/finetune/merged"}
    assert status.condition("ModelResolved").status == "True"
    assert current(store).to_wire()["status"]["resolvedModel"]["version"] == 1
    assert [e.reason for e in store.list_events("Endpoint", "default", "chat")] == ["ModelResolved"]
    store.close()


def test_moving_the_alias_rolls_out_the_new_version_on_a_later_reconcile(tmp_path):
    from shipyard.controllers.serving.models import REFRESH_SECONDS
    from shipyard.controllers.tracking import FakeTracker

    tracker = FakeTracker()
    tracker.register_model("chat", None, "lifecycle", "/v1", aliases=("champion",), project="default")
    store, runtime, clock, ctl = registry_world(tmp_path, tracker)
    store.apply([registry_endpoint()])
    ctl.reconcile(KEY)
    before = deployment(runtime)["spec"]["template"]
    tracker.register_model("chat", None, "lifecycle", "/v2", aliases=("champion",), project="default")
    ctl.reconcile(KEY)
    assert deployment(runtime)["spec"]["template"] == before  # asked again only after REFRESH_SECONDS
    clock.advance(REFRESH_SECONDS)
    ctl.reconcile(KEY)
    after = deployment(runtime)["spec"]["template"]
    assert after != before and served(runtime)[0] == "/models/registry/v2"
    env = {e["name"]: e.get("value") for e in after["spec"]["containers"][0]["env"]}
    assert env["SHIPYARD_MODEL_VERSION"] == "2"
    assert current(store).status.resolved_model.version == 2
    store.close()


def test_an_unresolvable_reference_leaves_the_endpoint_pending_with_the_reason_then_recovers(tmp_path):
    from shipyard.controllers.serving.models import RETRY_SECONDS
    from shipyard.controllers.tracking import FakeTracker

    tracker = FakeTracker()
    store, runtime, clock, ctl = registry_world(tmp_path, tracker)
    store.apply([registry_endpoint()])
    ctl.reconcile(KEY)
    assert deployment(runtime) is None
    status = current(store).status
    assert status.phase == "Pending" and status.resolved_model is None
    cond = status.condition("ModelResolved")
    assert cond.status == "False" and "has no version or alias 'champion'" in cond.message
    assert status.condition("Available").reason == "ModelNotResolved"
    ctl.reconcile(KEY)
    assert store.list_events("Endpoint", "default", "chat") == []  # the condition says it, not an event per try

    tracker.register_model("chat", None, "lifecycle", "/m", aliases=("champion",), project="default")
    clock.advance(RETRY_SECONDS)
    ctl.reconcile(KEY)
    assert served(runtime) == ("/models/registry/m", ["lifecycle"])
    assert current(store).status.condition("ModelResolved").status == "True"
    store.close()


def test_a_registry_that_goes_down_does_not_take_the_model_off_the_air(tmp_path):
    from shipyard.controllers.serving.models import REFRESH_SECONDS
    from shipyard.controllers.tracking import FakeTracker

    tracker = FakeTracker()
    tracker.register_model("chat", None, "lifecycle", "/m", project="default")
    store, runtime, clock, ctl = registry_world(tmp_path, tracker)
    store.apply([registry_endpoint("models:/chat/1")])
    ctl.reconcile(KEY)
    ready_pod(runtime, "chat-a", 40001)
    ctl.reconcile(KEY)
    template = deployment(runtime)["spec"]["template"]
    tracker.fail = True
    clock.advance(REFRESH_SECONDS)
    ctl.reconcile(KEY)
    status = current(store).status
    assert deployment(runtime)["spec"]["template"] == template and status.phase == "Ready"
    cond = status.condition("ModelResolved")
    assert cond.status == "False" and "still serving version 1" in cond.message
    assert status.resolved_model.version == 1
    store.close()


@pytest.mark.parametrize("register, words", [
    ({"volume": "lifecycle", "path": "/m", "project": "team-b"}, ["project 'team-b'", "its own project"]),
    ({"volume": "", "path": "s3://bucket/m"}, ["not registered by Shipyard"]),
])
def test_versions_an_endpoint_cannot_mount_are_refused_with_the_reason(tmp_path, register, words):
    from shipyard.controllers.tracking import FakeTracker

    tracker = FakeTracker()
    tracker.register_model("chat", None, aliases=("champion",), **register)
    store, runtime, clock, ctl = registry_world(tmp_path, tracker)
    store.apply([registry_endpoint()])
    ctl.reconcile(KEY)
    assert deployment(runtime) is None
    message = current(store).status.condition("ModelResolved").message
    assert all(w in message for w in words), message
    store.close()


def test_without_tracking_a_registry_reference_says_how_to_get_it(tmp_path):
    store, runtime, clock, ctl = registry_world(tmp_path, None)
    store.apply([registry_endpoint()])
    ctl.reconcile(KEY)
    status = current(store).status
    assert status.phase == "Pending" and "experiment tracking" in status.condition("ModelResolved").message
    store.apply([registry_endpoint("/models/chat", volumes=[{"name": "models", "mountPath": "/models"}])])
    ctl.reconcile(KEY)  # back to a path: the registry's condition and record go
    status = current(store).status
    assert status.condition("ModelResolved") is None and status.resolved_model is None
    assert served(runtime) == ("/models/chat", ["models"])
    store.close()


def test_replicas_that_only_fail_their_probe_keep_traffic_when_none_is_ready(world):
    store, runtime, traffic, clock, ctl = world
    store.apply([endpoint(replicas={"min": 2, "max": 2})])
    ctl.reconcile(KEY)
    ready_pod(runtime, "chat-a", 40001)
    ready_pod(runtime, "chat-b", 40002)
    ctl.reconcile(KEY)
    assert len(traffic.routes[("default", "chat")].upstreams) == 2
    # Overloaded: both still run, both fail /health in time. Refusing everyone would be worse than slow.
    for pod in ("chat-a", "chat-b"):
        runtime.objects[("Pod", "default", pod)]["status"]["conditions"][0]["status"] = "False"
    ready_pod(runtime, "chat-c", 40003, ready=False)  # never ready: never routed, panic or not
    ctl.reconcile(KEY)
    assert [u.id for u in traffic.routes[("default", "chat")].upstreams] == ["chat-a", "chat-b"]
    assert current(store).status.ready_replicas == 0 and current(store).status.phase == "Pending"
    assert "AllReplicasUnready" in [e.reason for e in store.list_events("Endpoint", "default", "chat")]
    # A restarted container or a terminating pod loses the benefit of the doubt.
    runtime.objects[("Pod", "default", "chat-a")]["status"]["containerStatuses"] = [{"restartCount": 1}]
    runtime.objects[("Pod", "default", "chat-b")]["metadata"]["deletionTimestamp"] = "now"
    ctl.reconcile(KEY)
    assert traffic.routes[("default", "chat")].upstreams == ()
    ready_pod(runtime, "chat-c", 40003)  # a ready replica again: back to the normal rule
    ctl.reconcile(KEY)
    assert [u.id for u in traffic.routes[("default", "chat")].upstreams] == ["chat-c"]
