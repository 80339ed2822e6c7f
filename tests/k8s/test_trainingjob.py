"""A TrainingJob on the real control plane, nothing played by the test: the operator applies a suspended Indexed
Job and releases it, the real Job controller creates the pods, the real scheduler binds them to the node agent's
Nodes, the node agent runs real torch DDP (torchrun, gloo), a worker killed mid-run fails the Job through its pod
failure policy, the operator restarts the gang, which resumes from its checkpoint on the shared volume, and the
TrainingJob Succeeds."""

from __future__ import annotations

import ipaddress
import os
import signal
from typing import Any

import pytest

from shipyard.runtime.local import processes

from .conftest import REPO, wait_for

pytestmark = pytest.mark.timeout(600)
SCRIPT = REPO / "examples" / "train_ddp.py"


def trainingjob(name: str, namespace: str, steps: int, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "shipyard.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": 2, "command": ["torchrun", str(SCRIPT)],
                     "args": ["--steps", str(steps), "--checkpoint-dir", f"/ckpt/{name}", "--checkpoint-every", "5",
                              "--sleep-per-step", "0.2", "--batch-size", "2", "--seq-len", "32"],
                     "resources": {"cpu": "500m", "memory": "1Gi"},
                     "volumes": [{"name": "ckpt", "mountPath": "/ckpt", "size": "1Gi"}],
                     "maxRestarts": 3, "backoffSeconds": 1, "terminationGracePeriodSeconds": 10, **spec}}


def pods_of(admin, namespace: str, name: str) -> list[dict[str, Any]]:
    return admin.list("Pod", namespace, {"shipyard.dev/kind": "trainingjob", "shipyard.dev/name": name})


def running(pods: list[dict[str, Any]], count: int) -> list[dict[str, Any]] | None:
    live = [p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]
    return live if len(live) == count else None


def phase(admin, namespace: str, name: str) -> str | None:
    obj = admin.get("TrainingJob", namespace, name)
    return obj and obj.get("status", {}).get("phase")


def test_a_ddp_gang_is_released_scheduled_run_healed_after_a_killed_worker_and_succeeds(
        admin, operator, node_agent, namespace):
    admin.create(trainingjob("ddp", namespace, steps=40))

    job = wait_for(lambda: (j := admin.get("Job", namespace, "ddp")) and j["spec"].get("suspend") is False and j,
                   timeout=60, what="the operator to apply the Job and release it")
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["parallelism"] == 2
    managers = {m["manager"] for m in job["metadata"]["managedFields"]}
    assert "shipyard" in managers  # server-side applied by the operator's field manager

    gang = wait_for(lambda: running(pods_of(admin, namespace, "ddp"), 2), timeout=120,
                    what="the Job controller's pods, bound by the scheduler and started by the node agent")
    running_cr = wait_for(lambda: (c := admin.get("TrainingJob", namespace, "ddp")) and c["status"].get("phase")
                          == "Running" and c, timeout=60, what="phase Running on the CR")
    assert [r["phase"] for r in running_cr["status"]["replicaStatuses"]] == ["Running", "Running"]
    for pod in gang:
        assert pod["spec"]["nodeName"] in node_agent["nodes"]
        assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(node_agent["network"])
        assert any(c["type"] == "PodScheduled" and c["status"] == "True" for c in pod["status"]["conditions"])
    assert len({p["status"]["podIP"] for p in gang}) == 2
    if node_agent["routed"]:
        # The headless rendezvous Service's EndpointSlice, written by the real EndpointSlice controller, lists the
        # gang by the IPs the node agent reported (it would refuse loopback ones).
        wait_for(lambda: {a for s in admin.list("EndpointSlice", namespace, {"kubernetes.io/service-name": "ddp"})
                          for e in s.get("endpoints") or [] for a in e["addresses"]}
                 == {p["status"]["podIP"] for p in gang}, timeout=30, what="the Service's EndpointSlice")

    # Training is under way: rank 0 has written a checkpoint beyond step 0 (the operator reads progress too).
    wait_for(lambda: ((admin.get("TrainingJob", namespace, "ddp") or {}).get("status", {}).get("progress") or {}).get(
        "step", 0) >= 8, timeout=240, what="training progress on the TrainingJob's status")

    # Kill replica 1's processes as a crash would (no SIGTERM, no checkpoint).
    victim = next(p for p in gang if p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "1")
    killed = processes.pod_processes(victim["metadata"]["uid"])
    assert killed, "the node agent runs the pod's processes with its uid in their environment"
    for pid in killed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    wait_for(lambda: (admin.get("TrainingJob", namespace, "ddp") or {}).get("status", {}).get("restarts") == 1,
             timeout=120, what="the gang restart counted")
    failed = admin.get("TrainingJob", namespace, "ddp")["status"]["conditions"]
    assert any(c["type"] == "Running" and c["status"] == "False" and "replica" in c["message"] for c in failed), failed
    second = wait_for(lambda: (pods := [p for p in pods_of(admin, namespace, "ddp")
                                        if p["metadata"]["labels"].get("shipyard.dev/restart") == "1"])
                      and len(pods) == 2 and all(p["status"].get("podIP") for p in pods) and pods,
                      timeout=120, what="the second attempt's gang started")
    assert {p["metadata"]["uid"] for p in second}.isdisjoint({p["metadata"]["uid"] for p in gang})

    wait_for(lambda: phase(admin, namespace, "ddp") in ("Succeeded", "Failed"), timeout=400,
             what="the TrainingJob to finish")
    final = admin.get("TrainingJob", namespace, "ddp")
    assert final["status"]["phase"] == "Succeeded", final["status"]
    assert final["status"]["restarts"] == 1
    assert final["status"]["progress"]["step"] == 40
    assert final["status"]["completionTime"]
    events = [e for e in admin.list("Event", namespace) if e["involvedObject"]["name"] == "ddp"]
    assert {"Created", "Running", "Restarting", "Succeeded"} <= {e["reason"] for e in events}

    # The second attempt resumed from the checkpoint rank 0 wrote before the crash, not from step 0.
    rank0 = next(p for p in second if p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "0")
    log = "".join(line for line in admin.log(namespace, rank0["metadata"]["name"]))
    assert "resumed from checkpoint at step" in log and "(restart 1)" in log, log[-2000:]
    resumed_at = int(log.split("resumed from checkpoint at step ")[1].split()[0])
    assert resumed_at >= 5
