"""Kueue admits batch/v1 Jobs for real on a real control plane (tests/k8s/kueue.py): quota is reserved for the
first Job, the second waits suspended, and deleting the first releases the quota to the second.

No pods need to run: admission is Kueue's decision over requests and quota (the admitted Job's pods stay
Pending without a node, which Kueue does not look at without waitForPodsReady)."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import wait_for
from .kueue import QUEUE_LABEL, USERNAME, Api

pytestmark = pytest.mark.k8s

KUEUE = "kueue.x-k8s.io/v1beta2"
DEADLINE = 60.0  # generous for a loaded 2-core CI machine; admission itself takes well under a second


@pytest.fixture(scope="module")
def api(control_plane):
    client = Api.admin(control_plane)
    yield client
    client.close()


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == kind), None)


def is_true(obj: dict[str, Any] | None, kind: str) -> bool:
    found = condition(obj, kind)
    return found is not None and found["status"] == "True"


def job(name: str, queue: str, cpu: str) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "labels": {QUEUE_LABEL: queue}},
            "spec": {"suspend": True, "backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                # Never scheduled, so never run, whether or not the session's node agent is up: a Job that
                # finished would free its quota by itself and race the "b waits" step.
                "nodeSelector": {"shipyard.dev/test": "no-such-node"},
                "containers": [{"name": "main", "image": "busybox", "command": ["true"],
                                "resources": {"requests": {"cpu": cpu}}}]}}}}


def workload_of(api: Api, namespace: str, job_uid: str) -> dict[str, Any] | None:
    """The Workload Kueue made for a Job: the one it owns (its name is Kueue's, derived from the Job's)."""
    items = api.get(Api.path(KUEUE, "workloads", namespace=namespace))["items"]
    return next((w for w in items if any(o["uid"] == job_uid for o in w["metadata"].get("ownerReferences", []))),
                None)


def test_kueue_runs_as_its_own_service_account_not_admin(kueue, control_plane):
    """Kueue authenticates with its ServiceAccount's token, so it has exactly the stock kueue-manager-role."""
    as_kueue = Api(control_plane.server, kueue.user.token, control_plane.pki / "ca.crt")
    try:
        review = as_kueue.create("/apis/authentication.k8s.io/v1/selfsubjectreviews",
                                 {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    finally:
        as_kueue.close()
    info = review["status"]["userInfo"]
    assert info["username"] == USERNAME
    assert "system:masters" not in info.get("groups", [])


def make_queues(api: Api, namespace: str, cpu: str = "1") -> tuple[str, str, str]:
    """A ResourceFlavor, a ClusterQueue with `cpu` of quota for this namespace, and its LocalQueue "team"."""
    suffix = namespace.rsplit("-", 1)[1]  # cluster-scoped names unique to this test
    flavor, cluster_queue, queue = f"flavor-{suffix}", f"cq-{suffix}", "team"
    api.create(Api.path(KUEUE, "resourceflavors"),
               {"apiVersion": KUEUE, "kind": "ResourceFlavor", "metadata": {"name": flavor}})
    api.create(Api.path(KUEUE, "clusterqueues"), {
        "apiVersion": KUEUE, "kind": "ClusterQueue", "metadata": {"name": cluster_queue},
        "spec": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                 # Memory too: a Workload asking for a resource its ClusterQueue does not cover is never admitted
                 # (Shipyard's pods request memory).
                 "resourceGroups": [{"coveredResources": ["cpu", "memory"], "flavors": [
                     {"name": flavor, "resources": [{"name": "cpu", "nominalQuota": cpu},
                                                    {"name": "memory", "nominalQuota": "64Gi"}]}]}]}})
    api.create(Api.path(KUEUE, "localqueues", namespace=namespace), {
        "apiVersion": KUEUE, "kind": "LocalQueue", "metadata": {"name": queue, "namespace": namespace},
        "spec": {"clusterQueue": cluster_queue}})
    # A Job sent to an inactive queue would wait for the wrong reason; Kueue marks both Active once it sees them.
    wait_for(lambda: is_true(api.get(Api.path(KUEUE, "clusterqueues", cluster_queue)), "Active")
             and is_true(api.get(Api.path(KUEUE, "localqueues", queue, namespace)), "Active"),
             DEADLINE, what="the ClusterQueue and LocalQueue to be Active")
    return flavor, cluster_queue, queue


def remove_queues(api: Api, namespace: str, flavor: str, cluster_queue: str, queue: str) -> None:
    """Leave nothing that needs Kueue behind: its finalizers on the Workloads, the ClusterQueue and the flavor are
    lifted only by a running Kueue."""
    wait_for(lambda: not any(w["metadata"].get("finalizers")
                             for w in api.get(Api.path(KUEUE, "workloads", namespace=namespace))["items"]),
             DEADLINE, what="Kueue to release the Workloads")
    api.delete(Api.path(KUEUE, "localqueues", queue, namespace))
    api.delete(Api.path(KUEUE, "clusterqueues", cluster_queue))
    api.delete(Api.path(KUEUE, "resourceflavors", flavor))
    wait_for(lambda: api.get(Api.path(KUEUE, "clusterqueues", cluster_queue)) is None
             and api.get(Api.path(KUEUE, "resourceflavors", flavor)) is None, DEADLINE,
             what="the ClusterQueue and ResourceFlavor to be gone")


def test_jobs_are_admitted_within_quota_and_the_next_when_quota_frees(kueue, api, namespace):
    flavor, cluster_queue, queue = make_queues(api, namespace)
    jobs = Api.path("batch/v1", "jobs", namespace=namespace)
    a = api.create(jobs, job("a", queue, "1"))
    wait_for(lambda: is_true(workload_of(api, namespace, a["metadata"]["uid"]), "Admitted"), DEADLINE,
             what="Job a's Workload to be admitted")
    b = api.create(jobs, job("b", queue, "1"))

    workload_a = workload_of(api, namespace, a["metadata"]["uid"])
    assert is_true(workload_a, "QuotaReserved")
    assert workload_a["status"]["admission"]["clusterQueue"] == cluster_queue
    # Kueue starts an admitted Job by unsuspending it.
    wait_for(lambda: api.get(Api.path("batch/v1", "jobs", "a", namespace))["spec"]["suspend"] is False, DEADLINE,
             what="Job a to be unsuspended")

    # b does not fit: its Workload is pending on quota and the Job stays suspended. Kueue says so in the
    # QuotaReserved condition (False, reason Pending) once it has tried b, which is what we wait for.
    def b_pending() -> dict[str, Any] | None:
        workload = workload_of(api, namespace, b["metadata"]["uid"])
        found = condition(workload, "QuotaReserved")
        return workload if found and found["status"] == "False" else None

    workload_b = wait_for(b_pending, DEADLINE, what="Job b's Workload to be pending")
    # "Pending" in v0.19 (a finer reason such as "WaitingForQuota" with the UnadmittedWorkloadsObservability gate).
    assert condition(workload_b, "QuotaReserved")["reason"] in ("Pending", "WaitingForQuota")
    assert not is_true(workload_b, "Admitted")
    assert api.get(Api.path("batch/v1", "jobs", "b", namespace))["spec"]["suspend"] is True

    # Deleting a releases its quota and Kueue admits b. Kueue marks a's Workload Finished (reason OwnerNotFound) and
    # lifts its finalizer; the object itself goes later, with the garbage collector (which notices a new CRD's
    # kinds only at its next discovery pass).
    api.delete(Api.path("batch/v1", "jobs", "a", namespace))
    wait_for(lambda: is_true(workload_of(api, namespace, b["metadata"]["uid"]), "Admitted"), DEADLINE,
             what="Job b's Workload to be admitted after a was deleted")
    wait_for(lambda: api.get(Api.path("batch/v1", "jobs", "b", namespace))["spec"]["suspend"] is False, DEADLINE,
             what="Job b to be unsuspended")
    workload_a = workload_of(api, namespace, a["metadata"]["uid"])
    assert workload_a is None or is_true(workload_a, "Finished")

    api.delete(Api.path("batch/v1", "jobs", "b", namespace))
    remove_queues(api, namespace, flavor, cluster_queue, queue)


SLEEPER = ["python", "-c", "import time\nwhile True: time.sleep(1)"]


def queued_trainingjob(name: str, namespace: str, queue: str) -> dict[str, Any]:
    return {"apiVersion": "shipyard.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": name, "namespace": namespace, "labels": {QUEUE_LABEL: queue}},
            "spec": {"replicas": 2, "command": SLEEPER, "resources": {"cpu": "500m", "memory": "64Mi"},
                     "terminationGracePeriodSeconds": 2}}


def admitted(admin, namespace: str, name: str) -> dict[str, Any] | None:
    return condition(admin.get("TrainingJob", namespace, name), "Admitted")


def test_a_queued_trainingjob_waits_for_quota_and_is_admitted_when_it_frees(kueue, api, admin, operator, namespace):
    flavor, cluster_queue, queue = make_queues(api, namespace, cpu="1")  # one gang of 2 x 500m at a time
    admin.create(queued_trainingjob("first", namespace, queue))
    wait_for(lambda: (admin.get("TrainingJob", namespace, "first") or {}).get("status", {}).get("phase") == "Running",
             timeout=120, what="the first gang admitted by Kueue and running")
    assert admin.get("Job", namespace, "first")["metadata"]["labels"][QUEUE_LABEL] == queue

    admin.create(queued_trainingjob("second", namespace, queue))
    job = wait_for(lambda: admin.get("Job", namespace, "second"), what="the second gang's Job, created suspended")
    workload = wait_for(lambda: (w := workload_of(api, namespace, job["metadata"]["uid"]))
                        and (c := condition(w, "QuotaReserved")) and c["status"] == "False" and w,
                        timeout=DEADLINE, what="the second Workload pending on quota")
    assert not is_true(workload, "Admitted")
    waiting = wait_for(lambda: (c := admitted(admin, namespace, "second")) and c["status"] == "False" and c,
                       timeout=DEADLINE, what="Admitted=False on the waiting TrainingJob")
    assert waiting["reason"] == "Queued"
    assert admin.get("Job", namespace, "second")["spec"]["suspend"] is True
    assert not admin.list("Pod", namespace, {"shipyard.dev/name": "second"})

    admin.delete("TrainingJob", namespace, "first")  # its Job goes, its quota frees, Kueue admits the second
    wait_for(lambda: (admin.get("TrainingJob", namespace, "second") or {}).get("status", {}).get("phase")
             == "Running", timeout=120, what="the second gang admitted and running")
    assert admitted(admin, namespace, "second")["status"] == "True"
    admin.delete("TrainingJob", namespace, "second")
    wait_for(lambda: admin.get("TrainingJob", namespace, "second") is None, timeout=60, what="the second gone")
    remove_queues(api, namespace, flavor, cluster_queue, queue)
