"""A TrainingJob's experiment run: created with the job, fed every progress line as metrics, ended with it.

Tracking is an observer, never a dependency: a tracker that is down, slow or refusing leaves the job exactly
as it would be without one. Every failure is caught here and retried after RETRY_SECONDS — not on every
2-second pass, so a dead server costs each job one quick failed call per retry period instead of stalling
the controller's workers. A job warns (log and event) once, and only when tracking has failed for
WARN_AFTER_SECONDS: right after `shipyard up` the tracking server is still starting, which is no news.

Where the history stands (bytes of each pod's log already sent) lives in two places: in memory, advanced on
every pass, and in `status.tracking.logOffsets`, written only when a pass sent metrics. So non-progress
output never causes a status write, and after a daemon restart the lines between the two contain no
progress line: reading them again sends nothing twice. A crash between sending and writing status can send
one batch twice (at-least-once: a repeated point at the same step is harmless in a metric history).
"""

from __future__ import annotations

import json
import logging
import shlex
from datetime import datetime, timedelta
from typing import Any

from shipyard.compiler.common import KIND_LABEL, NAME_LABEL
from shipyard.resources import TrainingJob
from shipyard.resources.trainingjob import TrackingStatus
from shipyard.runtime.protocol import LogRangeReader, LogReader, Runtime
from shipyard.store.protocol import Store

from ..tracking import Tracker, TrackingError
from . import history

log = logging.getLogger(__name__)
RETRY_SECONDS = 5.0
WARN_AFTER_SECONDS = 30.0
FINAL_READS = 40  # × history.MAX_READ_BYTES per pod: 10 MiB of log left unread when the job ends
# Set by whoever creates the job (a Sweep for its trials): the run to nest under, and the trial's parameters.
PARENT_RUN_ANNOTATION = "shipyard.dev/mlflow-parent-run-id"
SWEEP_PARAMETERS_ANNOTATION = "shipyard.dev/sweep-parameters"
RESTARTS_TAG = "shipyard.restarts"


def run_key(job: TrainingJob) -> str:
    return f"TrainingJob/{job.metadata.namespace}/{job.metadata.name}/{job.metadata.uid}"


def run_params(job: TrainingJob) -> dict[str, str]:
    """The spec, flattened under `spec.`; a trial's parameters under their own names (what a sweep varies is
    what people compare runs by)."""
    spec = job.spec
    params = {"spec.command": shlex.join(spec.command), "spec.args": shlex.join(spec.args),
              "spec.replicas": str(spec.replicas), "spec.procsPerReplica": str(spec.procs_per_replica),
              "spec.image": spec.image, "spec.maxRestarts": str(spec.max_restarts),
              "spec.backoffSeconds": f"{spec.backoff_seconds:g}"}
    params.update({f"spec.resources.{k}": v for k, v in spec.resources.as_dict().items()})
    if spec.volumes:
        params["spec.volumes"] = ",".join(f"{v.name}:{v.mount_path}" for v in spec.volumes)
    if spec.active_deadline_seconds is not None:
        params["spec.activeDeadlineSeconds"] = str(spec.active_deadline_seconds)
    params.update(trial_parameters(job))
    return params


def trial_parameters(job: TrainingJob) -> dict[str, str]:
    raw = job.metadata.annotations.get(SWEEP_PARAMETERS_ANNOTATION)
    if not raw:
        return {}
    try:
        values = json.loads(raw)
    except ValueError:
        return {}  # whoever wrote it owns its format; a bad annotation must not cost the job its run
    if not isinstance(values, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


def run_tags(job: TrainingJob, restarts: int) -> dict[str, str]:
    tags = {"shipyard.project": job.metadata.namespace, "shipyard.kind": job.kind,
            "shipyard.name": job.metadata.name, "shipyard.uid": job.metadata.uid or "",
            RESTARTS_TAG: str(restarts)}
    owner = next((o for o in job.metadata.owner_references if o.controller), None) or \
        next(iter(job.metadata.owner_references), None)
    if owner is not None:
        tags["shipyard.owner"] = f"{owner.kind}/{owner.name}"
    return tags


class RunTracking:
    def __init__(self, tracker: Tracker, runtime: Runtime, store: Store):
        self._tracker = tracker
        self._runtime = runtime
        self._store = store
        # Per job uid: log offsets (ahead of status), the restart count last tagged, when to try again after a
        # failure, and whether that failure was already reported.
        self._offsets: dict[str, dict[str, int]] = {}
        self._tagged_restarts: dict[str, int] = {}
        self._retry_at: dict[str, datetime] = {}
        self._failing_since: dict[str, datetime] = {}
        self._warned: set[str] = set()

    @staticmethod
    def pending(job: TrainingJob) -> bool:
        """Whether a finished job's run still has to be completed (its last lines sent, its end recorded)."""
        return job.status.tracking is not None and not job.status.tracking.run_ended

    def sync(self, job: TrainingJob, status: Any, now: datetime) -> bool:
        """Bring the job's run up to date within `status` (the copy the controller will write).
        Returns False if the tracker failed, so the caller may come back sooner than it otherwise would."""
        uid = job.metadata.uid or ""
        if status.tracking is None:
            status.tracking = TrackingStatus()  # from now on this job has a run, even if it cannot be made yet
        if status.tracking.run_ended:
            return True
        retry_at = self._retry_at.get(uid)
        if retry_at is not None and now < retry_at:
            return False
        try:
            self._sync(job, status, now)
        except Exception as exc:  # noqa: BLE001 - TrackingError by contract; anything else must not stop healing either
            self._failed(job, uid, exc, now)
            return False
        self._retry_at.pop(uid, None)
        self._failing_since.pop(uid, None)
        self._warned.discard(uid)
        return True

    def forget(self, job: TrainingJob) -> None:
        """The job is gone: end its run if it was still open (best effort, once) and drop what is kept of it."""
        uid = job.metadata.uid or ""
        if job.status.mlflow_run_id and self.pending(job):
            try:
                self._tracker.set_terminated(job.status.mlflow_run_id, "KILLED")
            except Exception as exc:  # noqa: BLE001 - deletion must never wait for the tracker
                log.warning("could not end the run of %s: %s", job.ref, exc)
        self._offsets.pop(uid, None)
        self._tagged_restarts.pop(uid, None)
        self._retry_at.pop(uid, None)
        self._failing_since.pop(uid, None)
        self._warned.discard(uid)

    # --- steps ---------------------------------------------------------------------------------------

    def _sync(self, job: TrainingJob, status: Any, now: datetime) -> None:
        uid = job.metadata.uid or ""
        if status.mlflow_run_id is None:
            status.mlflow_run_id = self._tracker.ensure_run(
                run_key(job), job.metadata.namespace, job.metadata.name, run_params(job),
                run_tags(job, status.restarts), job.metadata.annotations.get(PARENT_RUN_ANNOTATION) or None)
            self._tagged_restarts[uid] = status.restarts
        elif self._tagged_restarts.get(uid) != status.restarts:
            self._tracker.set_tags(status.mlflow_run_id, {RESTARTS_TAG: str(status.restarts)})
            self._tagged_restarts[uid] = status.restarts
        more = self._send_history(job, status, now)
        if status.phase in ("Succeeded", "Failed"):
            # The last chance to read these logs: drain them (a bounded number of reads) before ending the run.
            for _ in range(FINAL_READS):
                if not more:
                    break
                more = self._send_history(job, status, now)
            self._tracker.set_terminated(status.mlflow_run_id, "FINISHED" if status.phase == "Succeeded" else "FAILED")
            status.tracking.run_ended = True
            self._offsets.pop(uid, None)
            self._tagged_restarts.pop(uid, None)

    def _send_history(self, job: TrainingJob, status: Any, now: datetime) -> bool:
        """Send what is new in the logs; True if there may be more to read right away."""
        read = self._reader(job.metadata.namespace)
        if read is None:
            return False
        uid = job.metadata.uid or ""
        pods = self._runtime.list("Pod", job.metadata.namespace,
                                  {KIND_LABEL: "trainingjob", NAME_LABEL: job.metadata.name})
        names, finished = history.rank0_pods(pods)
        offsets = self._offsets.get(uid)
        if offsets is None:
            offsets = dict(status.tracking.log_offsets)
        batch = history.read_new(read, names, finished, offsets, int(now.timestamp() * 1000))
        if batch.metrics:
            self._tracker.log_metrics(status.mlflow_run_id, batch.metrics)
            status.tracking.log_offsets = dict(batch.offsets)
        self._offsets[uid] = batch.offsets
        return batch.more

    def _reader(self, namespace: str) -> history.ReadRange | None:
        runtime = self._runtime
        if isinstance(runtime, LogRangeReader):
            return lambda pod, offset, size: runtime.read_log_range(namespace, pod, offset, size)
        if isinstance(runtime, LogReader):
            # A runtime that can only stream a whole log: correct, but it reads everything each pass.
            return lambda pod, offset, size: b"".join(runtime.read_log(namespace, pod))[offset:offset + size]
        return None

    def _failed(self, job: TrainingJob, uid: str, exc: Exception, now: datetime) -> None:
        self._retry_at[uid] = now + timedelta(seconds=RETRY_SECONDS)
        since = self._failing_since.setdefault(uid, now)
        if uid in self._warned or now - since < timedelta(seconds=WARN_AFTER_SECONDS):
            return
        self._warned.add(uid)
        detail = str(exc) if isinstance(exc, TrackingError) else f"{type(exc).__name__}: {exc}"
        log.warning("experiment tracking of %s has failed for %ds (%s); the job goes on, retrying every %gs",
                    job.ref, (now - since).total_seconds(), detail, RETRY_SECONDS)
        self._store.record_event(job, "Warning", "TrackingUnavailable",
                                 f"MLflow tracking failed: {detail}; metrics are sent once it is back")
