"""The operator end to end over real HTTP against a Kubernetes API mock server (kmock).

The fast tier of the cluster tests (`make test`): the test plays the user (kubectl) and checks what the operator
asks of the API — the server-side applies it sends and their parameters, the finalizer, the children it deletes,
leader election, namespace-limited watches. What Kubernetes' own controllers do with those objects (pods run,
Jobs fail and complete, gangs restart, status lands on the CR) is tested on a real control plane in tests/k8s
(`make test-k8s`), where the real Job, Deployment and StatefulSet controllers, the scheduler and Shipyard's node
agent do it, not the test.
"""

from __future__ import annotations

from typing import Any

import pytest

from shipyard.cluster.api import KubeApi

from .conftest import SYSTEM_NAMESPACE, wait_for

NS = "default"
pytestmark = pytest.mark.timeout(120)


def create_trainingjob(kubectl: KubeApi, name: str = "llm", **spec: Any) -> dict[str, Any]:
    body = {"replicas": 2, "command": ["torchrun", "train.py"], "backoffSeconds": 0, "maxRestarts": 3,
            "volumes": [{"name": "ckpt", "mountPath": "/ckpt", "size": "1Gi"}], **spec}
    return kubectl.create({"apiVersion": "shipyard.dev/v1alpha1", "kind": "TrainingJob",
                           "metadata": {"name": name, "namespace": NS}, "spec": body})


def cr(kubectl: KubeApi, name: str = "llm", kind: str = "TrainingJob") -> dict[str, Any] | None:
    return kubectl.get(kind, NS, name)


def applies(apiserver, kind_plural: str) -> list[Any]:
    return [r for r in apiserver.requests if r.is_apply and f"/{kind_plural}/" in r.path]


def test_a_trainingjob_cr_is_server_side_applied_as_a_released_gang_owned_by_it(apiserver, kubectl, operators):
    created = create_trainingjob(kubectl)
    operators()
    job = wait_for(lambda: (j := kubectl.get("Job", NS, "llm")) and j["spec"].get("suspend") is False and j,
                   what="the Job to be applied and released")

    for plural in ("persistentvolumeclaims", "services", "networkpolicies", "jobs"):
        sent = applies(apiserver, plural)
        assert sent, f"no server-side apply of {plural}"
        assert all(r.params.get("fieldManager") == "shipyard" and r.params.get("force") == "true" for r in sent)
    first_job_apply = applies(apiserver, "jobs")[0].data
    assert first_job_apply["spec"]["suspend"] is True  # created suspended, then released on admission
    assert job["metadata"]["ownerReferences"] == [{
        "apiVersion": "shipyard.dev/v1alpha1", "blockOwnerDeletion": True, "controller": True,
        "kind": "TrainingJob", "name": "llm", "uid": created["metadata"]["uid"]}]
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["parallelism"] == 2
    assert "ownerReferences" not in kubectl.get("PersistentVolumeClaim", NS, "ckpt")["metadata"]  # data outlives jobs
    policy = kubectl.get("NetworkPolicy", NS, "llm")  # the gang admits only itself
    assert policy["metadata"]["ownerReferences"] == job["metadata"]["ownerReferences"]
    resource = wait_for(lambda: (c := cr(kubectl)) and c.get("status", {}).get("phase") == "Pending" and c,
                        what="status on the CR")
    assert "shipyard.dev/cleanup" in resource["metadata"]["finalizers"]
    assert resource["status"]["observedGeneration"] == 1


def test_deleting_the_cr_deletes_its_children_then_the_cr(apiserver, kubectl, operators):
    create_trainingjob(kubectl)
    operators()
    wait_for(lambda: kubectl.get("Job", NS, "llm") and "shipyard.dev/cleanup" in cr(kubectl)["metadata"]["finalizers"])

    kubectl.delete("TrainingJob", NS, "llm")
    wait_for(lambda: cr(kubectl) is None, what="the CR to be gone once its finalizer is released")
    assert kubectl.get("Job", NS, "llm") is None
    assert kubectl.get("Service", NS, "llm") is None
    assert kubectl.get("NetworkPolicy", NS, "llm") is None
    assert kubectl.get("PersistentVolumeClaim", NS, "ckpt") is not None  # volumes belong to the project


def test_only_the_lease_holder_reconciles_and_a_standby_takes_over(apiserver, kubectl, operators):
    a = operators("operator-a")
    wait_for(lambda: a.elector.leading.is_set())
    b = operators("operator-b")
    create_trainingjob(kubectl, name="first")
    wait_for(lambda: kubectl.get("Job", NS, "first"))
    assert a.elector.leading.is_set() and not b.elector.leading.is_set()
    lease = kubectl.get("Lease", SYSTEM_NAMESPACE, "shipyard-operator")
    assert lease["spec"]["holderIdentity"] == "operator-a"

    a.stop()
    wait_for(lambda: b.elector.leading.is_set(), what="the standby to take the lease")
    create_trainingjob(kubectl, name="second")
    wait_for(lambda: kubectl.get("Job", NS, "second"), what="the new leader to reconcile")
    assert kubectl.get("Lease", SYSTEM_NAMESPACE, "shipyard-operator")["spec"]["holderIdentity"] == "operator-b"


def test_a_cr_that_only_the_model_can_reject_is_reported_on_the_object(apiserver, kubectl, operators):
    # procsPerReplica beyond what a replica's GPUs allow, or any cross-field rule the CRD schema cannot state:
    # here, two volumes with one name.
    create_trainingjob(kubectl, volumes=[{"name": "data", "mountPath": "/a"}, {"name": "data", "mountPath": "/b"}])
    operators()
    status = wait_for(lambda: (c := cr(kubectl)) and c.get("status", {}).get("phase") == "Failed" and c["status"],
                      what="the invalid CR to be reported")
    valid = next(c for c in status["conditions"] if c["type"] == "Valid")
    assert valid["status"] == "False" and "volume" in valid["message"].lower()
    assert kubectl.get("Job", NS, "llm") is None


def test_an_operator_limited_to_some_namespaces_never_asks_cluster_wide(apiserver, kubectl, operators):
    operators(watch_namespaces=["team-a"])
    kubectl.create({"apiVersion": "shipyard.dev/v1alpha1", "kind": "TrainingJob",
                    "metadata": {"name": "mine", "namespace": "team-a"},
                    "spec": {"replicas": 1, "command": ["python", "train.py"]}})
    create_trainingjob(kubectl, name="not-mine")  # in "default"
    wait_for(lambda: kubectl.get("Job", "team-a", "mine"), what="the watched namespace's job")
    wait_for(lambda: sum(1 for r in apiserver.requests if r.path == "/apis/shipyard.dev/v1alpha1/namespaces/team-a/"
                         "trainingjobs" and r.method == "GET" and "watch" not in r.params) >= 2,
             what="a resync")
    assert kubectl.get("Job", NS, "not-mine") is None
    # A Role per namespace allows nothing wider, but Projects, which are cluster-scoped: the chart's
    # `shipyard-projects` ClusterRole lets the operator read them in that mode.
    cluster_wide = [r for r in apiserver.requests if r.method == "GET" and r.path.startswith("/apis/")
                    and "/namespaces/" not in r.path and r.path.count("/") > 3
                    and r.path != "/apis/shipyard.dev/v1alpha1/projects"]
    assert not cluster_wide, [r.path for r in cluster_wide]
