"""Pure pieces of cluster mode: leader election's decision, the status merge patch, owner lookup."""

from datetime import datetime, timedelta, timezone

import pytest

from shipyard.cluster.leader import decide
from shipyard.runtime.kubernetes import owner_of
from shipyard.runtime.protocol import OwnerKey
from shipyard.store.kubernetes import merge_diff

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=timezone.utc)


def lease(holder, renewed_ago, duration=15, transitions=0):
    return {"holderIdentity": holder, "leaseDurationSeconds": duration, "leaseTransitions": transitions,
            "renewTime": (NOW - timedelta(seconds=renewed_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}


@pytest.mark.parametrize("spec, lead, transitions", [
    (None, True, 0),                                # no lease yet: take it
    (lease(None, 100), True, 0),                    # released by its holder
    (lease("me", 5), True, 0),                      # mine: renew
    (lease("me", 60), True, 0),                     # mine even if I renewed late (nobody took it)
    (lease("other", 5), False, None),               # another holder, fresh: wait
    (lease("other", 14.9), False, None),            # not expired yet
    (lease("other", 15, transitions=2), True, 3),   # expired: take over, one more transition
])
def test_leader_decision(spec, lead, transitions):
    decision = decide(spec, "me", NOW, 15)
    assert decision.lead is lead
    if lead:
        assert decision.spec["holderIdentity"] == "me"
        assert decision.spec["renewTime"].startswith("2026-11-29T12:00:00")
        assert decision.spec["leaseTransitions"] == transitions
    else:
        assert decision.spec is None


def test_merge_diff_removes_with_null_and_recurses():
    old = {"phase": "Running", "progress": {"step": 3, "loss": 1.0}, "restarts": 0, "gone": {"a": 1}}
    new = {"phase": "Succeeded", "progress": {"step": 4}, "restarts": 0, "added": [1]}
    assert merge_diff(old, new) == {"phase": "Succeeded", "progress": {"step": 4, "loss": None}, "gone": None,
                                    "added": [1]}
    assert merge_diff(new, new) == {}


def test_owner_of_prefers_the_controller_reference_then_labels():
    job = {"metadata": {"namespace": "p", "ownerReferences": [
        {"apiVersion": "shipyard.dev/v1alpha1", "kind": "TrainingJob", "name": "llm", "uid": "u"}]}}
    assert owner_of(job) == OwnerKey("TrainingJob", "p", "llm")
    pod = {"metadata": {"namespace": "p", "labels": {"shipyard.dev/kind": "endpoint", "shipyard.dev/name": "chat"},
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "chat-x"}]}}
    assert owner_of(pod) == OwnerKey("Endpoint", "p", "chat")
    assert owner_of({"metadata": {"namespace": "p", "labels": {"app": "x"}}}) is None


class FakeApi:
    field_manager = "shipyard"

    def __init__(self, live):
        self.live = live
        self.applied = []

    def get(self, kind, namespace, name):
        return self.live

    def apply(self, obj, force=True, field_manager=None):
        self.applied.append((field_manager or self.field_manager, obj))
        return obj


def deployment(replicas=None):
    spec = {"template": {}} | ({"replicas": replicas} if replicas is not None else {})
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "chat", "namespace": "p"},
            "spec": spec}


def owned_by(manager):
    return {"manager": manager, "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}}}


def test_replicas_are_handed_over_before_the_hpa_takes_them():
    from shipyard.runtime.kubernetes import HANDOVER_MANAGER, KubernetesRuntime

    live = deployment(3)
    live["metadata"]["managedFields"] = [owned_by("shipyard")]
    api = FakeApi(live)
    KubernetesRuntime(api).apply(deployment())  # without replicas: the HPA owns them now
    (first_manager, handover), (second_manager, main) = api.applied
    assert first_manager == HANDOVER_MANAGER and handover["spec"] == {"replicas": 3}
    assert second_manager == "shipyard" and "replicas" not in main["spec"]


def test_no_handover_once_someone_else_owns_replicas_or_when_replicas_are_set():
    from shipyard.runtime.kubernetes import KubernetesRuntime

    live = deployment(3)
    live["metadata"]["managedFields"] = [owned_by("horizontal-pod-autoscaler") | {"operation": "Update"}]
    api = FakeApi(live)
    KubernetesRuntime(api).apply(deployment())
    assert [m for m, _ in api.applied] == ["shipyard"]
    api = FakeApi(live)
    KubernetesRuntime(api).apply(deployment(0))  # scale to zero: the controller sets the count itself
    assert [m for m, _ in api.applied] == ["shipyard"]
