"""What the agent knows about a pod it runs (PodRun), and the pod status the kubelet would report for it.

Pure: `pod_status` turns a PodRun and the pod as the API server holds it into the `status` to write, so the
rules are table-tested without processes or a cluster. The agent writes the result as a strategic merge patch
of pods/status, as the kubelet's status manager does: conditions merge by type (the scheduler's PodScheduled
and the API server's DisruptionTarget stay), container statuses by name. Because a strategic merge patch
merges nested maps, every state the container is *not* in is sent as null (a container cannot be running and
terminated at once), and so is an absent condition reason.

Phase, as the kubelet computes it for the one container the agent runs:
- Pending until the container first starts (including while its config cannot be resolved yet:
  CreateContainerConfigError);
- Running while it runs, or waits out a crash-loop back-off after having run (restartPolicy Always/OnFailure);
- Succeeded / Failed once it terminated for good (restartPolicy, or the pod's deletion): Succeeded if it exited 0.
Containers after the first are not run (the agent runs one process per pod): they are reported waiting with
reason ContainerNotRun and left out of the pod's readiness. Init containers are not run either.

A condition keeps its lastTransitionTime from the API's copy while its status is unchanged, so writing the
same state twice writes the same status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

RUNTIME_SCHEME = "shipyard"
NOT_RUN_REASON = "ContainerNotRun"


def rfc3339(epoch: float) -> str:
    """A metav1.Time: seconds precision, UTC, `Z`."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(epoch: float) -> str:
    """A metav1.MicroTime (a Lease's renewTime)."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class PodRun:
    """The agent's record of one pod (by uid); saved beside its processes so a restarted agent adopts them."""

    uid: str
    namespace: str
    name: str
    node: str
    ip: str
    start_time: float  # when the agent took the pod: status.startTime
    gpus: list[str] = field(default_factory=list)
    pid: int | None = None  # the shim's
    ticks: int | None = None  # the shim's start time, so a recycled pid is never taken for it
    restart_count: int = 0
    started_at: float | None = None  # the running container's start
    waiting: dict[str, str] | None = None  # {"reason", "message"} while not running
    terminated: dict[str, Any] | None = None  # the container's final state: no restart follows
    last_terminated: dict[str, Any] | None = None  # the previous attempt's end
    backoff: float | None = None  # the last crash-loop wait, doubling
    retry_at: float | None = None  # when a waiting container is tried again
    ready: bool = False
    deletion_seen: float | None = None  # when the agent saw the deletion: the grace period counts from here
    sigterm_sent: bool = False
    disruption: dict[str, str] | None = None  # a DisruptionTarget condition the agent adds (node shutdown)

    @property
    def running(self) -> bool:
        return self.pid is not None

    def phase(self) -> str:
        if self.terminated is not None:
            return "Succeeded" if int(self.terminated.get("exitCode", 1)) == 0 else "Failed"
        if self.running or self.last_terminated is not None:
            return "Running"
        return "Pending"


def _terminated_state(t: dict[str, Any]) -> dict[str, Any]:
    state = {"exitCode": int(t.get("exitCode", 137)), "reason": t.get("reason", "Error"),
             "message": t.get("message") or None, "startedAt": rfc3339(t["startedAt"]) if t.get("startedAt") else None,
             "finishedAt": rfc3339(t.get("finishedAt") or t.get("startedAt") or 0)}
    if t.get("signal"):
        state["signal"] = int(t["signal"])
    return state


def container_state(run: PodRun) -> dict[str, Any]:
    """The first container's `state`, with the states it is not in as null (see the module docstring)."""
    if run.terminated is not None:
        return {"running": None, "waiting": None, "terminated": _terminated_state(run.terminated)}
    if run.running and run.started_at is not None:
        return {"running": {"startedAt": rfc3339(run.started_at)}, "waiting": None, "terminated": None}
    waiting = run.waiting or {"reason": "ContainerCreating"}
    return {"running": None, "terminated": None,
            "waiting": {"reason": waiting["reason"], "message": waiting.get("message") or None}}


def container_statuses(pod: dict[str, Any], run: PodRun) -> list[dict[str, Any]]:
    containers = pod["spec"]["containers"]
    first = containers[0]
    has_run = run.running or run.terminated is not None or run.last_terminated is not None
    status: dict[str, Any] = {
        "name": first["name"], "image": first.get("image", ""), "imageID": "",
        "containerID": f"{RUNTIME_SCHEME}://{run.uid}-{run.restart_count}" if has_run else None,
        "started": run.running, "ready": run.ready and run.running, "restartCount": run.restart_count,
        "state": container_state(run),
        "lastState": ({"terminated": _terminated_state(run.last_terminated)} if run.last_terminated else {}),
    }
    out = [status]
    for other in containers[1:]:
        out.append({"name": other["name"], "image": other.get("image", ""), "imageID": "", "started": False,
                    "ready": False, "restartCount": 0,
                    "state": {"waiting": {"reason": NOT_RUN_REASON,
                                          "message": "the Shipyard node agent runs a pod's first container only"}}})
    return out


def _condition(ctype: str, value: bool, previous: dict[str, dict[str, Any]], now: float,
               reason: str | None = None, message: str | None = None) -> dict[str, Any]:
    status = "True" if value else "False"
    old = previous.get(ctype)
    since = old["lastTransitionTime"] if old and old.get("status") == status and old.get("lastTransitionTime") \
        else rfc3339(now)
    return {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": since,
            "reason": reason, "message": message}


def pod_status(pod: dict[str, Any], run: PodRun, host_ip: str, now: float) -> dict[str, Any]:
    """The status the agent reports for `pod` (the API's copy) given what it knows (`run`)."""
    previous = {c["type"]: c for c in pod.get("status", {}).get("conditions", [])}
    phase = run.phase()
    ready = run.ready and run.running and run.deletion_seen is None
    if ready:
        why: tuple[str | None, str | None] = (None, None)
    elif phase in ("Succeeded", "Failed"):
        why = ("PodCompleted", None)
    else:
        why = ("ContainersNotReady", f"containers with unready status: [{pod['spec']['containers'][0]['name']}]")
    conditions = [
        _condition("PodReadyToStartContainers", phase != "Succeeded" and phase != "Failed" or run.running,
                   previous, now),
        _condition("Initialized", True, previous, now),
        _condition("ContainersReady", ready, previous, now, *why),
        _condition("Ready", ready, previous, now, *why),
    ]
    if "PodScheduled" not in previous:  # a pod bound by its creator (spec.nodeName set) never met the scheduler
        conditions.append(_condition("PodScheduled", True, previous, now))
    if run.disruption is not None:
        conditions.append(_condition("DisruptionTarget", True, previous, now, run.disruption["reason"],
                                     run.disruption["message"]))
    return {
        "phase": phase,
        "conditions": conditions,
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "podIP": run.ip, "podIPs": [{"ip": run.ip}],
        "startTime": rfc3339(run.start_time),
        "containerStatuses": container_statuses(pod, run),
    }
