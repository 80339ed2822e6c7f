"""Evicting one pod of a running gang through the Eviction API (what `kubectl drain` does), on the real control
plane: what the API server, the Job controller and the operator do, and that it matches docs/cluster.md: the
whole gang is recreated at once, and the disruption is not counted against maxRestarts."""

from __future__ import annotations

import httpx
import pytest

from .conftest import wait_for
from .test_trainingjob import pods_of, running, trainingjob

pytestmark = pytest.mark.timeout(600)


def evict(control_plane, namespace: str, pod: str) -> httpx.Response:
    return httpx.post(f"{control_plane.server}/api/v1/namespaces/{namespace}/pods/{pod}/eviction",
                      json={"apiVersion": "policy/v1", "kind": "Eviction",
                            "metadata": {"name": pod, "namespace": namespace}},
                      headers={"Authorization": f"Bearer {control_plane.admin.token}"},
                      verify=str(control_plane.pki / "ca.crt"))


def test_evicting_one_replica_of_a_running_gang(control_plane, admin, operator, namespace):
    # maxRestarts 0: were the disruption counted, the job would fail.
    admin.create(trainingjob("drain", namespace, steps=60, maxRestarts=0))
    gang = wait_for(lambda: running(pods_of(admin, namespace, "drain"), 2), timeout=120, what="the gang running")
    wait_for(lambda: ((admin.get("TrainingJob", namespace, "drain") or {}).get("status", {}).get("progress") or {})
             .get("step", 0) >= 6, timeout=240, what="training under way")
    # The operator applied the gang's NetworkPolicy (its RBAC allows it), owned by the TrainingJob. The node agent
    # does not enforce it: what it admits is unit-tested (tests/unit/test_compiler.py).
    policy = admin.get("NetworkPolicy", namespace, "drain")
    assert policy["metadata"]["ownerReferences"][0]["kind"] == "TrainingJob"
    assert policy["spec"]["podSelector"]["matchLabels"] == {"shipyard.dev/kind": "trainingjob",
                                                            "shipyard.dev/name": "drain"}
    victim = next(p for p in gang if p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "1")
    response = evict(control_plane, namespace, victim["metadata"]["name"])
    assert response.status_code == 201, response.text

    # The API server marks the pod (DisruptionTarget) and deletes it gracefully; the node agent SIGTERMs it, the
    # workload checkpoints and exits 143.
    evicted = wait_for(lambda: (p := admin.get("Pod", namespace, victim["metadata"]["name"])) is None
                       or (p["status"].get("phase") == "Failed" and p), timeout=60, what="the evicted pod stopped")
    if isinstance(evicted, dict):  # still there, Failed (wait_for returns True once it is already gone)
        assert any(c["type"] == "DisruptionTarget" and c["status"] == "True" for c in evicted["status"]["conditions"])

    # The Job's disruption rule fails the Job at once (its peer is stopped rather than left in a collective until
    # it times out), and the operator recreates the whole gang as the next attempt without counting a restart.
    wait_for(lambda: admin.get("TrainingJob", namespace, "drain")["status"].get("disruptions") == 1, timeout=120,
             what="the disruption recorded")
    assert admin.get("TrainingJob", namespace, "drain")["status"].get("restarts", 0) == 0
    wait_for(lambda: admin.get("TrainingJob", namespace, "drain")["status"].get("phase") in ("Succeeded", "Failed"),
             timeout=300, what="the TrainingJob to finish")
    final = admin.get("TrainingJob", namespace, "drain")["status"]
    assert final["phase"] == "Succeeded" and final.get("restarts", 0) == 0 and final["disruptions"] == 1, final
    events = {e["reason"]: e["message"] for e in admin.list("Event", namespace)
              if e["involvedObject"]["name"] == "drain"}
    assert "Restarting" not in events
    assert f"replica 1 ({victim['metadata']['name']}) was disrupted" in events["Disrupted"]
    assert "not counted against maxRestarts" in events["Disrupted"]
    second = [p for p in pods_of(admin, namespace, "drain") if p["metadata"]["labels"]["shipyard.dev/restart"] == "1"]
    assert sorted(p["status"]["phase"] for p in second) == ["Succeeded", "Succeeded"]  # the whole gang, anew
    rank0 = next(p for p in second if p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "0")
    log = "".join(admin.log(namespace, rank0["metadata"]["name"]))
    assert "resumed from checkpoint at step" in log
