"""The TrainingJob controller: keeps one gang (an Indexed Job) running per attempt and heals it.

Reconcile is ordered like KubeRay's: read the resource, make sure its finalizer and children are right
(creating, correcting drift, deleting a failed attempt), derive the new status from what the runtime
reports, then write status once, only if it changed. The failed attempt's restart count is written
*before* its Job is deleted, so a crash between the two can neither lose nor double-count a restart.

Each gang is one attempt (`status.attempt` = counted restarts + disruption restarts), named by its Job's and
pods' restart label. A gang the platform took apart (a replica preempted, evicted, drained or lost with its
node) is recreated at once as the next attempt with `status.disruptions` one higher and `restarts` unchanged:
the replicas that lost their collective did not fail on their own.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from shipyard.compiler import compile_resource
from shipyard.compiler.common import KIND_LABEL, KUEUE_QUEUE_LABEL, NAME_LABEL, RESTART_LABEL
from shipyard.resources import Condition, TrainingJob, set_condition
from shipyard.resources.trainingjob import Progress
from shipyard.runtime.protocol import LogReader, PodForceDeleter, Runtime
from shipyard.store.protocol import Store

from ..clock import Clock, SystemClock
from ..finalizers import FINALIZER, reconcile_lifecycle, release  # noqa: F401 (FINALIZER re-exported)
from ..manager import ObjectKey, Result
from ..tracking import Tracker
from . import restart_policy
from .progress import last_progress
from .replicas import failure_summary, newest_pods, replica_statuses
from .run_tracking import RETRY_SECONDS, RunTracking

PROGRESS_TAIL_BYTES = 64 * 1024
RUNNING_RESYNC = 2.0  # how fresh progress and replica state are while a job runs
WAITING_RESYNC = 0.25
# How long past its deletion deadline an old attempt's pod may stay before it is taken for lost with its node
# and removed by force, so that the next attempt is not held back by a kubelet that will never answer.
LOST_POD_MARGIN = timedelta(seconds=30)
# A job that waits for something outside it (capacity: its gang does not fit; Kueue: admission) is not
# requeued on a timer: what can end the wait wakes it. The runtime reports its pods placed when capacity
# frees (the local runtime retries placement when a pod finishes or is removed; a cluster's scheduler does the
# same), and Kueue's admission un-suspends its Job, a runtime change too. An edit is a store change. The
# manager's slow resync is the safety net. Polling instead cost a core for 1,000 waiting jobs.
WAKE_ON_EVENT = None


class TrainingJobController:
    kind = "TrainingJob"

    def __init__(self, store: Store, runtime: Runtime, clock: Clock | None = None, tracker: Tracker | None = None):
        self._store = store
        self._runtime = runtime
        self._clock = clock or SystemClock()
        # Without a tracker nothing is tracked and nothing else changes.
        self._tracking = RunTracking(tracker, runtime, store) if tracker is not None else None

    # --- entry point ---------------------------------------------------------------------------------

    def reconcile(self, key: ObjectKey) -> Result:
        return reconcile_lifecycle(self._store, self.kind, key, gone=self._delete_children,
                                   finalize=self._finalize, live=self._reconcile_live)

    # --- steps ---------------------------------------------------------------------------------------

    def _reconcile_live(self, job: TrainingJob) -> Result:
        now = self._clock.now()
        status = job.status.model_copy(deep=True)
        status.observed_generation = job.metadata.generation
        if job.finished:
            return self._after_finish(job, now)

        ns, name = job.metadata.namespace, job.metadata.name
        desired = compile_resource(job, restart=status.attempt)
        for obj in desired:
            if obj["kind"] == "PersistentVolumeClaim":
                # A volume belongs to the project, shared by every job that names it: create it if missing,
                # but never "correct" another job's size or storage class (two jobs would fight forever).
                if self._runtime.get(obj["kind"], ns, obj["metadata"]["name"]) is None:
                    self._runtime.apply(obj)
            elif obj["kind"] != "Job":
                self._runtime.apply(obj)  # idempotent: corrects drift in the Service
        native = self._runtime.get("Job", ns, name)
        requeue: float | None = RUNNING_RESYNC

        if native is not None and _label(native, RESTART_LABEL) != str(status.attempt):
            # A previous attempt's gang (status already counts its failure or disruption): remove it before the
            # next.
            if not native["metadata"].get("deletionTimestamp"):
                self._runtime.delete("Job", ns, name)
            else:
                self._remove_lost_pods(job, status.attempt, now)
            requeue = WAITING_RESYNC
        elif native is None:
            wait = restart_policy.backoff_remaining(status.last_restart_time, job.spec.backoff_seconds, now)
            if status.phase == "Restarting" and wait > 0:
                requeue = wait
            else:
                job_obj = next(o for o in desired if o["kind"] == "Job")
                self._runtime.apply(job_obj)  # suspended; released at once below unless Kueue admits it
                self._admit(job, status, now)
                self._event(job, "Normal", "Created",
                            f"created gang of {job.spec.replicas} replica(s), attempt {status.attempt + 1}")
                if status.phase != "Restarting":
                    status.phase = "Pending"
                requeue = WAITING_RESYNC
        elif native["metadata"].get("deletionTimestamp"):
            requeue = WAITING_RESYNC
        elif native["spec"].get("suspend"):
            requeue = self._admit(job, status, now)
        else:
            requeue = self._observe(job, status, native, now)

        deadline = job.spec.active_deadline_seconds
        if (deadline and status.start_time and status.phase not in ("Succeeded", "Failed")
                and now >= status.start_time + timedelta(seconds=deadline)):
            self._fail(job, status, now, "DeadlineExceeded",
                       f"the job ran longer than activeDeadlineSeconds ({deadline}s)")
            self._runtime.delete("Job", ns, name)
        if self._tracking is not None:
            self._tracking.sync(job, status, now)
        self._write_status(job, status)
        return Result(requeue_after=requeue)

    def _admit(self, job: TrainingJob, status: Any, now: datetime) -> float | None:
        """Release the suspended Job, unless Kueue admits it (then wait, saying for which queue)."""
        queue = job.metadata.labels.get(KUEUE_QUEUE_LABEL)
        if queue:
            status.conditions = set_condition(status.conditions, Condition(
                type="Admitted", status="False", reason="Queued",
                message=f"waiting for Kueue to admit it from LocalQueue {queue!r}"), now)
            return WAKE_ON_EVENT
        admitted = compile_resource(job, restart=status.attempt, admitted=True)
        self._runtime.apply(next(o for o in admitted if o["kind"] == "Job"))
        return WAITING_RESYNC

    def _observe(self, job: TrainingJob, status: Any, native: dict[str, Any], now: datetime) -> float | None:
        ns, name = job.metadata.namespace, job.metadata.name
        queued = status.condition("Admitted")
        if queued is not None and queued.status == "False":
            status.conditions = set_condition(status.conditions, Condition(
                type="Admitted", status="True", reason="Admitted", message="admitted by Kueue"), now)
        pods = self._runtime.list("Pod", ns, {KIND_LABEL: "trainingjob", NAME_LABEL: name,
                                               RESTART_LABEL: str(status.attempt)})
        status.replica_statuses = replica_statuses(job.spec.replicas, pods)
        self._read_progress(job, status, pods, now)
        conditions = {c["type"]: c for c in native.get("status", {}).get("conditions", []) if c["status"] == "True"}

        failed = conditions.get("Failed")
        disrupted = None if "Complete" in conditions or (failed or {}).get("reason") == "DeadlineExceeded" \
            else restart_policy.disruption(pods, (failed or {}).get("message"))
        if disrupted is not None:
            # Checked before a failure: peers that lost their collective when a replica was taken away may have
            # failed the Job first, and that is the disruption's doing, not theirs.
            status.disruptions += 1
            status.phase = "Restarting"
            message = (f"{disrupted}; recreating all {job.spec.replicas} replica(s) as attempt {status.attempt + 1} "
                       f"(not counted against maxRestarts)")
            status.conditions = set_condition(status.conditions, Condition(
                type="Running", status="False", reason="Disrupted", message=message), now)
            self._event(job, "Warning", "Disrupted", message)
            return 0  # as for a failure, the disrupted attempt is deleted once this status is stored

        if failed is not None:
            summary = failure_summary(status.replica_statuses)
            decision = restart_policy.decide(status.restarts, job.spec.max_restarts,
                                             failed.get("reason", ""), summary)
            if decision.restart:
                status.restarts += 1
                status.phase = "Restarting"
                status.last_restart_time = now
                status.conditions = set_condition(status.conditions, Condition(
                    type="Running", status="False", reason=decision.reason, message=decision.message), now)
                self._event(job, "Warning", "Restarting", decision.message)
                # Deleting the failed attempt happens on the next pass, after this status is stored.
                return 0
            self._fail(job, status, now, decision.reason, decision.message)
            return None

        if "Complete" in conditions:
            status.phase = "Succeeded"
            status.completion_time = now
            status.conditions = set_condition(status.conditions, Condition(
                type="Running", status="False", reason="Completed", message="all replicas completed"), now)
            status.conditions = set_condition(status.conditions, Condition(
                type="Succeeded", status="True", reason="Completed",
                message=f"all {job.spec.replicas} replica(s) exited with code 0"), now)
            self._event(job, "Normal", "Succeeded", f"all {job.spec.replicas} replica(s) completed")
            return None

        unscheduled = [r for r in status.replica_statuses if r.reason == "Unschedulable"]
        if unscheduled:
            status.conditions = set_condition(status.conditions, Condition(
                type="Scheduled", status="False", reason="Unschedulable", message=unscheduled[0].message or ""), now)
            if status.phase != "Restarting":
                status.phase = "Pending"
            self._event(job, "Warning", "Unschedulable", unscheduled[0].message or "does not fit")
            return WAKE_ON_EVENT
        running = [r for r in status.replica_statuses if r.phase == "Running"]
        if len(running) == job.spec.replicas and status.phase != "Running":
            status.phase = "Running"
            status.start_time = status.start_time or now
            status.conditions = set_condition(status.conditions, Condition(
                type="Scheduled", status="True", reason="Scheduled", message="all replicas placed"), now)
            status.conditions = set_condition(status.conditions, Condition(
                type="Running", status="True", reason="AllReplicasRunning",
                message=f"{job.spec.replicas} replica(s) running, attempt {status.attempt + 1}"), now)
            self._event(job, "Normal", "Running", f"all {job.spec.replicas} replica(s) running")
        return RUNNING_RESYNC if running else WAITING_RESYNC

    def _remove_lost_pods(self, job: TrainingJob, attempt: int, now: datetime) -> None:
        """Force-remove an old attempt's pods stuck in deletion on a lost node, which hold its Job (a foreground
        deletion) and so the next attempt back for good. A replica still running on a node cut off from the
        cluster cannot take part in a collective either: its peers are gone."""
        if not isinstance(self._runtime, PodForceDeleter):
            return
        ns = job.metadata.namespace
        for pod in self._runtime.list("Pod", ns, {KIND_LABEL: "trainingjob", NAME_LABEL: job.metadata.name}):
            if _label(pod, RESTART_LABEL) != str(attempt) and restart_policy.stuck(pod, now, LOST_POD_MARGIN):
                self._runtime.force_delete_pod(ns, pod["metadata"]["name"])
                self._event(job, "Warning", "LostPodRemoved",
                            f"removed pod {pod['metadata']['name']} of an earlier attempt by force: still there "
                            f"{LOST_POD_MARGIN.seconds}s past its deletion deadline (its node is lost)")

    def _read_progress(self, job: TrainingJob, status: Any, pods: list[dict[str, Any]], now: datetime) -> None:
        if not isinstance(self._runtime, LogReader):
            return
        rank0 = newest_pods(pods).get(0)
        if rank0 is None or (rank0.get("status") or {}).get("phase", "Pending") == "Pending":
            return  # never started: no log to read (and thousands of waiting jobs must not each look for one)
        tail = b"".join(self._runtime.read_log(job.metadata.namespace, rank0["metadata"]["name"],
                                               tail_bytes=PROGRESS_TAIL_BYTES))
        parsed = last_progress(tail.decode("utf-8", errors="replace"))
        if parsed is None:
            return
        previous = status.progress
        progress = Progress(step=parsed.get("step"), total_steps=parsed.get("total_steps"), loss=parsed.get("loss"),
                            tokens_per_second=parsed.get("tokens_per_second"), metrics=parsed["metrics"],
                            updated_at=previous.updated_at if previous else None)
        if previous is None or progress.model_copy(update={"updated_at": None}) != \
                previous.model_copy(update={"updated_at": None}):
            progress.updated_at = now
        status.progress = progress

    def _fail(self, job: TrainingJob, status: Any, now: datetime, reason: str, message: str) -> None:
        status.phase = "Failed"
        status.completion_time = now
        status.conditions = set_condition(status.conditions, Condition(
            type="Running", status="False", reason=reason, message=message), now)
        status.conditions = set_condition(status.conditions, Condition(
            type="Failed", status="True", reason=reason, message=message), now)
        self._event(job, "Warning", "Failed", message)

    def _after_finish(self, job: TrainingJob, now: datetime) -> Result:
        retry: float | None = None
        if self._tracking is not None and self._tracking.pending(job):
            # The run outlived the pass that saw the job finish (the tracker was down): complete it now.
            status = job.status.model_copy(deep=True)
            if not self._tracking.sync(job, status, now):
                retry = RETRY_SECONDS
            self._write_status(job, status)
        ttl = job.spec.ttl_seconds_after_finished
        if ttl is None or job.status.completion_time is None:
            return Result(requeue_after=retry)
        expires = job.status.completion_time + timedelta(seconds=ttl)
        if now >= expires:
            self._store.delete(self.kind, job.metadata.namespace, job.metadata.name)
            return Result()
        wait = (expires - now).total_seconds()
        return Result(requeue_after=min(wait, retry) if retry is not None else wait)

    def _finalize(self, job: TrainingJob) -> Result:
        if not self._delete_children(job.metadata.namespace, job.metadata.name):
            return Result(requeue_after=WAITING_RESYNC)
        if self._tracking is not None:
            self._tracking.forget(job)
        return release(self._store, job)

    def _delete_children(self, namespace: str, name: str) -> bool:
        """Delete the Job, Service and NetworkPolicy (never the volumes: data outlives jobs). True once the Job is
        gone. (A cluster's garbage collector would remove the owned objects too; the local runtime has none.)"""
        native = self._runtime.get("Job", namespace, name)
        if native is not None:
            self._runtime.delete("Job", namespace, name)
        for kind in ("Service", "NetworkPolicy"):
            if self._runtime.get(kind, namespace, name) is not None:
                self._runtime.delete(kind, namespace, name)
        return self._runtime.get("Job", namespace, name) is None

    # --- writing -------------------------------------------------------------------------------------

    def _write_status(self, job: TrainingJob, status: Any) -> None:
        if status.to_wire() == job.status.to_wire():
            return
        self._store.update_status(job.model_copy(update={"status": status}))

    def _event(self, job: TrainingJob, type_: str, reason: str, message: str) -> None:
        self._store.record_event(job, type_, reason, message)  # type: ignore[arg-type]


def _label(obj: dict[str, Any], key: str) -> str | None:
    return obj["metadata"].get("labels", {}).get(key)
