"""An Endpoint on the real control plane: its PVC bound by the real PV controller (to a volume the node agent
provisions), scaled from zero by a request held at a gateway replica (a process of its own, as the chart runs it), served by pods that the real Deployment
controller created and the node agent runs (the built-in OpenAI-compatible server, a tiny model), rolled to a new
template by the real Deployment controller, with its HorizontalPodAutoscaler accepted by the API server and
the replica count handed over to it without a fight between field managers.

What is not tested: the HPA acting on load. It reads the gateway's metrics through the custom metrics API
(prometheus-adapter), which this control plane does not have; the test shows the HPA controller reporting
exactly that and leaving the replica count alone.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from shipyard.client import Client
from shipyard.workloads.tiny import build_tiny_model

from .conftest import wait_for

pytestmark = pytest.mark.timeout(600)


def endpoint(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "shipyard.dev/v1alpha1", "kind": "Endpoint",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"model": "/models/v1", "volumes": [{"name": "models", "mountPath": "/models", "size": "1Gi"}],
                     "resources": {"cpu": "250m", "memory": "1Gi"}, "replicas": {"min": 0, "max": 2},
                     "autoscaling": {"metric": "inFlight", "target": 4}, "scaleToZero": {"idleSeconds": 15},
                     **spec}}


def ready_pods(admin, namespace: str, name: str) -> list[dict[str, Any]]:
    return [p for p in admin.list("Pod", namespace, {"shipyard.dev/name": name})
            if not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]


def chat(gateway: str, namespace: str, name: str, key: str, timeout: float = 180) -> httpx.Response:
    return httpx.post(f"{gateway}/{namespace}/{name}/v1/chat/completions", timeout=timeout,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})


def test_an_endpoint_scales_from_zero_serves_rolls_and_hands_its_replicas_to_the_hpa(admin, operator, node_agent,
                                                                                      gateways, namespace):
    with Client(url=operator.api, token=operator.admin_token) as client:
        key = client.create_api_key("ci", project=namespace)["token"]
    admin.create(endpoint("tiny", namespace))
    # At once: the HPA lives only until the Endpoint goes idle (idleSeconds after creation, no traffic), which
    # the PVC and the model below may outlast on a busy machine.
    hpa = wait_for(lambda: admin.get("HorizontalPodAutoscaler", namespace, "tiny"), what="the HPA, accepted")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "tiny"

    # The operator applied the PVC; the real PV controller bound it to the volume the node agent provisioned.
    claim = wait_for(lambda: (c := admin.get("PersistentVolumeClaim", namespace, "models"))
                     and c["status"].get("phase") == "Bound" and c, timeout=60, what="the models PVC bound")
    volume = admin.get("PersistentVolume", None, claim["spec"]["volumeName"])
    build_tiny_model(__import__("pathlib").Path(volume["spec"]["hostPath"]["path"]) / "v1")
    # A new Endpoint gets a replica; with no traffic for idleSeconds the operator scales it to zero.
    wait_for(lambda: admin.get("Deployment", namespace, "tiny")["spec"].get("replicas") == 0
             and not admin.list("Pod", namespace, {"shipyard.dev/name": "tiny"}), timeout=120,
             what="the Endpoint scaled to zero, its pod gone")

    # Scale from zero: the gateway holds the first request while the operator wakes the Deployment; the real
    # Deployment and ReplicaSet controllers create the pod; the node agent runs it; then the request is answered.
    answer = chat(gateways[0].url, namespace, "tiny", key)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["role"] == "assistant"
    first = ready_pods(admin, namespace, "tiny")
    assert len(first) == 1

    # From now on requests keep flowing (the Endpoint stays awake), and every one must be answered.
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            response = chat(gateways[0].url, namespace, "tiny", key, timeout=60)
            if response.status_code != 200:
                failures.append(f"{response.status_code} {response.text[:200]}")
            stop.wait(0.5)
    thread = threading.Thread(target=load)
    thread.start()
    owner = first[0]["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "ReplicaSet"  # made by the real Deployment controller, not by Shipyard

    # The replica count belongs to the HPA now: Shipyard's own manager let go of it through the hand-over manager.
    try:
        check_handover_and_rollout(admin, namespace, first[0])
    finally:
        stop.set()
        thread.join()
    assert not failures, failures[:3]


def check_handover_and_rollout(admin, namespace: str, first: dict[str, Any]) -> None:
    def replica_owners() -> set[str]:
        live = admin.get("Deployment", namespace, "tiny")
        return {m["manager"] for m in live["metadata"]["managedFields"]
                if "f:replicas" in m.get("fieldsV1", {}).get("f:spec", {})}
    owners = wait_for(lambda: (o := replica_owners()) and "shipyard" not in o and o, timeout=60,
                      what="spec.replicas handed over")
    assert owners <= {"shipyard-replicas-handover", "kube-controller-manager", "shipyard-replicas"}, owners
    # The HPA controller says why it does not scale (no custom metrics API), and leaves the count alone.
    wait_for(lambda: any(c["type"] == "ScalingActive" and c["status"] == "False" for c in (
        admin.get("HorizontalPodAutoscaler", namespace, "tiny").get("status", {}).get("conditions", []))),
        timeout=90, what="the HPA controller's verdict on its metrics")
    generation = admin.get("Deployment", namespace, "tiny")["metadata"]["generation"]

    # A rolling update by the real Deployment controller: a new template, requests answered throughout.
    admin.merge_patch("Endpoint", namespace, "tiny", {"spec": {"env": [{"name": "ROLLOUT", "value": "2"}]}})
    rolled = wait_for(lambda: (pods := ready_pods(admin, namespace, "tiny")) and len(pods) == 1
                      and pods[0]["metadata"]["uid"] != first["metadata"]["uid"] and pods[0],
                      timeout=240, what="the rolled replica ready and the old one gone")
    assert any(e["name"] == "ROLLOUT" for e in rolled["spec"]["containers"][0]["env"])
    live = admin.get("Deployment", namespace, "tiny")
    assert live["metadata"]["generation"] == generation + 1  # one new template, no back-and-forth
    assert live["spec"]["replicas"] == 1


def test_an_app_is_woken_from_zero_by_a_held_request_and_routed_without_its_prefix(admin, operator, gateways,
                                                                                   namespace):
    admin.create({"apiVersion": "shipyard.dev/v1alpha1", "kind": "App", "metadata": {"name": "web", "namespace": namespace},
                  "spec": {"command": ["python", "-m", "http.server", "--bind", "0.0.0.0", "$(PORT)"], "port": 8080,
                           "public": True, "replicas": {"min": 0, "max": 2}, "scaleToZero": {"idleSeconds": 3},
                           "resources": {"cpu": "100m", "memory": "128Mi"}}})
    deployment = wait_for(lambda: admin.get("Deployment", namespace, "web"), what="the Deployment")
    assert deployment["metadata"]["ownerReferences"][0]["kind"] == "App"
    wait_for(lambda: admin.get("App", namespace, "web").get("status", {}).get("phase") == "Idle"
             and not admin.list("Pod", namespace, {"shipyard.dev/name": "web"}), timeout=120,
             what="scaled to zero (phase Idle, no pod)")

    # Held by the second gateway replica while the operator wakes the Deployment; http.server lists its directory at `/`, so the gateway
    # stripped /PROJECT/NAME.
    answer = httpx.get(f"{gateways[1].url}/{namespace}/web/", timeout=120)
    assert answer.status_code == 200 and "Directory listing" in answer.text
    pod = ready_pods(admin, namespace, "web")[0]
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
    status = wait_for(lambda: (a := admin.get("App", namespace, "web")) and a["status"].get("readyReplicas") == 1
                      and a["status"], what="status from the ready pod")
    assert status["phase"] == "Ready" and status["url"].endswith(f"/{namespace}/web/")
