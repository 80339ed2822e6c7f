"""Gang restart policy: when a failed attempt is retried, when the job gives up, and how long to back off.

Kept apart from the reconciler (as the Kubernetes Job controller keeps backoff in its own file) so the
decision can be tested as a table without processes or clocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

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
