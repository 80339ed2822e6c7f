"""A node lost under a running gang, on the real control plane: the machine stops answering (its node agent and
every process it ran are killed, as when a machine loses power), the node lifecycle controller sees its Lease
expire and taints it unreachable, evicts the gang's pods once their toleration runs out (DisruptionTarget), and
the operator recreates the whole gang on the other nodes without counting a restart, removing by force the pods
no kubelet is left to finish. It also measures how long the gang takes to come back (docs/cluster.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any, Iterator

import pytest

from shipyard.compiler.trainingjob import NODE_LOSS_TOLERATION_SECONDS
from shipyard.runtime.local.processes import pod_processes

from .conftest import _node_ready, stop_process, wait_for
from .test_trainingjob import pods_of, running, trainingjob

pytestmark = pytest.mark.timeout(900)
LOST = "node-lost"


@pytest.fixture
def lost_node(control_plane, admin, node_agent, tmp_path) -> Iterator[dict[str, Any]]:
    """A third Node with an agent of its own (its own loopback pod network; the session agent provisions the
    volumes), so it can be lost without touching the session's nodes."""
    log = tmp_path / "agent.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shipyard.cluster.nodeagent", "--kubeconfig", str(control_plane.kubeconfig),
             "--nodes", LOST, "--root", str(tmp_path), "--pod-network", "127.2.0.0/16", "--no-provisioner"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: _node_ready(admin.get("Node", None, LOST)), timeout=60, what="the extra Node Ready")
        yield {"process": proc, "log": log}
    finally:
        if proc.poll() is None:
            stop_process(proc, grace=30)
        for node in node_agent["nodes"]:
            admin.apply({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node},
                         "spec": {"unschedulable": False}})
        admin.delete("Node", None, LOST)  # the pod garbage collector removes whatever was left on it


def cordon(admin, nodes: list[str], on: bool) -> None:
    for node in nodes:
        admin.apply({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}, "spec": {"unschedulable": on}})


def attempt(admin, namespace: str, n: int) -> list[dict[str, Any]]:
    return [p for p in pods_of(admin, namespace, "lost") if p["metadata"]["labels"]["shipyard.dev/restart"] == str(n)]


def test_a_gang_on_a_lost_node_comes_back_elsewhere_without_a_counted_restart(
        admin, operator, node_agent, lost_node, namespace):
    cordon(admin, node_agent["nodes"], True)  # the gang can only land on the node about to be lost
    admin.create(trainingjob("lost", namespace, steps=400, maxRestarts=0))
    gang = wait_for(lambda: running(pods_of(admin, namespace, "lost"), 2), timeout=180, what="the gang running")
    assert {p["spec"]["nodeName"] for p in gang} == {LOST}
    cordon(admin, node_agent["nodes"], False)
    wait_for(lambda: ((admin.get("TrainingJob", namespace, "lost") or {}).get("status", {}).get("progress") or {})
             .get("step", 0) >= 6, timeout=240, what="training under way")

    # Power off: the agent and every process of its pods, at once.
    lost_at = time.monotonic()
    victims = [pid for p in gang for pid in pod_processes(p["metadata"]["uid"])]
    os.killpg(lost_node["process"].pid, signal.SIGKILL)
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    lost_node["process"].wait(30)

    def node_tainted() -> bool:
        taints = admin.get("Node", None, LOST)["spec"].get("taints", [])
        return any(t["key"] == "node.kubernetes.io/unreachable" and t["effect"] == "NoExecute" for t in taints)

    wait_for(node_tainted, timeout=120, what="the lost Node tainted unreachable")
    tainted = time.monotonic() - lost_at
    wait_for(lambda: admin.get("TrainingJob", namespace, "lost")["status"].get("disruptions") == 1,
             timeout=NODE_LOSS_TOLERATION_SECONDS + 120, what="the gang's eviction seen as a disruption")
    disrupted = time.monotonic() - lost_at
    back = wait_for(lambda: running(attempt(admin, namespace, 1), 2), timeout=240,
                    what="the next attempt running on the other nodes")
    recovered = time.monotonic() - lost_at
    print(f"\nnode lost → tainted {tainted:.0f}s, disruption seen {disrupted:.0f}s, gang back {recovered:.0f}s")
    assert {p["spec"]["nodeName"] for p in back} <= set(node_agent["nodes"])

    events = {e["reason"]: e["message"] for e in admin.list("Event", namespace)
              if e["involvedObject"]["name"] == "lost"}
    assert "DeletionByTaintManager" in events["Disrupted"]
    assert "LostPodRemoved" in events  # the old pods could only go by force: no kubelet answers for them
    status = admin.get("TrainingJob", namespace, "lost")["status"]
    assert status.get("restarts", 0) == 0 and status["phase"] in ("Running", "Restarting", "Succeeded"), status
    admin.delete("TrainingJob", namespace, "lost")
    wait_for(lambda: admin.get("TrainingJob", namespace, "lost") is None, timeout=120, what="the job deleted")
