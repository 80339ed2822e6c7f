"""The local StatefulSet controller policy (runtime/local/statefulsets.py): ordinals, ordering, scale-down,
rolling updates, status."""

from datetime import datetime, timedelta, timezone

import pytest

from shipyard.runtime.local.deployments import template_hash
from shipyard.runtime.local.statefulsets import REVISION_LABEL, ordinal, revision_of, sync_statefulset

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def sts(replicas=1, image="v1", policy=None, strategy=None, status=None, **spec):
    s = {"apiVersion": "apps/v1", "kind": "StatefulSet",
         "metadata": {"name": "ws", "namespace": "default", "uid": "s-uid", "generation": 3},
         "spec": {"replicas": replicas, "serviceName": "ws", "selector": {"matchLabels": {"app": "ws"}},
                  "template": {"metadata": {"labels": {"app": "ws"}},
                               "spec": {"containers": [{"name": "c", "image": image}]}}, **spec},
         "status": status or {}}
    if replicas is None:
        del s["spec"]["replicas"]
    if policy:
        s["spec"]["podManagementPolicy"] = policy
    if strategy:
        s["spec"]["updateStrategy"] = {"type": strategy}
    return s


def rev(image="v1"):
    return revision_of(sts(image=image))


def pod(n, image="v1", ready=True, phase="Running", deleting=False, ready_for=60):
    status = {"phase": phase, "conditions": []}
    if phase == "Running":
        status["conditions"].append({"type": "Ready", "status": "True" if ready else "False",
                                     "lastTransitionTime": (NOW - timedelta(seconds=ready_for)).isoformat()})
    meta = {"name": f"ws-{n}", "namespace": "default", "labels": {"app": "ws", REVISION_LABEL: rev(image)}}
    if deleting:
        meta["deletionTimestamp"] = NOW.isoformat()
    return {"metadata": meta, "spec": {}, "status": status}


def test_revision_is_the_name_and_the_template_hash():
    s = sts()
    assert revision_of(s) == f"ws-{template_hash(s['spec']['template'])}"
    assert revision_of(sts(replicas=5)) == revision_of(s) != revision_of(sts(image="v2"))


@pytest.mark.parametrize("name,expected", [("ws-0", 0), ("ws-12", 12), ("ws-01", None), ("ws-x", None),
                                           ("ws-0-1", None), ("other-0", None)])
def test_ordinal_is_parsed_from_the_name(name, expected):
    assert ordinal("ws", {"metadata": {"name": name}}) == expected


@pytest.mark.parametrize("case,spec,pods,create,delete", [
    # create: 0 → 1, and the default is 1 replica
    ("first pod", dict(replicas=1), [], [0], []),
    ("default one replica", dict(replicas=None), [], [0], []),
    ("nothing to do", dict(replicas=1), [pod(0)], [], []),
    # OrderedReady: one at a time, only after every lower ordinal is Running and Ready
    ("ordered: lowest first", dict(replicas=3), [], [0], []),
    ("ordered: waits for readiness", dict(replicas=3), [pod(0, ready=False)], [], []),
    ("ordered: waits for a pending pod", dict(replicas=3), [pod(0, phase="Pending")], [], []),
    ("ordered: next once ready", dict(replicas=3), [pod(0)], [1], []),
    ("ordered: fills a hole first", dict(replicas=3), [pod(0), pod(2)], [1], []),
    ("ordered: waits for minReadySeconds", dict(replicas=2, minReadySeconds=120), [pod(0)], [], []),
    # Parallel: every missing ordinal at once, readiness or not
    ("parallel: all at once", dict(replicas=3, policy="Parallel"), [], [0, 1, 2], []),
    ("parallel: ignores readiness", dict(replicas=3, policy="Parallel"), [pod(0, ready=False)], [1, 2], []),
    # scale-down: highest ordinal first, one at a time
    ("scale down highest first", dict(replicas=1), [pod(0), pod(1), pod(2)], [], ["ws-2"]),
    ("scale to 0", dict(replicas=0), [pod(0)], [], ["ws-0"]),
    ("scale to 0, unready pod", dict(replicas=0), [pod(0, ready=False)], [], ["ws-0"]),
    ("scale down waits for the terminating one", dict(replicas=0), [pod(0), pod(1, deleting=True)], [], []),
    ("scale down waits for lower ordinals", dict(replicas=1), [pod(0, ready=False), pod(1)], [], []),
    ("scale down: an unready pod above the lowest unready one waits", dict(replicas=0),
     [pod(0, ready=False), pod(1, ready=False)], [], []),
    ("scale down: a ready pod goes before the lowest unready one", dict(replicas=0),
     [pod(0, ready=False), pod(1)], [], ["ws-1"]),
    ("parallel scale down: all at once", dict(replicas=0, policy="Parallel"), [pod(0), pod(1, ready=False)], [],
     ["ws-1", "ws-0"]),
    # a terminating pod keeps its ordinal (its name) until it is gone
    ("terminating pod blocks its ordinal", dict(replicas=1), [pod(0, deleting=True)], [], []),
    ("parallel: terminating pod blocks only its own", dict(replicas=2, policy="Parallel"),
     [pod(0, deleting=True)], [1], []),
    # a pod that ended is deleted, then recreated under its name
    ("failed pod is replaced", dict(replicas=1), [pod(0, phase="Failed")], [], ["ws-0"]),
    ("succeeded pod is replaced", dict(replicas=2), [pod(0, phase="Succeeded"), pod(1)], [], ["ws-0"]),
    # RollingUpdate: highest outdated pod first, once the pods above it are updated and ready
    ("template change rolls the pod", dict(replicas=1, image="v2"), [pod(0)], [], ["ws-0"]),
    ("roll highest first", dict(replicas=2, image="v2"), [pod(0), pod(1)], [], ["ws-1"]),
    ("roll waits for the updated pod above", dict(replicas=2, image="v2"), [pod(0), pod(1, "v2", ready=False)],
     [], []),
    ("roll continues below", dict(replicas=2, image="v2"), [pod(0), pod(1, "v2")], [], ["ws-0"]),
    ("roll waits for a creation", dict(replicas=2, image="v2", policy="Parallel"), [pod(0)], [1], []),
    ("scaling takes precedence over updates", dict(replicas=1, image="v2"), [pod(0), pod(1)], [], ["ws-1"]),
    # OnDelete: never deleted for an update; a deleted pod comes back at the new revision
    ("on delete keeps old pods", dict(replicas=2, image="v2", strategy="OnDelete"), [pod(0), pod(1)], [], []),
    ("on delete recreates at the new revision", dict(replicas=1, image="v2", strategy="OnDelete"), [], [0], []),
])
def test_decisions(case, spec, pods, create, delete):
    d = sync_statefulset(sts(**spec), pods, NOW)
    assert (d.create_ordinals, d.delete_pods) == (create, delete), case


def test_status_counts_pods_and_revisions():
    d = sync_statefulset(sts(replicas=3), [pod(0), pod(1, ready=False)], NOW)
    assert d.status == {"observedGeneration": 3, "replicas": 2, "readyReplicas": 1, "currentReplicas": 2,
                        "updatedReplicas": 2, "availableReplicas": 1, "currentRevision": rev(),
                        "updateRevision": rev(), "collisionCount": 0}


def test_status_counts_what_it_creates_and_deletes():
    created = sync_statefulset(sts(replicas=1), [], NOW).status
    assert (created["replicas"], created["updatedReplicas"], created["readyReplicas"]) == (1, 1, 0)
    deleted = sync_statefulset(sts(replicas=0), [pod(0)], NOW).status
    # still there until it has stopped, but no longer ready nor of any revision
    assert (deleted["replicas"], deleted["readyReplicas"], deleted["updatedReplicas"]) == (1, 0, 0)


def test_available_replicas_wait_for_min_ready_seconds():
    d = sync_statefulset(sts(replicas=1, minReadySeconds=30), [pod(0, ready_for=10)], NOW)
    assert (d.status["readyReplicas"], d.status["availableReplicas"]) == (1, 0)


def test_current_revision_moves_once_a_rolling_update_completes():
    old = {"currentRevision": rev("v1")}
    mid = sync_statefulset(sts(replicas=2, image="v2", status=old), [pod(0), pod(1, "v2")], NOW).status
    assert mid["currentRevision"] == rev("v1") and mid["updateRevision"] == rev("v2")
    assert (mid["currentReplicas"], mid["updatedReplicas"]) == (0, 1)  # ws-0 is being deleted
    done = sync_statefulset(sts(replicas=2, image="v2", status=old), [pod(0, "v2"), pod(1, "v2")], NOW).status
    assert done["currentRevision"] == done["updateRevision"] == rev("v2") and done["currentReplicas"] == 2


def test_on_delete_keeps_the_current_revision():
    old = {"currentRevision": rev("v1")}
    s = sync_statefulset(sts(replicas=1, image="v2", strategy="OnDelete", status=old), [pod(0, "v2")], NOW).status
    assert s["currentRevision"] == rev("v1") and s["updatedReplicas"] == 1


def test_pods_of_other_names_are_counted_but_left_alone():
    stray = pod(0)
    stray["metadata"]["name"] = "ws-abc"
    d = sync_statefulset(sts(replicas=0), [stray], NOW)
    assert d.delete_pods == [] and d.status["replicas"] == 1
