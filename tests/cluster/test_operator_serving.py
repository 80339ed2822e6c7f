"""Sweeps and Workspaces under the operator, against the Kubernetes API mock server.

What the operator asks of the API for Sweeps and Workspaces. Serving end to end (a request held at the gateway
while the operator wakes a Deployment that the real Deployment controller and Shipyard's node agent then run) is
tested on a real control plane: tests/k8s/test_serving.py.
"""

from __future__ import annotations

import pytest

from .conftest import wait_for

NS = "default"
pytestmark = pytest.mark.timeout(120)


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
