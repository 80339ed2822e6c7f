"""Serving and sweeps under the operator, against the Kubernetes API mock server.

The test plays Kubernetes' ReplicaSet controller and kubelet for an App: when the Deployment asks for a replica,
a ready pod appears whose address (127.0.0.1, the App's port) is a real HTTP server in this process. So a
request through the operator's gateway really travels: held while the App is scaled to zero, released when
the operator has woken the Deployment and the pod is ready.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from shipyard.cluster.api import KubeApi
from shipyard.gateway import GatewayServer, create_gateway_app
from shipyard.gateway_wiring import StoreKeys
from tests.gateway.upstreams import EchoUpstream

from .conftest import wait_for

NS = "default"
pytestmark = pytest.mark.timeout(120)


def ready_pod(kubectl: KubeApi, deployment: dict[str, Any], name: str) -> None:
    template = deployment["spec"]["template"]
    kubectl.create({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": NS, "labels": template["metadata"]["labels"]},
                    "spec": template["spec"],
                    "status": {"phase": "Running", "podIP": "127.0.0.1",
                               "conditions": [{"type": "Ready", "status": "True"}]}})


@pytest.fixture
def pod_server():
    """The App's container: a real HTTP server on 127.0.0.1 that the pod's address points at."""
    app = EchoUpstream("replica")
    server = GatewayServer(app, "127.0.0.1", 0)
    server.start()
    yield server
    app.gate.set()
    server.stop()


def test_an_app_is_deployed_routed_and_woken_from_zero_by_a_held_request(apiserver, kubectl, operators, pod_server):
    operator = operators()
    gateway = GatewayServer(create_gateway_app(operator.routes, StoreKeys(operator.store.api_keys), operator.activate),
                            "127.0.0.1", 0)
    gateway.start()
    try:
        kubectl.create({"apiVersion": "shipyard.dev/v1alpha1", "kind": "App",
                        "metadata": {"name": "web", "namespace": NS},
                        "spec": {"command": ["python", "-m", "http.server"], "port": pod_server.port, "public": True,
                                 "replicas": {"min": 0, "max": 2}, "scaleToZero": {"idleSeconds": 2}}})
        deployment = wait_for(lambda: kubectl.get("Deployment", NS, "web"), what="the Deployment")
        wait_for(lambda: kubectl.get("NetworkPolicy", NS, "web"), what="the NetworkPolicy, applied after it")
        for plural in ("deployments", "services", "networkpolicies"):
            assert any(r.is_apply and f"/{plural}/web" in r.path for r in apiserver.requests), plural
        assert deployment["metadata"]["ownerReferences"][0]["kind"] == "App"

        # Nobody calls it: after idleSeconds the operator scales it to zero, and the pod goes away.
        wait_for(lambda: kubectl.get("Deployment", NS, "web")["spec"]["replicas"] == 0, what="scale to zero")
        wait_for(lambda: kubectl.get("App", NS, "web")["status"]["phase"] == "Idle", what="phase Idle on the CR")

        answers: list[httpx.Response] = []
        caller = threading.Thread(target=lambda: answers.append(
            httpx.get(f"{gateway.url}/default/web/hello", timeout=30)))
        caller.start()
        # The held request wakes the App: the operator asks for a replica again; the "ReplicaSet" starts one.
        woken = wait_for(lambda: (d := kubectl.get("Deployment", NS, "web")) and d["spec"]["replicas"] == 1 and d,
                         what="the Deployment to be scaled up by the held request")
        assert not answers  # still held: no replica is ready yet
        ready_pod(kubectl, woken, "web-abc12")
        caller.join(timeout=30)
        assert answers and answers[0].status_code == 200
        assert answers[0].json()["path"] == "/hello"  # the gateway strips /PROJECT/NAME
        status = wait_for(lambda: (a := kubectl.get("App", NS, "web")) and a["status"].get("readyReplicas") == 1
                          and a["status"], what="status from the ready pod")
        assert status["phase"] == "Ready" and status["url"].endswith("/default/web/")
    finally:
        gateway.stop()


def test_a_sweep_cr_creates_its_trials_as_trainingjob_crs_owned_by_it(apiserver, kubectl, operators):
    operators()
    sweep = kubectl.create({"apiVersion": "shipyard.dev/v1alpha1", "kind": "Sweep",
                            "metadata": {"name": "lr", "namespace": NS},
                            "spec": {"algorithm": {"type": "grid"}, "parallelism": 2, "maxTrials": 4,
                                     "objective": {"metric": "loss", "goal": "minimize"},
                                     "parameters": [{"name": "lr", "type": "categorical",
                                                     "values": ["0.1", "0.01", "0.001", "0.0001"]}],
                                     "trial": {"command": ["python", "train.py"],
                                               "args": ["--lr", "${lr}"]}}})
    trials = wait_for(lambda: len(t := kubectl.list("TrainingJob", NS)) == 2 and t,
                      what="two trials at parallelism 2")
    for trial in trials:
        owner = trial["metadata"]["ownerReferences"][0]
        assert owner["kind"] == "Sweep" and owner["uid"] == sweep["metadata"]["uid"]
    # Each trial is reconciled like any TrainingJob: its Job is applied by the same operator.
    wait_for(lambda: all(kubectl.get("Job", NS, t["metadata"]["name"]) for t in trials), what="the trials' Jobs")
    assert sorted(t["spec"]["args"][1] for t in trials) == ["0.01", "0.1"]


def test_a_workspace_cr_becomes_a_statefulset_with_a_token_secret_and_suspends(apiserver, kubectl, operators):
    operators()
    kubectl.create({"apiVersion": "shipyard.dev/v1alpha1", "kind": "Workspace",
                    "metadata": {"name": "lab", "namespace": NS}, "spec": {"idleTimeout": "30m"}})
    sts = wait_for(lambda: kubectl.get("StatefulSet", NS, "lab"), what="the StatefulSet")
    assert sts["spec"]["replicas"] == 1 and sts["metadata"]["ownerReferences"][0]["kind"] == "Workspace"
    secret = wait_for(lambda: kubectl.get("Secret", NS, "lab-token"), what="the token Secret")
    assert "token" in (secret.get("stringData") or secret.get("data") or {})
    assert kubectl.get("PersistentVolumeClaim", NS, "lab-home") is not None
    assert "token" not in str(kubectl.get("Workspace", NS, "lab").get("status", {}))

    kubectl.merge_patch("Workspace", NS, "lab", {"spec": {"suspend": True}})
    wait_for(lambda: kubectl.get("StatefulSet", NS, "lab")["spec"]["replicas"] == 0, what="suspension")
    wait_for(lambda: kubectl.get("Workspace", NS, "lab").get("status", {}).get("suspendReason") == "Manual")
