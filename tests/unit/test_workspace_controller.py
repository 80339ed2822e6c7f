"""Workspace controller over a fake runtime, fake traffic, a fake IDE and a fake clock: no processes."""

from datetime import timedelta

import pytest

from shipyard.controllers.clock import FakeClock
from shipyard.controllers.manager import ObjectKey
from shipyard.controllers.serving.traffic import TrafficStats
from shipyard.controllers.workspace import WorkspaceController
from shipyard.resources import Workspace
from shipyard.runtime.fake import FakeRuntime
from shipyard.store.sqlite import SQLiteStore
from tests.unit.test_serving_controller import FakeTraffic

KEY = ObjectKey("Workspace", "default", "lab")


class FakeIde:
    def __init__(self):
        self.last = None
        self.calls = 0

    def last_activity(self, ide, host, port, base_path, token):
        self.calls += 1
        assert base_path == "/default/lab/" and token
        return self.last


def workspace(**spec):
    return Workspace.model_validate({"metadata": {"name": "lab"},
                                     "spec": {"volumes": [{"name": "data", "mountPath": "/data"}], **spec}})


@pytest.fixture
def world(tmp_path):
    store = SQLiteStore(tmp_path / "db")
    runtime, traffic, ide, clock = FakeRuntime(), FakeTraffic(), FakeIde(), FakeClock()
    yield store, runtime, traffic, ide, clock, WorkspaceController(store, runtime, traffic, ide, clock)
    store.close()


def ready_pod(runtime):
    sts = runtime.get("StatefulSet", "default", "lab")
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "lab-0", "namespace": "default", "labels": sts["spec"]["template"]["metadata"]["labels"]},
           "spec": sts["spec"]["template"]["spec"],
           "status": {"phase": "Running", "podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}}
    runtime.objects[("Pod", "default", "lab-0")] = pod


def current(store):
    return store.get("Workspace", "default", "lab")


def test_a_workspace_runs_one_ide_with_its_own_token_behind_a_public_prefix_keeping_route(world):
    store, runtime, traffic, ide, clock, ctl = world
    store.apply([workspace()])
    ctl.reconcile(KEY)
    sts = runtime.get("StatefulSet", "default", "lab")
    assert sts["spec"]["replicas"] == 1
    secret = runtime.get("Secret", "default", "lab-token")
    token = secret["stringData"]["token"]
    assert token and token not in str(current(store).to_wire())  # never in the resource
    env = sts["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "JUPYTER_TOKEN", "valueFrom": {"secretKeyRef": {"key": "token", "name": "lab-token"}}} in env
    assert {k for k, _, _ in runtime.objects} >= {"PersistentVolumeClaim", "Service", "NetworkPolicy"}
    assert current(store).status.phase == "Pending"
    ready_pod(runtime)
    ctl.reconcile(KEY)
    route = traffic.routes[("default", "lab")]
    assert route.public and route.keep_prefix and [u.id for u in route.upstreams] == ["lab-0"]
    status = current(store).status
    assert status.phase == "Running" and status.ready and status.url == "http://gateway.test/default/lab/"
    ctl.reconcile(KEY)
    assert runtime.get("Secret", "default", "lab-token")["stringData"]["token"] == token  # made once


def test_idle_workspace_is_suspended_and_woken_by_a_held_request(world):
    store, runtime, traffic, ide, clock, ctl = world
    store.apply([workspace(idleTimeout="60s")])
    ctl.reconcile(KEY)
    ready_pod(runtime)
    ctl.reconcile(KEY)
    clock.advance(30)
    ide.last = clock.now()  # a busy kernel counts, with no request through the gateway
    ctl.reconcile(KEY)
    clock.advance(45)
    ctl.reconcile(KEY)
    assert current(store).status.phase == "Running"  # 45 s since the kernel's activity: not idle yet
    clock.advance(20)
    ctl.reconcile(KEY)
    status = current(store).status
    assert status.phase == "Suspended" and status.suspend_reason == "Idle"
    assert runtime.get("StatefulSet", "default", "lab")["spec"]["replicas"] == 0
    assert runtime.get("PersistentVolumeClaim", "default", "lab-home") is not None  # notebooks kept
    assert traffic.routes[("default", "lab")].scalable_from_zero

    traffic.traffic[("default", "lab")] = TrafficStats(in_flight=0, queued=1, requests_per_second=0,
                                                       last_request_at=None)
    ctl.reconcile(KEY)
    assert runtime.get("StatefulSet", "default", "lab")["spec"]["replicas"] == 1
    assert current(store).status.phase != "Suspended"


def test_manual_suspend_is_not_undone_by_requests_and_resume_restarts(world):
    store, runtime, traffic, ide, clock, ctl = world
    store.apply([workspace(suspend=True, idleTimeout=60)])
    ctl.reconcile(KEY)
    traffic.traffic[("default", "lab")] = TrafficStats(in_flight=0, queued=3, requests_per_second=0,
                                                       last_request_at=None)
    ctl.reconcile(KEY)
    assert runtime.get("StatefulSet", "default", "lab")["spec"]["replicas"] == 0
    assert not traffic.routes[("default", "lab")].scalable_from_zero
    assert current(store).status.suspend_reason == "Manual"
    store.apply([workspace(suspend=False, idleTimeout=60)])
    ctl.reconcile(KEY)
    assert runtime.get("StatefulSet", "default", "lab")["spec"]["replicas"] == 1
    assert [e.reason for e in store.list_events("Workspace", "default", "lab")][-1] == "Resumed"


def test_deleting_a_workspace_removes_everything_but_its_volumes(world):
    store, runtime, traffic, ide, clock, ctl = world
    store.apply([workspace()])
    ctl.reconcile(KEY)
    store.delete("Workspace", "default", "lab")
    ctl.reconcile(KEY)
    ctl.reconcile(KEY)
    assert current(store) is None
    assert {k for k, _, _ in runtime.objects} == {"PersistentVolumeClaim"}
    assert ("default", "lab") not in traffic.routes


@pytest.mark.parametrize("value, seconds", [("90s", 90), ("30m", 1800), ("1h30m", 5400), (600, 600), ("45", 45)])
def test_idle_timeout_accepts_durations(value, seconds):
    assert workspace(idleTimeout=value).spec.idle_timeout == seconds


@pytest.mark.parametrize("spec, words", [
    ({"idleTimeout": "soon"}, "not a duration"),
    ({"idleTimeout": 1}, "greater than or equal to 5"),
    ({"ide": "emacs"}, "jupyterlab"),
    ({"volumes": [{"name": "x", "mountPath": "/workspace/x"}]}, "home volume"),
])
def test_bad_workspaces_are_refused(spec, words):
    with pytest.raises(ValueError, match=words):
        workspace(**spec)
