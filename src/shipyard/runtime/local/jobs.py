"""The subset of the Kubernetes Job controller that compiled TrainingJobs need, as one pure function.

Indexed completion, parallelism, backoffLimit, podFailurePolicy (Ignore / FailJob / Count, matched on exit
codes and pod conditions), activeDeadlineSeconds and suspend, with Kubernetes' condition types and reasons so
that a controller reading this status behaves the same on a cluster. No I/O and no clock: `now` is passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
TERMINAL = ("Succeeded", "Failed")


@dataclass
class JobDecision:
    create_indexes: list[int] = field(default_factory=list)
    delete_pods: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)


def pod_index(pod: dict[str, Any]) -> int:
    return int(pod["metadata"]["annotations"][COMPLETION_INDEX])


def has_condition(obj: dict[str, Any], type_: str) -> bool:
    return any(c["type"] == type_ and c["status"] == "True" for c in obj.get("status", {}).get("conditions", []))


def job_finished(job: dict[str, Any]) -> bool:
    return has_condition(job, "Complete") or has_condition(job, "Failed")


def exit_code(pod: dict[str, Any]) -> int | None:
    for cs in pod.get("status", {}).get("containerStatuses", []):
        terminated = cs.get("state", {}).get("terminated")
        if terminated is not None:
            return int(terminated["exitCode"])
    return None


def _rule_matches(rule: dict[str, Any], pod: dict[str, Any]) -> bool:
    if "onExitCodes" in rule:
        code = exit_code(pod)
        if code is None:
            return False
        spec = rule["onExitCodes"]
        inside = code in spec["values"]
        return inside if spec["operator"] == "In" else not inside
    for pattern in rule.get("onPodConditions", []):
        for cond in pod.get("status", {}).get("conditions", []):
            if cond["type"] == pattern["type"] and cond["status"] == pattern.get("status", "True"):
                return True
    return False


def failure_action(job: dict[str, Any], pod: dict[str, Any]) -> tuple[str, int | None]:
    """The podFailurePolicy action for a failed pod and the rule's index ("Count" when no rule matches)."""
    rules = job["spec"].get("podFailurePolicy", {}).get("rules", [])
    for i, rule in enumerate(rules):
        if _rule_matches(rule, pod):
            return rule["action"], i
    return "Count", None


def _fail_job_message(job: dict[str, Any], pod: dict[str, Any], rule: int | None) -> str:
    """Kubernetes' own wording, which names the rule's index (what a controller may tell rules apart by)."""
    where = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
    patterns = job["spec"]["podFailurePolicy"]["rules"][rule].get("onPodConditions") if rule is not None else None
    if patterns:
        matched = next(c["type"] for c in pod["status"]["conditions"]
                       if any(c["type"] == p["type"] and c["status"] == p.get("status", "True") for p in patterns))
        return f"Pod {where} has condition {matched} matching FailJob rule at index {rule}"
    return (f"Container {pod['spec']['containers'][0]['name']} for pod {where} failed with exit code "
            f"{exit_code(pod)} matching FailJob rule at index {rule}")


def _condition(type_: str, reason: str, message: str, now: str) -> dict[str, Any]:
    return {"type": type_, "status": "True", "reason": reason, "message": message,
            "lastProbeTime": now, "lastTransitionTime": now}


def sync_job(job: dict[str, Any], pods: list[dict[str, Any]], now: datetime) -> JobDecision:
    spec = job["spec"]
    status = dict(job.get("status", {}))
    now_s = now.isoformat()
    decision = JobDecision(status=status)
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    active = [p for p in live if p["status"]["phase"] not in TERMINAL]

    if job_finished(job) or spec.get("suspend"):
        decision.delete_pods = [p["metadata"]["name"] for p in active]
        status["active"] = 0
        return decision

    status.setdefault("startTime", now_s)
    failed_total = int(status.get("failed", 0))
    failure: tuple[str, str] | None = None
    for pod in live:
        if pod["status"]["phase"] != "Failed":
            continue
        action, rule = failure_action(job, pod)
        if action == "Ignore":
            decision.delete_pods.append(pod["metadata"]["name"])  # replaced, not counted
            continue
        failed_total += 1
        if action == "FailJob" and failure is None:
            failure = ("PodFailurePolicy", _fail_job_message(job, pod, rule))
        elif action == "Count" and failed_total > int(spec.get("backoffLimit", 6)) and failure is None:
            failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
        elif failure is None:
            decision.delete_pods.append(pod["metadata"]["name"])  # retried: a new pod takes its index
    # Pods that failed the Job are kept (for their logs and exit codes) until the Job is deleted.
    status["failed"] = failed_total

    deadline = spec.get("activeDeadlineSeconds")
    if failure is None and deadline is not None:
        started = datetime.fromisoformat(status["startTime"])
        if (now - started).total_seconds() >= deadline:
            failure = ("DeadlineExceeded", "Job was active longer than specified deadline")

    if failure is not None:
        reason, message = failure
        status["conditions"] = [*status.get("conditions", []),
                                _condition("FailureTarget", reason, message, now_s),
                                _condition("Failed", reason, message, now_s)]
        decision.delete_pods = sorted({*decision.delete_pods, *(p["metadata"]["name"] for p in active)})
        status["active"] = 0
        return decision

    succeeded = sorted({pod_index(p) for p in live if p["status"]["phase"] == "Succeeded"})
    status["succeeded"] = len(succeeded)
    status["completedIndexes"] = ",".join(str(i) for i in succeeded)
    completions = int(spec.get("completions", 1))
    if len(succeeded) >= completions:
        status["conditions"] = [*status.get("conditions", []),
                                _condition("SuccessCriteriaMet", "CompletionsReached",
                                           "Reached expected number of succeeded pods", now_s),
                                _condition("Complete", "CompletionsReached",
                                           "Reached expected number of succeeded pods", now_s)]
        status["completionTime"] = now_s
        status["active"] = 0
        return decision

    kept = {pod_index(p) for p in live if p["metadata"]["name"] not in decision.delete_pods}
    decision.create_indexes = [i for i in range(completions) if i not in kept]
    status["active"] = len([p for p in active if p["metadata"]["name"] not in decision.delete_pods]) \
        + len(decision.create_indexes)
    status["ready"] = len([p for p in active if p["status"]["phase"] == "Running"])
    return decision
