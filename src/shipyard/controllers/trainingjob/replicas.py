"""Per-replica state from the pods the runtime reports (the newest pod of each index wins)."""

from __future__ import annotations

from typing import Any

from shipyard.resources.trainingjob import ReplicaStatus

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


def newest_pods(pods: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", "")):
        index = pod["metadata"].get("annotations", {}).get(COMPLETION_INDEX)
        if index is not None:
            out[int(index)] = pod
    return out


def terminated_state(pod: dict[str, Any]) -> dict[str, Any] | None:
    for cs in pod.get("status", {}).get("containerStatuses", []):
        if "terminated" in cs.get("state", {}):
            return cs["state"]["terminated"]
    return None


def replica_statuses(replicas: int, pods: list[dict[str, Any]]) -> list[ReplicaStatus]:
    by_index = newest_pods(pods)
    out = []
    for index in range(replicas):
        pod = by_index.get(index)
        if pod is None:
            out.append(ReplicaStatus(index=index, phase="Pending"))
            continue
        status = pod.get("status", {})
        terminated = terminated_state(pod)
        unscheduled = next((c for c in status.get("conditions", [])
                            if c["type"] == "PodScheduled" and c["status"] == "False"), None)
        out.append(ReplicaStatus(
            index=index,
            phase=status.get("phase", "Pending"),
            exit_code=terminated["exitCode"] if terminated else None,
            reason=(terminated or {}).get("reason") or (unscheduled or {}).get("reason"),
            message=((terminated or {}).get("message") or (unscheduled or {}).get("message")) or None,
        ))
    return out


def failure_summary(statuses: list[ReplicaStatus]) -> str:
    failed = [s for s in statuses if s.phase == "Failed"]
    if not failed:
        return "a replica failed"
    first = failed[0]
    text = f"replica {first.index} exited with code {first.exit_code}"
    if first.reason and first.reason not in ("Error",):
        text += f" ({first.reason}{': ' + first.message if first.message else ''})"
    return text
