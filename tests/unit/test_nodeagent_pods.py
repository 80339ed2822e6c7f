"""The node agent's pod lifecycle against a fake API, with real processes under the embedded runtime's shim."""

import sys
import threading
from pathlib import Path

import pytest

from shipyard.cluster.nodeagent.containers import ContainerConfig
from shipyard.cluster.nodeagent.devices import DevicePool
from shipyard.cluster.nodeagent.ipam import PodNetwork
from shipyard.cluster.nodeagent.logs import tail
from shipyard.cluster.nodeagent.pods import Pods
from shipyard.runtime.local import processes
from shipyard.runtime.local.lifecycle import Backoff

from ..conftest import wait_for
from .nodeagent_fake import FakeKubeApi, pod

PY = sys.executable


@pytest.fixture
def api():
    return FakeKubeApi()


@pytest.fixture
def pods(api, tmp_path):
    wake = threading.Event()
    agent = Pods(api, tmp_path, "127.0.0.1", PodNetwork("127.1.0.0/16"), DevicePool(["node-a"], 2),
                 ContainerConfig(api, tmp_path, "127.0.0.1"), wake.set, backoff=Backoff(0.2, 0.4, 60))
    yield agent
    for run in list(agent.runs.values()):
        processes.kill_pod(run.uid, run.pid, run.ticks)
    agent.end_pass()


def sync(api, pods):
    """One pass of the agent's loop over the fake API's pods."""
    current = {p["metadata"]["uid"]: p for p in api.list("Pod")}
    for uid in set(current) | set(pods.runs):
        pods.sync(uid, current.get(uid))
    pods.end_pass()


def until(api, pods, predicate, what, timeout=30.0):
    def step():
        sync(api, pods)
        return predicate()
    return wait_for(step, timeout=timeout, interval=0.05, message=what)


def status(api, name):
    return (api.get("Pod", "default", name) or {}).get("status", {})


def state(api, name):
    return status(api, name).get("containerStatuses", [{}])[0].get("state", {})


def test_a_pod_runs_to_completion_and_reports_its_exit(api, pods, tmp_path):
    api.add(pod("hello", restartPolicy="Never", container={
        "command": [PY, "-c", "import os; print('hello from', os.environ['POD_IP'])"],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}))
    until(api, pods, lambda: status(api, "hello").get("phase") == "Succeeded", "Succeeded")
    s = status(api, "hello")
    assert s["podIP"].startswith("127.1.") and s["hostIP"] == "127.0.0.1"
    assert state(api, "hello")["terminated"]["exitCode"] == 0
    assert state(api, "hello")["terminated"]["reason"] == "Completed"
    assert "running" not in state(api, "hello")
    assert {c["type"]: c["status"] for c in s["conditions"]}["Ready"] == "False"
    assert (tmp_path / "logs" / "default" / "hello.log").read_text() == f"hello from {s['podIP']}\n"
    phases = [w["phase"] for w in api.status_writes("hello")]
    assert phases[-1] == "Succeeded" and "Running" in phases


def test_a_failing_container_is_restarted_in_place_with_back_off(api, pods, tmp_path):
    api.add(pod("crash", restartPolicy="OnFailure", container={
        "command": [PY, "-c", "import os, sys; print('attempt'); sys.exit(3)"]}))
    until(api, pods, lambda: status(api, "crash").get("containerStatuses", [{}])[0].get("restartCount", 0) >= 2,
          "two restarts")
    container = status(api, "crash")["containerStatuses"][0]
    assert status(api, "crash")["phase"] == "Running"
    assert container["lastState"]["terminated"]["exitCode"] == 3
    assert container["lastState"]["terminated"]["reason"] == "Error"
    until(api, pods, lambda: (tmp_path / "logs" / "default" / "crash.previous.log").exists(), "a previous log")
    assert (tmp_path / "logs" / "default" / "crash.previous.log").read_text() == "attempt\n"


def test_a_deleted_pod_gets_sigterm_then_is_removed(api, pods, tmp_path):
    api.add(pod("server", restartPolicy="Always", terminationGracePeriodSeconds=10, container={
        "command": [PY, "-c", "import signal, sys, time\n"
                              "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
                              "print('up', flush=True)\n"
                              "time.sleep(60)\n"]}))
    until(api, pods, lambda: any(c["type"] == "Ready" and c["status"] == "True"
                                 for c in status(api, "server").get("conditions", [])), "Ready")
    log = tmp_path / "logs" / "default" / "server.log"
    until(api, pods, lambda: log.exists() and log.read_text() == "up\n", "its SIGTERM handler installed")
    uid = api.get("Pod", "default", "server")["metadata"]["uid"]
    api.objects[("Pod", "default", "server")]["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    until(api, pods, lambda: api.get("Pod", "default", "server") is None, "the pod removed")
    final = api.status_writes("server")[-1]
    assert final["phase"] == "Succeeded"  # it exited 0 on SIGTERM
    assert final["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert ("delete", ("Pod", "default", "server", 0, uid)) in api.calls
    assert not processes.pod_processes(uid)


def test_a_force_deleted_pod_is_killed(api, pods):
    api.add(pod("stuck", container={"command": [PY, "-c", "import signal, time\n"
                                                         "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                                         "time.sleep(60)\n"]}))
    until(api, pods, lambda: status(api, "stuck").get("phase") == "Running", "Running")
    uid = api.get("Pod", "default", "stuck")["metadata"]["uid"]
    wait_for(lambda: processes.pod_processes(uid), timeout=10, message="the container started by its shim")
    del api.objects[("Pod", "default", "stuck")]
    sync(api, pods)
    wait_for(lambda: not processes.pod_processes(uid), timeout=10, message="the pod's processes killed")
    assert uid not in pods.runs


def test_readiness_follows_an_http_probe_on_the_pods_ip(api, pods):
    api.add(pod("web", container={
        "command": [PY, "-m", "http.server", "--bind", "0.0.0.0", "8080"],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}}))
    until(api, pods, lambda: status(api, "web").get("phase") == "Running", "Running")
    until(api, pods, lambda: any(c["type"] == "Ready" and c["status"] == "True"
                                 for c in status(api, "web").get("conditions", [])), "Ready")
    assert status(api, "web")["containerStatuses"][0]["ready"] is True


def test_a_missing_secret_keeps_the_pod_pending_until_it_appears(api, pods):
    api.add(pod("needs-secret", restartPolicy="Never", container={
        "command": [PY, "-c", "import os; assert os.environ['K'] == 'v'"],
        "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}))
    until(api, pods, lambda: state(api, "needs-secret").get("waiting", {}).get("reason")
          == "CreateContainerConfigError", "CreateContainerConfigError")
    assert status(api, "needs-secret")["phase"] == "Pending"
    api.add({"kind": "Secret", "metadata": {"name": "s", "namespace": "default"}, "stringData": {"k": "v"}})
    until(api, pods, lambda: status(api, "needs-secret").get("phase") == "Succeeded", "Succeeded")


def test_a_command_that_does_not_exist_fails_the_pod(api, pods):
    api.add(pod("typo", restartPolicy="Never", container={"command": ["no-such-program-here"]}))
    until(api, pods, lambda: status(api, "typo").get("phase") == "Failed", "Failed")
    assert state(api, "typo")["terminated"]["reason"] == "StartError"


def test_a_restarted_agent_adopts_running_pods(api, pods, tmp_path):
    api.add(pod("long", container={"command": [PY, "-c", "import time; time.sleep(60)"]}))
    until(api, pods, lambda: status(api, "long").get("phase") == "Running", "Running")
    uid = api.get("Pod", "default", "long")["metadata"]["uid"]
    before = pods.runs[uid]
    again = Pods(api, tmp_path, "127.0.0.1", PodNetwork("127.1.0.0/16"), DevicePool(["node-a"], 2),
                 ContainerConfig(api, tmp_path, "127.0.0.1"), lambda: None)
    again.adopt({uid: api.get("Pod", "default", "long")})
    assert again.runs[uid].pid == before.pid and again.runs[uid].ip == before.ip
    sync(api, again)
    assert again.runs[uid].pid == before.pid  # not started twice
    assert again.runs[uid].restart_count == 0


def test_tail_lines():
    assert tail(b"a\nb\nc\n", 2) == b"b\nc\n"
    assert tail(b"a\nb\nc", 1) == b"c"
    assert tail(b"a\n", 0) == b""


def test_a_node_shutdown_stops_every_pod_and_reports_it_disrupted(api, pods, tmp_path):
    api.add(pod("svc", restartPolicy="Always", terminationGracePeriodSeconds=5, container={
        "command": [PY, "-c", "import time; print('up', flush=True); time.sleep(60)"]}))
    log = tmp_path / "logs" / "default" / "svc.log"
    until(api, pods, lambda: log.exists() and log.read_text() == "up\n", "the pod to run")
    uid = api.get("Pod", "default", "svc")["metadata"]["uid"]
    pods.shut_down({uid: api.get("Pod", "default", "svc")})
    assert not processes.pod_processes(uid)
    final = status(api, "svc")
    assert final["phase"] == "Failed" and final["reason"] == "Terminated"
    disruption = next(c for c in final["conditions"] if c["type"] == "DisruptionTarget")
    assert disruption["status"] == "True" and disruption["reason"] == "TerminationByKubelet"
    assert final["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 143  # SIGTERM, no restart
