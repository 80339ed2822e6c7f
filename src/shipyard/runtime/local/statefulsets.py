"""The subset of the Kubernetes StatefulSet controller that Workspaces need, as one pure function.

A Workspace (a Jupyter or VS Code server) is one pod with a stable name and its own volume, suspended by
scaling to 0 and resumed by scaling back to 1; a StatefulSet is what gives it that name on a cluster, so the
local runtime runs the same object. What is kept is the controller's ordering, as in Kubernetes'
stateful_set_control.go: pods are named `<name>-<ordinal>` for ordinal < spec.replicas (default 1) and
labelled `controller-revision-hash: <name>-<template hash>`. With podManagementPolicy OrderedReady (the
default) the lowest missing ordinal is created only once every lower one is Running and Ready (for
minReadySeconds), one at a time, and scale-down deletes the highest ordinal first, one at a time; with
Parallel every missing pod is created and every surplus pod deleted at once. A pod that is terminating still
holds its ordinal (its name), so a replacement is created only once it is gone. RollingUpdate (the default)
deletes the highest-ordinal pod of an older revision once every pod above it is updated and Ready, and the
creation rule brings it back at the new revision; OnDelete leaves running pods alone. A pod that ended
(Failed or Succeeded: only a shutdown does that under restartPolicy Always) is deleted and recreated. The
status has Kubernetes' fields, including currentRevision, which moves to updateRevision once a rolling update
has completed. No I/O and no clock: `now` is passed.

Left out: ControllerRevisions (a revision is the template's hash, and only the current template is known, so
a pod recreated during a rollout gets the new template, and `rollingUpdate.partition` and `maxUnavailable`
are ignored), `spec.ordinals`, `persistentVolumeClaimRetentionPolicy`, and `volumeClaimTemplates`, which are
not supported: Shipyard compiles a named PersistentVolumeClaim per Workspace and mounts it by claimName.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .deployments import template_hash
from .jobs import TERMINAL

REVISION_LABEL = "controller-revision-hash"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"


@dataclass
class StatefulSetDecision:
    revision: str
    create_ordinals: list[int] = field(default_factory=list)
    delete_pods: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)


def revision_of(statefulset: dict[str, Any]) -> str:
    return f"{statefulset['metadata']['name']}-{template_hash(statefulset['spec']['template'])}"


def ordinal(statefulset_name: str, pod: dict[str, Any]) -> int | None:
    match = re.fullmatch(re.escape(statefulset_name) + r"-(0|[1-9][0-9]*)", pod["metadata"]["name"])
    return int(match.group(1)) if match else None


def _terminating(pod: dict[str, Any]) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def _ready_since(pod: dict[str, Any]) -> datetime | None:
    if pod.get("status", {}).get("phase") != "Running":
        return None
    cond = next((c for c in pod["status"].get("conditions", []) if c["type"] == "Ready"), None)
    if cond is None or cond.get("status") != "True":
        return None
    return datetime.fromisoformat(cond["lastTransitionTime"])


def _available(pod: dict[str, Any], min_ready: float, now: datetime) -> bool:
    since = _ready_since(pod)
    return since is not None and (now - since).total_seconds() >= min_ready


def sync_statefulset(sts: dict[str, Any], pods: list[dict[str, Any]], now: datetime) -> StatefulSetDecision:
    """What to create and delete, and the new status, given the StatefulSet and every pod it owns."""
    spec, name = sts["spec"], sts["metadata"]["name"]
    replicas = int(spec.get("replicas", 1))
    ordered = spec.get("podManagementPolicy", "OrderedReady") != "Parallel"
    on_delete = spec.get("updateStrategy", {}).get("type") == "OnDelete"
    min_ready = float(spec.get("minReadySeconds", 0))
    decision = StatefulSetDecision(revision=revision_of(sts))
    # A pod whose name is no ordinal of ours is left alone and only counted, as Kubernetes does.
    by_ordinal = {o: p for p in pods if (o := ordinal(name, p)) is not None}

    def healthy(pod: dict[str, Any]) -> bool:
        return not _terminating(pod) and _ready_since(pod) is not None

    def delete(pod: dict[str, Any]) -> None:
        decision.delete_pods.append(pod["metadata"]["name"])

    def plan() -> None:
        # Kubernetes returns from its pass at the first thing that must wait; so does this.
        for i in range(replicas):
            pod = by_ordinal.get(i)
            if pod is None:
                decision.create_ordinals.append(i)
                if ordered:
                    return
                continue
            if not _terminating(pod) and pod.get("status", {}).get("phase") in TERMINAL:
                delete(pod)  # recreated under the same name once it is gone
                if ordered:
                    return
                continue
            if ordered and not (healthy(pod) and _available(pod, min_ready, now)):
                return
        condemned = sorted(o for o in by_ordinal if o >= replicas)
        # Kubernetes deletes an unhealthy surplus pod out of order only if it is the lowest unhealthy one;
        # every pod below `replicas` is healthy by now in OrderedReady, so that is the lowest unhealthy surplus.
        first_unhealthy = next((o for o in condemned if not healthy(by_ordinal[o])), None)
        for i in reversed(condemned):
            pod = by_ordinal[i]
            if _terminating(pod):
                if ordered:
                    return
                continue
            if ordered and _ready_since(pod) is None and i != first_unhealthy:
                return
            delete(pod)
            if ordered:
                return
        if on_delete:
            return
        for i in reversed(range(replicas)):
            pod = by_ordinal.get(i)
            if pod is None or pod["metadata"]["name"] in decision.delete_pods:
                return  # being created or replaced: not healthy yet
            if pod["metadata"].get("labels", {}).get(REVISION_LABEL) != decision.revision and not _terminating(pod):
                delete(pod)
                return
            if not healthy(pod):
                return

    plan()
    decision.status = _status(sts, pods, decision, min_ready, now)
    return decision


def _status(sts: dict[str, Any], pods: list[dict[str, Any]], decision: StatefulSetDecision, min_ready: float,
            now: datetime) -> dict[str, Any]:
    """computeReplicaStatus on the pods as this decision leaves them: deleted ones terminating (still counted
    in replicas, in no revision), created ones present at the update revision."""
    previous = sts.get("status", {})
    update = decision.revision
    current = previous.get("currentRevision") or update
    live = [p for p in pods if not _terminating(p) and p["metadata"]["name"] not in decision.delete_pods]
    revisions = [p["metadata"].get("labels", {}).get(REVISION_LABEL) for p in live]
    revisions += [update] * len(decision.create_ordinals)
    status: dict[str, Any] = {
        "observedGeneration": sts["metadata"].get("generation", 1),
        "replicas": len(pods) + len(decision.create_ordinals),
        "readyReplicas": len([p for p in live if _ready_since(p) is not None]),
        "currentReplicas": revisions.count(current),
        "updatedReplicas": revisions.count(update),
        "availableReplicas": len([p for p in live if _available(p, min_ready, now)]),
        "currentRevision": current,
        "updateRevision": update,
        "collisionCount": 0,
    }
    # Kubernetes' completeRollingUpdate; under OnDelete currentRevision stays where it was, as there.
    if (sts["spec"].get("updateStrategy", {}).get("type") != "OnDelete"
            and status["updatedReplicas"] == status["replicas"] == status["readyReplicas"]):
        status["currentRevision"] = update
        status["currentReplicas"] = status["updatedReplicas"]
    return status
