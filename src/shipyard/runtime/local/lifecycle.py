"""When a container is restarted and how a pod is stopped: the kubelet's timing rules, as pure functions.

restartPolicy: `Always` (Deployment pods) restarts the container in place whatever its exit code,
`OnFailure` only after a non-zero exit, `Never` (Job pods) never. The pod keeps its name, uid and host
ports; only its container starts again, after a crash-loop back-off.

The back-off is the kubelet's, scaled down for one machine: Kubernetes waits 10 s doubling to 5 min and
forgets a container's back-off once it has run for twice the cap (10 min); here 1 s doubling to 30 s, reset
after 60 s. A local server that crashes is usually being developed, and a 5-minute wait would look like a hang.

Termination: `lifecycle.preStop.sleep.seconds` runs first (the time the gateway needs to stop routing to the
pod), then SIGTERM, then SIGKILL once terminationGracePeriodSeconds has passed since the deletion; as in
Kubernetes the grace period includes the preStop time, and a container always gets at least 2 seconds
between SIGTERM and SIGKILL, even when the preStop used the whole grace period up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MINIMUM_GRACE_SECONDS = 2.0  # the kubelet's minimumGracePeriodInSeconds
DEFAULT_GRACE_SECONDS = 30.0


@dataclass(frozen=True)
class Backoff:
    initial: float = 1.0
    cap: float = 30.0
    reset_after: float = 60.0

    def next_delay(self, previous: float | None, ran_for: float) -> float:
        """The wait before the next restart, given the last wait (None: never waited) and how long it ran."""
        if previous is None or ran_for >= self.reset_after:
            return self.initial
        return min(previous * 2, self.cap)


def restart_policy(pod: dict[str, Any]) -> str:
    # The API server defaults a pod's restartPolicy to Always; every pod the compiler emits for a Job says Never.
    return pod["spec"].get("restartPolicy", "Always")


def should_restart(pod: dict[str, Any], exit_code: int) -> bool:
    policy = restart_policy(pod)
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def grace_seconds(pod: dict[str, Any]) -> float:
    # A deletion may shorten the grace period (`kubectl delete --grace-period=N`, an eviction): the API server
    # records it in metadata.deletionGracePeriodSeconds, which then wins over the spec's.
    override = pod["metadata"].get("deletionGracePeriodSeconds") if "metadata" in pod else None
    if override is not None:
        return float(override)
    return float(pod["spec"].get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS))


def prestop_seconds(pod: dict[str, Any]) -> float:
    """How long after the deletion SIGTERM is sent: the preStop sleep, cut short at the grace period."""
    sleep = 0.0
    for container in pod["spec"].get("containers", []):
        seconds = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds")
        if seconds is not None:
            sleep = max(sleep, float(seconds))
    return min(sleep, grace_seconds(pod))


def kill_after_sigterm(pod: dict[str, Any]) -> float:
    """The grace left after SIGTERM: the shim SIGKILLs what is still running once it has passed."""
    return max(grace_seconds(pod) - prestop_seconds(pod), MINIMUM_GRACE_SECONDS)
