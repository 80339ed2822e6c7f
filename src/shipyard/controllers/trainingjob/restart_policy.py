"""Gang restart policy: when a failed attempt is retried, when the job gives up, how long to back off, and
when a gang was disrupted rather than failed (then it is recreated without counting a restart).

Kept apart from the reconciler (as the Kubernetes Job controller keeps backoff in its own file) so the
decision can be tested as a table without processes or clocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shipyard.compiler.trainingjob import DISRUPTION_RULE_MESSAGE

from .replicas import COMPLETION_INDEX

NON_RETRYABLE_REASONS = {"DeadlineExceeded"}


@dataclass(frozen=True)
class FailureDecision:
    restart: bool
    reason: str
    message: str


def decide(restarts: int, max_restarts: int, job_reason: str, failure_message: str) -> FailureDecision:
    if job_reason in NON_RETRYABLE_REASONS:
        return FailureDecision(False, "DeadlineExceeded", f"the job ran past activeDeadlineSeconds: {failure_message}")
    if restarts < max_restarts:
        return FailureDecision(True, "GangRestart",
                               f"{failure_message}; restarting all replicas (restart {restarts + 1} of {max_restarts})")
    return FailureDecision(False, "RestartLimitExceeded",
                           f"{failure_message}; giving up after {restarts} restart(s) (maxRestarts={max_restarts})")


def backoff_remaining(last_restart: datetime | None, backoff_seconds: float, now: datetime) -> float:
    if last_restart is None:
        return 0.0
    return max(0.0, backoff_seconds - (now - last_restart).total_seconds())


def disruption(pods: list[dict[str, Any]], failed_message: str | None) -> str | None:
    """Why the platform took this attempt's gang apart, or None when it did not.

    A pod of the attempt with `DisruptionTarget=True` (set by the API server on eviction and preemption, by
    the node lifecycle controller when it evicts from a lost node, by the pod garbage collector, by the node
    agent on shutdown), whether it is still terminating or already failed: its peers' failures that follow
    (a broken collective) are its consequence, not failures of their own. Or the Job failed by the disruption
    rule while the pod itself is already gone."""
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        cond = next((c for c in pod.get("status", {}).get("conditions", [])
                     if c["type"] == "DisruptionTarget" and c["status"] == "True"), None)
        if cond is not None:
            index = pod["metadata"].get("annotations", {}).get(COMPLETION_INDEX, "?")
            detail = ": ".join(x for x in (cond.get("reason"), cond.get("message")) if x)
            return f"replica {index} ({pod['metadata']['name']}) was disrupted" + (f" ({detail})" if detail else "")
    if failed_message and DISRUPTION_RULE_MESSAGE in failed_message:
        return f"a replica was disrupted ({failed_message})"
    return None


def stuck(pod: dict[str, Any], now: datetime, margin: timedelta) -> bool:
    """A pod past its deletion deadline by `margin`: no kubelet is left to finish it (its node was lost).

    `deletionTimestamp` is when the grace period ends; a live kubelet removes the pod within seconds of it."""
    deadline = pod["metadata"].get("deletionTimestamp")
    if not deadline:
        return False
    return now >= datetime.fromisoformat(deadline.replace("Z", "+00:00")) + margin
