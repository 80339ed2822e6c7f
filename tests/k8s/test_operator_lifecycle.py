"""The operator's object lifecycle on a real API server: finalizers and foreground deletion carried out by the real
garbage collector, drift corrected by server-side apply with real managed fields, a Workspace's StatefulSet run
by the real StatefulSet controller, and a Sweep's trials as TrainingJob CRs it owns."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from shipyard.runtime.local import processes

from .conftest import wait_for

pytestmark = pytest.mark.timeout(400)

SLEEPER = ["python", "-c", "import time\nwhile True: time.sleep(1)"]


def trainingjob(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "shipyard.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": 2, "command": SLEEPER, "resources": {"cpu": "100m", "memory": "128Mi"},
                     "maxRestarts": 0, "terminationGracePeriodSeconds": 5, **spec}}


def pods_of(admin, namespace: str, name: str, kind: str = "trainingjob") -> list[dict[str, Any]]:
    return admin.list("Pod", namespace, {"shipyard.dev/kind": kind, "shipyard.dev/name": name})


def running(pods: list[dict[str, Any]], count: int) -> list[dict[str, Any]] | None:
    live = [p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]
    return live if len(live) == count else None


def test_deleting_a_trainingjob_runs_its_finalizer_and_the_garbage_collector_removes_the_gang(admin, operator,
                                                                                              namespace):
    admin.create(trainingjob("gc", namespace))
    gang = wait_for(lambda: running(pods_of(admin, namespace, "gc"), 2), timeout=90, what="the gang running")
    cr = admin.get("TrainingJob", namespace, "gc")
    assert cr["metadata"].get("finalizers"), "the operator guards its children with a finalizer"
    job = admin.get("Job", namespace, "gc")
    assert job["metadata"]["ownerReferences"][0]["uid"] == cr["metadata"]["uid"]
    uids = [p["metadata"]["uid"] for p in gang]
    # Running is reported once the pod's shim is launched; the workload under it follows a moment later.
    wait_for(lambda: all(processes.pod_processes(uid) for uid in uids), timeout=30, what="the pods' processes")

    admin.delete("TrainingJob", namespace, "gc")
    wait_for(lambda: admin.get("TrainingJob", namespace, "gc") is None, timeout=90,
             what="the TrainingJob gone once its finalizer ran")
    assert admin.get("Job", namespace, "gc") is None
    wait_for(lambda: not pods_of(admin, namespace, "gc"), timeout=60, what="the pods collected")
    wait_for(lambda: not any(processes.pod_processes(uid) for uid in uids), timeout=30,
             what="the node agent to stop the pods' processes")


def test_drift_is_corrected_by_server_side_apply_with_real_managed_fields(admin, operator, namespace):
    admin.create(trainingjob("drift", namespace, replicas=1))
    service = wait_for(lambda: admin.get("Service", namespace, "drift"), what="the gang's headless Service")
    managers = {m["manager"]: m for m in service["metadata"]["managedFields"]}
    assert managers["shipyard"]["operation"] == "Apply"
    original = service["spec"]["publishNotReadyAddresses"]

    # Someone edits a field Shipyard owns (a plain update, as `kubectl edit` does): the operator takes it back.
    admin.merge_patch("Service", namespace, "drift", {"spec": {"publishNotReadyAddresses": not original},
                                                     "metadata": {"labels": {"edited-by": "kubectl"}}})
    wait_for(lambda: admin.get("Service", namespace, "drift")["spec"]["publishNotReadyAddresses"] == original,
             timeout=60, what="the drift corrected")
    fixed = admin.get("Service", namespace, "drift")
    # A field Shipyard does not manage stays as the other manager left it: no fight over it.
    assert fixed["metadata"]["labels"]["edited-by"] == "kubectl"
    owners = {m["manager"] for m in fixed["metadata"]["managedFields"]
              if "f:publishNotReadyAddresses" in m.get("fieldsV1", {}).get("f:spec", {})}
    assert owners == {"shipyard"}
    admin.delete("TrainingJob", namespace, "drift")


def test_a_workspace_runs_as_a_statefulset_of_the_real_controller(admin, operator, namespace):
    admin.create({"apiVersion": "shipyard.dev/v1alpha1", "kind": "Workspace",
                  "metadata": {"name": "nb", "namespace": namespace},
                  "spec": {"ide": "jupyterlab", "resources": {"cpu": "250m", "memory": "1Gi"},
                           "volumes": [{"name": "work", "mountPath": "/work", "size": "1Gi"}]}})
    statefulset = wait_for(lambda: admin.get("StatefulSet", namespace, "nb"), what="the StatefulSet")
    pod = wait_for(lambda: (p := admin.get("Pod", namespace, "nb-0")) and any(
        c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", [])) and p,
        timeout=180, what="the StatefulSet controller's pod nb-0 ready (Jupyter answering its probe)")
    assert pod["metadata"]["ownerReferences"][0]["uid"] == statefulset["metadata"]["uid"]
    wait_for(lambda: admin.get("Workspace", namespace, "nb")["status"].get("phase") in ("Ready", "Running"),
             timeout=60, what="the Workspace's status")
    admin.delete("Workspace", namespace, "nb")
    wait_for(lambda: admin.get("Pod", namespace, "nb-0") is None, timeout=90, what="the workspace's pod gone")


SYNTHETIC = textwrap.dedent("""
    import json, sys, time
    quality = float(sys.argv[1])
    for step in range(1, 11):
        print("SHIPYARD_PROGRESS " + json.dumps({"step": step, "total_steps": 10, "loss": 1 - quality * step / 10}),
              flush=True)
        time.sleep(0.2)
""")


def test_a_sweeps_trials_are_trainingjob_crs_it_owns(admin, operator, namespace):
    admin.create({"apiVersion": "shipyard.dev/v1alpha1", "kind": "Sweep",
                  "metadata": {"name": "grid", "namespace": namespace},
                  "spec": {"parameters": [{"name": "q", "type": "categorical", "values": ["0.2", "0.8"]}],
                           "algorithm": {"type": "grid"}, "objective": {"metric": "loss", "goal": "minimize"},
                           "parallelism": 2,
                           "trial": {"command": ["python", "-c", SYNTHETIC, "${q}"], "maxRestarts": 0,
                                     "resources": {"cpu": "100m", "memory": "128Mi"}}}})
    sweep = wait_for(lambda: (s := admin.get("Sweep", namespace, "grid")) and s.get("status", {}).get("phase")
                     in ("Succeeded", "Failed") and s, timeout=240, what="the sweep to finish")
    assert sweep["status"]["phase"] == "Succeeded", sweep["status"]
    assert sweep["status"]["bestTrial"]["parameters"]["q"] == "0.8"
    trials = [t for t in admin.list("TrainingJob", namespace) if t["metadata"]["name"].startswith("grid-")]
    assert len(trials) == 2
    for trial in trials:
        owner = trial["metadata"]["ownerReferences"][0]
        assert owner["kind"] == "Sweep" and owner["uid"] == sweep["metadata"]["uid"]
        assert trial["status"]["phase"] == "Succeeded"
    admin.delete("Sweep", namespace, "grid")
    wait_for(lambda: not [t for t in admin.list("TrainingJob", namespace) if t["metadata"]["name"].startswith("grid-")],
             timeout=90, what="the trials collected with their sweep")
