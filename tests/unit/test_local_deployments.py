"""The local Deployment controller policy (runtime/local/deployments.py): scaling, rolling updates, status."""

from datetime import datetime, timedelta, timezone

import pytest

from shipyard.runtime.local.deployments import (
    TEMPLATE_HASH,
    deletion_order,
    int_or_percent,
    surge_and_unavailable,
    sync_deployment,
    template_hash,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
T = NOW.isoformat()


def deployment(replicas=2, image="v1", surge=1, unavailable=0, strategy="RollingUpdate", **spec):
    d = {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 1},
         "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                  "strategy": {"type": strategy, "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
                  "template": {"metadata": {"labels": {"app": "web"}},
                               "spec": {"containers": [{"name": "c", "image": image}]}}, **spec},
         "status": {}}
    if strategy == "Recreate":
        del d["spec"]["strategy"]["rollingUpdate"]
    return d


def pod(name, template="v1", ready=True, phase="Running", created=0, ready_since=60, restarts=0, deleting=False):
    hash_ = template_hash(deployment(image=template)["spec"]["template"])
    status = {"phase": phase, "containerStatuses": [{"name": "c", "restartCount": restarts}], "conditions": []}
    if phase == "Running":
        status["conditions"].append({"type": "Ready", "status": "True" if ready else "False",
                                     "lastTransitionTime": (NOW - timedelta(seconds=ready_since)).isoformat()})
    meta = {"name": name, "namespace": "default", "labels": {"app": "web", TEMPLATE_HASH: hash_},
            "creationTimestamp": (NOW - timedelta(seconds=1000 - created)).isoformat()}
    if deleting:
        meta["deletionTimestamp"] = T
    return {"metadata": meta, "spec": {}, "status": status}


def cond(status, type_):
    c = next(c for c in status["conditions"] if c["type"] == type_)
    return c["status"], c["reason"]


def test_template_hash_is_stable_and_ignores_replicas():
    a, b = deployment(replicas=1), deployment(replicas=5)
    assert template_hash(a["spec"]["template"]) == template_hash(b["spec"]["template"])
    assert template_hash(a["spec"]["template"]) != template_hash(deployment(image="v2")["spec"]["template"])
    assert len(template_hash(a["spec"]["template"])) == 10


@pytest.mark.parametrize("value,total,up,expected", [
    (1, 4, True, 1), ("25%", 4, True, 1), ("25%", 3, True, 1), ("25%", 3, False, 0), ("50%", 3, False, 1),
    ("100%", 2, True, 2), (None, 10, True, 3),  # default 25%, rounded up
])
def test_int_or_percent_rounds_like_kubernetes(value, total, up, expected):
    assert int_or_percent(value, total, up, "25%") == expected


@pytest.mark.parametrize("surge,unavailable,replicas,expected", [
    (1, 0, 2, (1, 0)), (0, 0, 2, (0, 1)),  # both zero: one may be unavailable, or nothing could move
    ("25%", "25%", 3, (1, 0)), (None, None, 4, (1, 1)), (0, 5, 2, (0, 2)),
])
def test_surge_and_unavailable(surge, unavailable, replicas, expected):
    d = deployment(replicas=replicas, surge=surge, unavailable=unavailable)
    if surge is None:
        d["spec"]["strategy"] = {"type": "RollingUpdate"}
    assert surge_and_unavailable(d) == expected


def test_new_deployment_creates_replicas_and_reports_new_replica_set():
    d = sync_deployment(deployment(replicas=2), [], NOW)
    assert d.create == 2 and d.delete_pods == []
    assert cond(d.status, "Progressing") == ("True", "NewReplicaSetCreated")
    assert f'"web-{d.template_hash}"' in next(c for c in d.status["conditions"] if c["type"] == "Progressing")["message"]
    assert cond(d.status, "Available") == ("False", "MinimumReplicasUnavailable")
    assert d.status["unavailableReplicas"] == 2 and d.status["observedGeneration"] == 1


def test_all_ready_is_available_and_complete():
    dep = deployment(replicas=2)
    dep["status"] = {"conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                                     "lastUpdateTime": T, "lastTransitionTime": T}]}
    d = sync_deployment(dep, [pod("a"), pod("b")], NOW)
    assert d.create == 0 and d.delete_pods == []
    assert {k: d.status[k] for k in ("replicas", "readyReplicas", "availableReplicas", "updatedReplicas",
                                     "unavailableReplicas")} == {"replicas": 2, "readyReplicas": 2,
                                                                 "availableReplicas": 2, "updatedReplicas": 2,
                                                                 "unavailableReplicas": 0}
    assert cond(d.status, "Available") == ("True", "MinimumReplicasAvailable")
    assert cond(d.status, "Progressing") == ("True", "NewReplicaSetAvailable")


def test_scale_down_deletes_not_ready_then_newest_first():
    pods = [pod("old-ready", created=0), pod("new-ready", created=5), pod("not-ready", ready=False, created=1),
            pod("pending", phase="Pending", created=2)]
    d = sync_deployment(deployment(replicas=1), pods, NOW)
    assert d.delete_pods == ["pending", "not-ready", "new-ready"]


def test_deletion_order_prefers_shorter_readiness_and_more_restarts():
    long_ready, short_ready = pod("long", ready_since=600), pod("short", ready_since=5)
    crashy, steady = pod("crashy", restarts=3), pod("steady")
    assert [p["metadata"]["name"] for p in deletion_order([long_ready, short_ready])] == ["short", "long"]
    assert [p["metadata"]["name"] for p in deletion_order([steady, crashy])] == ["crashy", "steady"]


def test_failed_pods_are_replaced_and_terminating_ones_are_not_counted():
    pods = [pod("a"), pod("failed", phase="Failed"), pod("going", deleting=True)]
    d = sync_deployment(deployment(replicas=2), pods, NOW)
    assert d.delete_pods == ["failed"] and d.create == 1
    assert d.status["replicas"] == 1


def test_rolling_update_surges_one_new_pod_first():
    d = sync_deployment(deployment(replicas=2, image="v2"), [pod("a"), pod("b")], NOW)
    assert d.create == 1 and d.delete_pods == []


def test_rolling_update_waits_for_the_new_pod_to_be_ready_when_max_unavailable_is_zero():
    pods = [pod("a"), pod("b"), pod("n1", template="v2", ready=False, created=10)]
    d = sync_deployment(deployment(replicas=2, image="v2"), pods, NOW)
    assert d.create == 0 and d.delete_pods == []


def test_rolling_update_deletes_one_old_pod_once_the_new_one_is_ready():
    pods = [pod("a", created=0), pod("b", created=1), pod("n1", template="v2", created=10, ready_since=1)]
    d = sync_deployment(deployment(replicas=2, image="v2"), pods, NOW)
    assert d.create == 0 and d.delete_pods == ["b"]  # the newest old pod goes first
    assert d.status["updatedReplicas"] == 1 and d.status["replicas"] == 2


def test_rolling_update_creates_the_next_new_pod_while_an_old_one_terminates():
    pods = [pod("a"), pod("b", deleting=True), pod("n1", template="v2", created=10)]
    d = sync_deployment(deployment(replicas=2, image="v2"), pods, NOW)
    assert d.create == 1 and d.delete_pods == []


def test_rolling_update_with_max_unavailable_deletes_old_without_waiting():
    pods = [pod("a"), pod("b"), pod("c"), pod("d")]
    d = sync_deployment(deployment(replicas=4, image="v2", surge=0, unavailable="50%"), pods, NOW)
    assert d.create == 0 and len(d.delete_pods) == 2


def test_rolling_update_removes_unhealthy_old_pods_first():
    pods = [pod("a"), pod("sick", ready=False), pod("n1", template="v2", ready=False, created=10)]
    d = sync_deployment(deployment(replicas=2, image="v2", surge=1, unavailable=1), pods, NOW)
    assert d.delete_pods == ["sick"]


def test_min_ready_seconds_delays_availability():
    pods = [pod("a", ready_since=3)]
    d = sync_deployment(deployment(replicas=1, minReadySeconds=5), pods, NOW)
    assert d.status["readyReplicas"] == 1 and d.status["availableReplicas"] == 0


def test_recreate_deletes_all_old_pods_before_creating_new_ones():
    dep = deployment(replicas=2, image="v2", strategy="Recreate")
    first = sync_deployment(dep, [pod("a"), pod("b")], NOW)
    assert sorted(first.delete_pods) == ["a", "b"] and first.create == 0
    waiting = sync_deployment(dep, [pod("a", deleting=True)], NOW)
    assert waiting.create == 0
    assert sync_deployment(dep, [], NOW).create == 2


def test_progress_deadline_exceeded_without_progress():
    dep = deployment(replicas=2, image="v2", progressDeadlineSeconds=60)
    before = (NOW - timedelta(seconds=61)).isoformat()
    dep["status"] = {"replicas": 3, "updatedReplicas": 1, "readyReplicas": 2, "availableReplicas": 2,
                     "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                                     "lastUpdateTime": before, "lastTransitionTime": before}]}
    pods = [pod("a"), pod("b"), pod("n1", template="v2", ready=False)]
    assert cond(sync_deployment(dep, pods, NOW).status, "Progressing") == ("False", "ProgressDeadlineExceeded")
    recent = (NOW - timedelta(seconds=10)).isoformat()
    dep["status"]["conditions"][0].update(lastUpdateTime=recent)
    assert cond(sync_deployment(dep, pods, NOW).status, "Progressing") == ("True", "ReplicaSetUpdated")


def test_progress_moves_last_update_time_but_not_transition_time():
    dep = deployment(replicas=2, image="v2")
    earlier = (NOW - timedelta(seconds=30)).isoformat()
    dep["status"] = {"replicas": 2, "updatedReplicas": 0, "readyReplicas": 2, "availableReplicas": 2,
                     "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetCreated",
                                     "lastUpdateTime": earlier, "lastTransitionTime": earlier}]}
    d = sync_deployment(dep, [pod("a"), pod("b"), pod("n1", template="v2", ready=False)], NOW)
    progressing = next(c for c in d.status["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "ReplicaSetUpdated"
    assert progressing["lastUpdateTime"] == T and progressing["lastTransitionTime"] == earlier


def test_a_crash_after_a_completed_rollout_keeps_progressing_complete():
    dep = deployment(replicas=2)
    dep["status"] = {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2,
                     "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                                     "lastUpdateTime": T, "lastTransitionTime": T}]}
    d = sync_deployment(dep, [pod("a"), pod("b", ready=False)], NOW)
    assert cond(d.status, "Progressing") == ("True", "NewReplicaSetAvailable")
    assert cond(d.status, "Available") == ("False", "MinimumReplicasUnavailable")  # maxUnavailable is 0
    assert d.status["unavailableReplicas"] == 1
