"""Shipyard's node agent as the kubelet of a real control plane: the real scheduler binds pods to its Nodes,
the agent runs them as local processes, and the real controllers (Job, PV binder, garbage collector) see
their statuses. Every wait polls the API with a deadline."""

from __future__ import annotations

import ipaddress

import sys
import urllib.request

import httpx
import pytest

from shipyard.runtime.local import processes

from .conftest import GPUS_PER_NODE, wait_for

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(240)]

PY = sys.executable


def pod(name, namespace, command, **spec):
    container = {"name": "main", "image": "python:3.12-slim", "command": command, **spec.pop("container", {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [container], "terminationGracePeriodSeconds": 5, **spec}}


def phase(admin, namespace, name):
    return (admin.get("Pod", namespace, name) or {}).get("status", {}).get("phase")


def condition(obj, ctype):
    return next((c["status"] for c in (obj or {}).get("status", {}).get("conditions", []) if c["type"] == ctype), None)


def test_nodes_are_registered_ready_with_declared_gpus_and_leases(admin, node_agent):
    for name in node_agent["nodes"]:
        node = admin.get("Node", None, name)
        assert condition(node, "Ready") == "True"
        assert node["metadata"]["labels"]["kubernetes.io/hostname"] == name
        assert node["metadata"]["labels"]["type"] == "shipyard-node-agent"
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == str(GPUS_PER_NODE)
        assert node["status"]["allocatable"]["pods"] == "110"
        assert {"type": "InternalIP", "address": "127.0.0.1"} in node["status"]["addresses"]
        # The node lifecycle controller takes off the not-ready taint it may have put on at registration.
        wait_for(lambda: not admin.get("Node", None, name)["spec"].get("taints"), timeout=30,
                 what=f"{name} without taints")
        lease = admin.get("Lease", "kube-node-lease", name)
        assert lease["spec"]["holderIdentity"] == name


def test_a_pod_runs_with_its_own_ip_and_its_logs_reach_kubectl(admin, node_agent, namespace):
    script = ("import os, sys\n"
              "print('node', os.environ['NODE'], 'ip', os.environ['POD_IP'])\n"
              "print('to stderr', file=sys.stderr)\n"
              "sys.exit(0)\n")
    admin.create(pod("hello", namespace, [PY, "-c", script], restartPolicy="Never", container={"env": [
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}))
    wait_for(lambda: phase(admin, namespace, "hello") == "Succeeded", timeout=60, what="the pod to succeed")
    obj = admin.get("Pod", namespace, "hello")
    status, node = obj["status"], obj["spec"]["nodeName"]
    assert node in node_agent["nodes"]
    assert ipaddress.ip_address(status["podIP"]) in ipaddress.ip_network(node_agent["network"])
    assert status["hostIP"] == "127.0.0.1"
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    assert condition(obj, "PodScheduled") == "True" and condition(obj, "Ready") == "False"
    # Through the API server's pods/log, which calls the agent's /containerLogs endpoint.
    lines = list(admin.log(namespace, "hello"))
    assert [line.rstrip("\n") for line in lines] == [f"node {node} ip {status['podIP']}", "to stderr"]
    assert list(admin.log(namespace, "hello", tail_lines=1)) == ["to stderr\n"]


def test_a_server_becomes_ready_on_its_pod_ip_and_stops_gracefully_on_deletion(admin, node_agent, namespace):
    server = ("import http.server, signal, sys\n"
              "signal.signal(signal.SIGTERM, lambda *_: (print('bye', flush=True), sys.exit(0)))\n"
              "srv = http.server.HTTPServer((sys.argv[1], 8080), http.server.SimpleHTTPRequestHandler)\n"
              "print('serving', flush=True)\n"
              "srv.serve_forever()\n")
    admin.create(pod("web", namespace, [PY, "-c", server], restartPolicy="Always", container={
        "args": ["0.0.0.0"], "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}}))
    wait_for(lambda: condition(admin.get("Pod", namespace, "web"), "Ready") == "True", timeout=60,
             what="the server to be Ready")
    obj = admin.get("Pod", namespace, "web")
    ip, uid = obj["status"]["podIP"], obj["metadata"]["uid"]
    with urllib.request.urlopen(f"http://{ip}:8080/", timeout=5) as resp:
        assert resp.status == 200
    assert processes.pod_processes(uid)
    admin.delete("Pod", namespace, "web")
    wait_for(lambda: admin.get("Pod", namespace, "web") is None, timeout=60, what="the pod to be removed")
    assert not processes.pod_processes(uid)
    log = node_agent["root"] / "logs" / namespace / "web.log"
    assert log.read_text().splitlines()[-1] == "bye"  # SIGTERM reached it, and it stopped in its own time


def test_an_indexed_job_completes_and_a_failing_one_fails(admin, node_agent, namespace):
    def job(name, script, completions):
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": namespace},
                "spec": {"completions": completions, "parallelism": completions, "completionMode": "Indexed",
                         "backoffLimit": 0, "template": {"spec": {
                             "restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
                             "containers": [{"name": "main", "image": "python:3.12-slim",
                                             "command": [PY, "-c", script]}]}}}}

    admin.create(job("ok", "import os; print('index', os.environ['JOB_COMPLETION_INDEX'])", 2))
    admin.create(job("bad", "import sys; sys.exit(7)", 1))
    wait_for(lambda: condition(admin.get("Job", namespace, "ok"), "Complete") == "True", timeout=90,
             what="the Job to complete")
    assert admin.get("Job", namespace, "ok")["status"]["succeeded"] == 2
    wait_for(lambda: condition(admin.get("Job", namespace, "bad"), "Failed") == "True", timeout=90,
             what="the failing Job to fail")
    failed = [p for p in admin.list("Pod", namespace, labels={"job-name": "bad"})]
    assert failed and failed[0]["status"]["phase"] == "Failed"
    assert failed[0]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 7


def test_a_claim_is_provisioned_bound_and_mounted(admin, node_agent, namespace):
    admin.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                  "metadata": {"name": "data", "namespace": namespace},
                  "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    admin.create(pod("writer", namespace, [PY, "-c", "import sys; open(sys.argv[1], 'w').write('kept')",
                                           "/data/out.txt"], restartPolicy="Never", container={
        "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]))
    wait_for(lambda: phase(admin, namespace, "writer") == "Succeeded", timeout=90, what="the writer to succeed")
    claim = admin.get("PersistentVolumeClaim", namespace, "data")
    assert claim["status"]["phase"] == "Bound"
    volume = admin.get("PersistentVolume", None, claim["spec"]["volumeName"])
    path = volume["spec"]["hostPath"]["path"]
    assert path == str(node_agent["root"] / "volumes" / namespace / "data")
    assert (node_agent["root"] / "volumes" / namespace / "data" / "out.txt").read_text() == "kept"
    # Reclaim policy Delete: once the claim is gone, the agent deletes the released volume and its directory.
    admin.delete("Pod", namespace, "writer")
    admin.delete("PersistentVolumeClaim", namespace, "data")
    wait_for(lambda: admin.get("PersistentVolume", None, volume["metadata"]["name"]) is None, timeout=60,
             what="the released volume to be deleted")
    assert not (node_agent["root"] / "volumes" / namespace / "data").exists()


def test_gpu_requests_are_scheduled_against_the_declared_gpus(admin, node_agent, namespace):
    script = "import os; print(repr(os.environ['CUDA_VISIBLE_DEVICES']))"
    gpus = {"resources": {"limits": {"nvidia.com/gpu": str(GPUS_PER_NODE)}}}
    admin.create(pod("gpu", namespace, [PY, "-c", script], restartPolicy="Never", container=gpus))
    too_many = {"resources": {"limits": {"nvidia.com/gpu": str(GPUS_PER_NODE + 1)}}}
    admin.create(pod("too-many", namespace, [PY, "-c", script], restartPolicy="Never", container=too_many))
    wait_for(lambda: phase(admin, namespace, "gpu") == "Succeeded", timeout=60, what="the GPU pod to succeed")
    node = admin.get("Pod", namespace, "gpu")["spec"]["nodeName"]
    log = node_agent["root"] / "logs" / namespace / "gpu.log"
    assert log.read_text().strip() == repr(",".join(str(i) for i in range(GPUS_PER_NODE)))
    assert node in node_agent["nodes"]
    wait_for(lambda: condition(admin.get("Pod", namespace, "too-many"), "PodScheduled") == "False", timeout=30,
             what="the scheduler to find no node for 3 GPUs")
    assert not admin.get("Pod", namespace, "too-many")["spec"].get("nodeName")


def test_an_evicted_pod_stops_and_fails_as_a_disruption(control_plane, admin, node_agent, namespace):
    # A finalizer of the test's own keeps the pod readable after the agent has removed it.
    hold = "shipyard.dev/test-hold"
    spec = pod("victim", namespace, [PY, "-c", "import time; print('up', flush=True); time.sleep(300)"],
               restartPolicy="Never")
    spec["metadata"]["finalizers"] = [hold]
    admin.create(spec)
    log = node_agent["root"] / "logs" / namespace / "victim.log"
    wait_for(lambda: log.exists() and log.read_text() == "up\n", timeout=60, what="the pod to run")
    uid = admin.get("Pod", namespace, "victim")["metadata"]["uid"]
    response = httpx.post(
        f"{control_plane.server}/api/v1/namespaces/{namespace}/pods/victim/eviction",
        json={"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "victim", "namespace": namespace}},
        headers={"Authorization": f"Bearer {control_plane.admin.token}"}, verify=str(control_plane.pki / "ca.crt"))
    assert response.status_code == 201, response.text
    wait_for(lambda: phase(admin, namespace, "victim") == "Failed", timeout=60, what="the evicted pod to fail")
    obj = admin.get("Pod", namespace, "victim")
    assert condition(obj, "DisruptionTarget") == "True"  # added by the API server, kept by the agent's patch
    terminated = obj["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 143 and terminated["reason"] == "Error"  # SIGTERM's default: death
    wait_for(lambda: admin.get("Pod", namespace, "victim")["metadata"].get("deletionGracePeriodSeconds") == 0,
             timeout=30, what="the agent to finish the deletion")
    assert not processes.pod_processes(uid)
    admin.merge_patch("Pod", namespace, "victim", {"metadata": {"finalizers": None}})
    wait_for(lambda: admin.get("Pod", namespace, "victim") is None, timeout=30, what="the pod to go")
