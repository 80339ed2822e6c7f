"""The subset of the Kubernetes Deployment controller that compiled Endpoints and Apps need, as one pure function.

Kubernetes runs a Deployment through ReplicaSets, one per pod template; here the ReplicaSet level is folded
away: pods belong to the Deployment directly and carry `pod-template-hash`, so "the new ReplicaSet" is the
pods with the current template's hash and "old ReplicaSets" are the rest. The arithmetic is Kubernetes':
maxSurge / maxUnavailable (ints or percentages; surge rounds up, unavailability down; both 0 means 1
unavailable), scale up the new pods within replicas + maxSurge, scale old pods down only while
replicas - maxUnavailable pods stay available (so with maxUnavailable 0 a new pod is ready before an old one
goes), delete the least useful pod first (pending, not ready, ready for less time, restarted more, newest),
and the status fields and Available / Progressing conditions with Kubernetes' reasons and messages, so a
controller reading this status behaves the same on a cluster. No I/O and no clock: `now` is passed.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .jobs import TERMINAL

TEMPLATE_HASH = "pod-template-hash"
# The alphabet Kubernetes uses for generated names (no vowels, no look-alike characters).
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
DEFAULT_PROGRESS_DEADLINE = 600


@dataclass
class DeploymentDecision:
    template_hash: str
    create: int = 0
    delete_pods: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)


def template_hash(template: dict[str, Any]) -> str:
    """A stable short hash of a pod template: equal templates, equal hashes, across restarts and machines."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True, separators=(",", ":")).encode()).digest()
    number = int.from_bytes(digest[:8], "big")
    out = []
    for _ in range(10):
        number, rest = divmod(number, len(NAME_ALPHABET))
        out.append(NAME_ALPHABET[rest])
    return "".join(out)


def int_or_percent(value: int | str | None, total: int, round_up: bool, default: str) -> int:
    """Kubernetes' GetScaledValueFromIntOrPercent."""
    value = default if value is None else value
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    text = str(value)
    if not text.endswith("%") or not text[:-1].isdigit():
        raise ValueError(f"{value!r} is neither an integer nor a percentage")
    scaled = int(text[:-1]) * total / 100
    return math.ceil(scaled) if round_up else math.floor(scaled)


def surge_and_unavailable(deployment: dict[str, Any]) -> tuple[int, int]:
    spec = deployment["spec"]
    replicas = int(spec.get("replicas", 1))
    strategy = spec.get("strategy", {})
    if strategy.get("type") == "Recreate" or replicas == 0:
        return 0, 0
    rolling = strategy.get("rollingUpdate", {})
    surge = int_or_percent(rolling.get("maxSurge"), replicas, True, "25%")
    unavailable = int_or_percent(rolling.get("maxUnavailable"), replicas, False, "25%")
    if surge == 0 and unavailable == 0:
        unavailable = 1  # Kubernetes' rule: a rollout must be able to make progress
    return surge, min(unavailable, replicas)


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), None)


def _ready_since(pod: dict[str, Any]) -> datetime | None:
    if pod["metadata"].get("deletionTimestamp"):
        return None
    cond = _condition(pod.get("status", {}), "Ready")
    if cond is None or cond.get("status") != "True":
        return None
    return datetime.fromisoformat(cond["lastTransitionTime"])


def _available(pod: dict[str, Any], min_ready: float, now: datetime) -> bool:
    since = _ready_since(pod)
    return since is not None and (now - since).total_seconds() >= min_ready


def _restarts(pod: dict[str, Any]) -> int:
    return sum(int(cs.get("restartCount", 0)) for cs in pod.get("status", {}).get("containerStatuses", []))


def deletion_order(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Kubernetes' ActivePods ordering: the pod to delete first comes first."""
    def key(pod: dict[str, Any]) -> tuple[Any, ...]:
        since = _ready_since(pod)
        created = datetime.fromisoformat(pod["metadata"]["creationTimestamp"]).timestamp()
        return (pod["status"].get("phase") == "Running", since is not None,
                -(since.timestamp()) if since else 0.0, -_restarts(pod), -created, pod["metadata"]["name"])
    return sorted(pods, key=key)


def sync_deployment(deployment: dict[str, Any], pods: list[dict[str, Any]], now: datetime) -> DeploymentDecision:
    """What to create and delete, and the new status, given the Deployment and every pod it owns."""
    spec = deployment["spec"]
    replicas = int(spec.get("replicas", 1))
    min_ready = float(spec.get("minReadySeconds", 0))
    current = template_hash(spec["template"])
    decision = DeploymentDecision(template_hash=current)
    deleting = [p for p in pods if p["metadata"].get("deletionTimestamp")]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    # Failed pods of a Deployment are not restarted (the kubelet restarts containers, not pods): they are
    # removed and replaced, as the ReplicaSet controller and pod garbage collection do together.
    decision.delete_pods = [p["metadata"]["name"] for p in live if p["status"].get("phase") in TERMINAL]
    active = [p for p in live if p["status"].get("phase") not in TERMINAL]
    new = [p for p in active if p["metadata"].get("labels", {}).get(TEMPLATE_HASH) == current]
    old = [p for p in active if p not in new]
    new_exists = bool(new) or any(p["metadata"].get("labels", {}).get(TEMPLATE_HASH) == current for p in deleting)

    def delete(chosen: list[dict[str, Any]]) -> None:
        decision.delete_pods.extend(p["metadata"]["name"] for p in chosen)

    surge, unavailable = surge_and_unavailable(deployment)
    if len(new) > replicas:
        delete(deletion_order(new)[: len(new) - replicas])
        new = [p for p in new if p["metadata"]["name"] not in decision.delete_pods]
    if spec.get("strategy", {}).get("type") == "Recreate":
        if old:
            delete(old)
        elif not any(p["metadata"].get("labels", {}).get(TEMPLATE_HASH) != current for p in deleting):
            decision.create = max(replicas - len(new), 0)  # only once every old pod is gone
    elif not old:
        decision.create = max(replicas - len(new), 0)
    else:
        decision.create = max(min(replicas + surge - len(new) - len(old), replicas - len(new)), 0)
        if not decision.create:  # like Kubernetes, old pods are scaled down on a later pass than a scale-up
            delete(_old_to_delete(new, old, replicas - unavailable, min_ready, now))

    kept = [p for p in active if p["metadata"]["name"] not in decision.delete_pods]
    decision.status = _status(deployment, kept, current, decision, new_exists, unavailable, min_ready, now)
    return decision


def _old_to_delete(new: list[dict[str, Any]], old: list[dict[str, Any]], min_available: int,
                   min_ready: float, now: datetime) -> list[dict[str, Any]]:
    """Kubernetes' reconcileOldReplicaSets: unhealthy old pods first, then healthy ones while enough stay
    available."""
    new_unavailable = len([p for p in new if not _available(p, min_ready, now)])
    budget = len(new) + len(old) - min_available - new_unavailable
    if budget <= 0:
        return []
    unhealthy = deletion_order([p for p in old if not _available(p, min_ready, now)])[:budget]
    healthy = [p for p in old if p not in unhealthy]
    available = len([p for p in new + old if _available(p, min_ready, now)])
    scale_down = max(available - min_available, 0)
    return unhealthy + deletion_order(healthy)[:scale_down]


def _status(deployment: dict[str, Any], pods: list[dict[str, Any]], current: str, decision: DeploymentDecision,
            new_exists: bool, unavailable: int, min_ready: float, now: datetime) -> dict[str, Any]:
    spec, previous = deployment["spec"], deployment.get("status", {})
    replicas = int(spec.get("replicas", 1))
    now_s = now.isoformat()
    available = len([p for p in pods if _available(p, min_ready, now)])
    status: dict[str, Any] = {
        "observedGeneration": deployment["metadata"].get("generation", 1),
        "replicas": len(pods),
        "updatedReplicas": len([p for p in pods if p["metadata"].get("labels", {}).get(TEMPLATE_HASH) == current]),
        "readyReplicas": len([p for p in pods if _ready_since(p) is not None]),
        "availableReplicas": available,
        "unavailableReplicas": max(len(pods) + decision.create - available, 0),
        "conditions": [dict(c) for c in previous.get("conditions", [])],
    }
    if available >= replicas - unavailable:
        _set(status, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.", now_s)
    else:
        _set(status, "Available", "False", "MinimumReplicasUnavailable",
             "Deployment does not have minimum availability.", now_s)
    _progressing(deployment, status, previous, f"{deployment['metadata']['name']}-{current}", decision, new_exists,
                 now)
    return status


def _progressing(deployment: dict[str, Any], status: dict[str, Any], previous: dict[str, Any], rs_name: str,
                 decision: DeploymentDecision, new_exists: bool, now: datetime) -> None:
    """Kubernetes' syncRolloutStatus, with the new pods' hash standing for the new ReplicaSet's name."""
    now_s = now.isoformat()
    deadline = deployment["spec"].get("progressDeadlineSeconds", DEFAULT_PROGRESS_DEADLINE)
    cond = _condition(status, "Progressing")
    if decision.create and not new_exists:
        _set(status, "Progressing", "True", "NewReplicaSetCreated", f'Created new replica set "{rs_name}"', now_s,
             force=True)
        return
    if cond is None:
        _set(status, "Progressing", "True", "FoundNewReplicaSet", f'Found new replica set "{rs_name}"', now_s)
        cond = _condition(status, "Progressing")
    if status["replicas"] == status["updatedReplicas"] and cond and cond.get("reason") == "NewReplicaSetAvailable":
        return  # the last rollout completed; scaling and crashes are not progress to estimate
    replicas = int(deployment["spec"].get("replicas", 1))
    complete = (status["updatedReplicas"] == replicas and status["replicas"] == replicas
                and status["availableReplicas"] == replicas)
    old_before = previous.get("replicas", 0) - previous.get("updatedReplicas", 0)
    progressed = (status["updatedReplicas"] > previous.get("updatedReplicas", 0)
                  or status["replicas"] - status["updatedReplicas"] < old_before
                  or status["readyReplicas"] > previous.get("readyReplicas", 0)
                  or status["availableReplicas"] > previous.get("availableReplicas", 0))
    if complete:
        _set(status, "Progressing", "True", "NewReplicaSetAvailable",
             f'ReplicaSet "{rs_name}" has successfully progressed.', now_s)
    elif progressed:
        _set(status, "Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.', now_s,
             force=True)
    elif cond and cond.get("reason") != "NewReplicaSetAvailable" and (
            cond.get("reason") == "ProgressDeadlineExceeded"
            or (now - datetime.fromisoformat(cond["lastUpdateTime"])).total_seconds() > deadline):
        _set(status, "Progressing", "False", "ProgressDeadlineExceeded",
             f'ReplicaSet "{rs_name}" has timed out progressing.', now_s)


def _set(status: dict[str, Any], type_: str, value: str, reason: str, message: str, now: str,
         force: bool = False) -> None:
    """SetDeploymentCondition: an unchanged status and reason keeps both times, unless `force` (progress was
    made: lastUpdateTime moves); a status flip moves lastTransitionTime."""
    conds = status["conditions"]
    old = _condition(status, type_)
    if old is not None and old["status"] == value and old.get("reason") == reason and not force:
        return
    transition = old["lastTransitionTime"] if old is not None and old["status"] == value else now
    new = {"type": type_, "status": value, "lastUpdateTime": now, "lastTransitionTime": transition,
           "reason": reason, "message": message}
    status["conditions"] = [c for c in conds if c["type"] != type_] + [new]
    status["conditions"].sort(key=lambda c: ("Available", "Progressing").index(c["type"])
                              if c["type"] in ("Available", "Progressing") else 9)
