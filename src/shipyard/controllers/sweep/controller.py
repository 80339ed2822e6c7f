"""The Sweep controller: runs a search space as TrainingJobs, `parallelism` at a time, and picks the best.

It never runs anything itself: trials are TrainingJobs in the store, which the TrainingJob controller runs.
Each pass reads the Sweep and its trials (found by label, told apart from an earlier Sweep of the same name
by the owner uid), folds the trials' progress into the status, stops trials the median rule condemns, fails
the sweep once more than `maxFailedTrials` trials failed, creates the next trials while there is room, and
finishes when every trial has. Status is written once per pass, only if it changed.

Ordering makes it crash-safe: a trial is created before its row is written (a restarted controller adopts a
trial it finds without a row: trial i's parameters are a pure function of i), and a trial is marked Stopped
before its TrainingJob is deleted (a TrainingJob missing under an unfinished row was deleted by someone else).

Tracking is optional and never fatal: without a tracker nothing is tracked; a TrackingError leaves the
sweep running and is retried on a later pass (only registering the best model holds the sweep back). A tracker
that answers late — after some trials, or all of them, finished — must leave what an early one leaves, so
nothing here depends on when it answers:
- the sweep's run is made whenever the tracker first answers, even after the sweep finished;
- a trial's row records its run id only once that run is nested under the sweep's (set_parent: the trial's
  run may have been made before the sweep's, and a finished trial never learns its parent by annotation), so
  the row's run id doubles as the persistent "linked" mark and each run is linked exactly once;
- the best trial is registered with its run once that run exists (the TrainingJob controller makes it when
  the tracker answers), and always with the sweep's project, so registration never needs the run's tags;
- the sweep's run ends (condition Tracked) only once every trial's run is linked.
Only a refusal (TrackingRejected: the server answered no) ends the waiting: the sweep fails, saying why.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Literal

from shipyard.resources import Condition, Sweep, TrainingJob, set_condition
from shipyard.resources.sweep import BestTrial, RegisteredModel, SweepStatus, TrialStatus
from shipyard.resources.selector import Selector
from shipyard.store.protocol import Store

from ..clock import Clock, SystemClock
from ..finalizers import FINALIZER, reconcile_lifecycle, release  # noqa: F401 (FINALIZER re-exported)
from ..manager import ObjectKey, Result
from ..tracking import Metric, Tracker, TrackingError, TrackingRejected
from . import median_stopping
from .best import best_trial
from .searchspace import assignment, summary
from .substitute import PARENT_RUN_ANNOTATION, SWEEP_LABEL, owned_by, trial_index, trial_job
from .trials import observe

log = logging.getLogger(__name__)
WAITING_RESYNC = 0.5  # while trials it deleted are still stopping
TRACKING_RETRY = 10.0


class SweepController:
    kind = "Sweep"

    def __init__(self, store: Store, tracker: Tracker | None = None, clock: Clock | None = None):
        self._store = store
        self._tracker = tracker
        self._clock = clock or SystemClock()

    # --- entry point ---------------------------------------------------------------------------------

    def reconcile(self, key: ObjectKey) -> Result:
        return reconcile_lifecycle(self._store, self.kind, key, gone=self._delete_orphans,
                                   finalize=self._finalize, live=self._reconcile_live)

    # --- one pass ------------------------------------------------------------------------------------

    def _reconcile_live(self, sweep: Sweep) -> Result:
        now = self._clock.now()
        status = sweep.status.model_copy(deep=True)
        status.observed_generation = sweep.metadata.generation
        owned, stale = self._trials(sweep)
        for job in stale:  # left by an earlier Sweep of this name: never adopted, removed
            if job.metadata.deletion_timestamp is None:
                self._store.delete("TrainingJob", job.metadata.namespace, job.metadata.name)
        retry: float | None = None  # when a failed tracking call should be tried again
        registering = False  # every trial is done; only registering the best model is left
        if status.mlflow_run_id is None and not self._tracked(status) and not self._ensure_run(sweep, status):
            retry = TRACKING_RETRY

        self._adopt(sweep, status, owned)
        for i, row in enumerate(status.trials):
            status.trials[i] = self._observe(sweep, row, owned.get(row.name))
        linked = self._link_trial_runs(status, owned)
        to_delete = [r.name for r in status.trials if r.phase == "Stopped" and r.name in owned
                     and owned[r.name].metadata.deletion_timestamp is None]
        if not sweep.finished:
            to_delete += self._early_stop(sweep, status)
            if not self._enforce_failure_limit(sweep, status, now, to_delete):
                self._create_trials(sweep, status, owned, {j.metadata.name for j in stale}, now)
                registering = not self._finish(sweep, status, owned, now)
        self._summarise(sweep, status)
        self._annotate_parent_run(sweep, status, owned)
        if status.phase in ("Succeeded", "Failed") and not self._terminate_run(status, now, linked):
            retry = min(retry or TRACKING_RETRY, TRACKING_RETRY)

        self._write_status(sweep, status)
        for name in dict.fromkeys(to_delete):  # after the rows say Stopped, so a crash in between loses nothing
            self._store.delete("TrainingJob", sweep.metadata.namespace, name)
        if to_delete or stale:
            return Result(requeue_after=WAITING_RESYNC)
        if status.phase in ("Succeeded", "Failed"):
            return Result(requeue_after=retry)
        if registering:
            return Result(requeue_after=TRACKING_RETRY)
        # Trials' changes wake the sweep through their owner reference (the manager's resync is the fallback):
        # a sweep whose trials wait for capacity costs nothing until one of them moves.
        return Result(requeue_after=retry)

    def _trials(self, sweep: Sweep) -> tuple[dict[str, TrainingJob], list[TrainingJob]]:
        """This sweep's trials by name, and the trials an earlier Sweep of the same name made (another uid).
        A TrainingJob merely labelled with the sweep's name, owned by no Sweep, is the user's: left alone."""
        owned: dict[str, TrainingJob] = {}
        stale: list[TrainingJob] = []
        # Asked by label: a sweep's reconcile must not read every TrainingJob of its project (10,000 of them
        # made each reconcile cost 0.1 s, and a project of sweeps quadratic).
        for job in self._store.list("TrainingJob", sweep.metadata.namespace,
                                    Selector.equal({SWEEP_LABEL: sweep.metadata.name})):
            assert isinstance(job, TrainingJob)
            if owned_by(job, sweep):
                owned[job.metadata.name] = job
            elif any(r.kind == self.kind and r.name == sweep.metadata.name for r in job.metadata.owner_references):
                stale.append(job)
        return owned, stale

    def _adopt(self, sweep: Sweep, status: SweepStatus, owned: dict[str, TrainingJob]) -> None:
        """Rows for trials created without one (a crash between creating a trial and writing status)."""
        indices = [i for job in owned.values() if (i := trial_index(job)) is not None and i < sweep.total_trials]
        for index in range(len(status.trials), max(indices, default=-1) + 1):
            status.trials.append(TrialStatus(name=sweep.trial_name(index), parameters=assignment(sweep.spec, index)))

    def _observe(self, sweep: Sweep, row: TrialStatus, job: TrainingJob | None) -> TrialStatus:
        objective = sweep.objective_of(job) if job is not None else None
        new = observe(row, job, objective, sweep.spec.objective.goal)
        if new.phase != row.phase:
            if new.phase == "Failed":
                self._event(sweep, "Warning", "TrialFailed", f"trial {row.name} failed: {new.reason}: {new.message}")
            elif new.phase == "Succeeded":
                self._event(sweep, "Normal", "TrialSucceeded",
                            f"trial {row.name} succeeded with {sweep.spec.objective.metric} {_num(new.objective)}")
        return new

    def _early_stop(self, sweep: Sweep, status: SweepStatus) -> list[str]:
        rule = sweep.spec.early_stopping
        if rule is None:
            return []
        completed = [r.history for r in status.trials if r.phase == "Succeeded" and r.history]
        stopped = []
        for row in status.trials:
            if row.phase != "Running":
                continue
            verdict = median_stopping.should_stop(row.history, completed, sweep.spec.objective.goal,
                                                  rule.min_steps, rule.min_trials)
            if verdict is not None:
                row.phase, row.reason, row.message = "Stopped", "EarlyStopped", verdict.message
                stopped.append(row.name)
                self._event(sweep, "Normal", "TrialStopped", f"stopped trial {row.name}: {verdict.message}")
        return stopped

    def _enforce_failure_limit(self, sweep: Sweep, status: SweepStatus, now: datetime,
                               to_delete: list[str]) -> bool:
        """Fail the sweep (stopping its unfinished trials) once more trials failed than it tolerates."""
        failed = [r for r in status.trials if r.phase == "Failed"]
        limit = sweep.spec.max_failed_trials
        if len(failed) <= limit:
            return False
        for row in status.trials:
            if not row.done:
                row.phase, row.reason, row.message = "Stopped", "SweepFailed", "the sweep failed"
                to_delete.append(row.name)
        first = failed[0]
        self._fail(sweep, status, now, "MaxFailedTrialsExceeded",
                   f"{len(failed)} trial(s) failed, more than maxFailedTrials ({limit}); first: {first.name}: "
                   f"{first.message or first.reason}")
        return True

    def _create_trials(self, sweep: Sweep, status: SweepStatus, owned: dict[str, TrainingJob],
                       stale: set[str], now: datetime) -> None:
        """Create trials while fewer than `parallelism` are unfinished, in index order."""
        # A TrainingJob still being deleted counts: its processes may still run.
        active = sum(1 for job in owned.values() if not job.finished)
        while len(status.trials) < sweep.total_trials and active < sweep.spec.parallelism:
            index = len(status.trials)
            name = sweep.trial_name(index)
            parameters = assignment(sweep.spec, index)
            row = TrialStatus(name=name, parameters=parameters)
            if name in stale:
                break  # an earlier Sweep's trial of that name is being removed (requeued while it is)
            if self._store.get("TrainingJob", sweep.metadata.namespace, name) is not None:
                row.phase, row.reason = "Failed", "NameTaken"
                row.message = f"a TrainingJob named {name} exists and does not belong to this sweep"
                self._event(sweep, "Warning", "TrialFailed", f"trial {name}: {row.message}")
            else:
                self._store.apply([trial_job(sweep, index, parameters, status.mlflow_run_id)])
                active += 1
                values = ", ".join(f"{k}={v}" for k, v in parameters.items())
                self._event(sweep, "Normal", "TrialCreated", f"created trial {name} with {values}")
            status.trials.append(row)
            if status.phase == "Pending":
                status.phase = "Running"
                status.start_time = status.start_time or now
                status.conditions = set_condition(status.conditions, Condition(
                    type="Running", status="True", reason="TrialsRunning",
                    message=f"running up to {sweep.spec.parallelism} of {sweep.total_trials} trial(s) at a time"), now)

    def _finish(self, sweep: Sweep, status: SweepStatus, owned: dict[str, TrainingJob], now: datetime) -> bool:
        """Once every trial has finished: pick the best, register it, succeed. False: retry registering later."""
        if len(status.trials) < sweep.total_trials or not all(r.done for r in status.trials):
            return True
        if any(not job.finished for job in owned.values()):
            return True  # stopped trials are still shutting down
        best = best_trial(status.trials, sweep.spec.objective.goal)
        metric = sweep.spec.objective.metric
        if best is None:
            succeeded = [r for r in status.trials if r.phase == "Succeeded"]
            if succeeded:
                self._fail(sweep, status, now, "ObjectiveNotReported",
                           f"none of the {len(succeeded)} succeeded trial(s) reported {metric} in its progress lines")
            else:
                self._fail(sweep, status, now, "NoTrialSucceeded", "every trial failed or was stopped")
            return True
        if sweep.spec.registration is not None and status.registered_model is None:
            registered = self._register(sweep, status, best, owned.get(best.name), now)
            if registered is None:
                return True  # refused for good: the sweep failed
            if not registered:
                return False
        status.phase = "Succeeded"
        status.completion_time = now
        values = ", ".join(f"{k}={v}" for k, v in best.parameters.items())
        message = f"best trial {best.name} ({metric} {_num(best.objective)}) with {values}"
        status.conditions = set_condition(status.conditions, Condition(
            type="Running", status="False", reason="Completed", message="every trial finished"), now)
        status.conditions = set_condition(status.conditions, Condition(
            type="Succeeded", status="True", reason="BestTrialFound", message=message), now)
        self._event(sweep, "Normal", "Succeeded", message)
        return True

    def _register(self, sweep: Sweep, status: SweepStatus, best: TrialStatus, job: TrainingJob | None,
                  now: datetime) -> bool | None:
        """Register the best trial's files. True when done (or impossible: no tracker), False to retry later,
        None when the tracker refused (the sweep has failed, saying why)."""
        reg = sweep.spec.registration
        assert reg is not None
        if self._tracker is None:
            status.conditions = set_condition(status.conditions, Condition(
                type="Registered", status="False", reason="TrackingDisabled",
                message=f"no tracking server: model {reg.model} was not registered"), now)
            self._event(sweep, "Warning", "RegistrationSkipped", f"no tracking server to register {reg.model} in")
            return True
        if best.mlflow_run_id is None and _run_to_come(job):
            # Its run is still to be made (the tracker answered late): a version must point at it, as it would
            # had the tracker answered early. A trial whose run can no longer come is registered without one.
            status.conditions = set_condition(status.conditions, Condition(
                type="Registered", status="False", reason="RegistrationPending",
                message=f"registering {reg.model} once trial {best.name}'s MLflow run exists (waiting for the "
                        "tracking server)"), now)
            return False
        path = sweep.spec.register_path(best.name, sweep.metadata.name, best.parameters)
        aliases = (reg.alias,) if reg.alias else ()
        try:
            # A version registered for this very run before a crash (between registering and writing status)
            # is reused, not duplicated. Without a run id nothing tells it from an earlier sweep's version.
            version = None if best.mlflow_run_id is None else next(
                (m for m in self._tracker.list_models() if m.run_id == best.mlflow_run_id
                 and (m.name, m.volume, m.path) == (reg.model, reg.volume, path) and set(aliases) <= set(m.aliases)),
                None)
            if version is None:
                # The project is given, not read from the run's tags: the files are on this sweep's volume.
                version = self._tracker.register_model(reg.model, best.mlflow_run_id, reg.volume, path, aliases,
                                                       project=sweep.metadata.namespace)
        except TrackingRejected as exc:
            message = f"the tracking server refused to register {reg.model}: {exc}"
            status.conditions = set_condition(status.conditions, Condition(
                type="Registered", status="False", reason="RegistrationFailed", message=message), now)
            self._fail(sweep, status, now, "RegistrationFailed", message)
            return None
        except TrackingError as exc:
            status.conditions = set_condition(status.conditions, Condition(
                type="Registered", status="False", reason="RegistrationPending",
                message=f"registering {reg.model} failed, retrying: {exc}"), now)
            return False
        status.registered_model = RegisteredModel(name=version.name, version=version.version)
        alias = f" (alias {reg.alias})" if reg.alias else ""
        message = f"registered {best.name}'s {reg.volume}:{path} as {version.name} version {version.version}{alias}"
        status.conditions = set_condition(status.conditions, Condition(
            type="Registered", status="True", reason="Registered", message=message), now)
        self._event(sweep, "Normal", "Registered", message)
        return True

    def _fail(self, sweep: Sweep, status: SweepStatus, now: datetime, reason: str, message: str) -> None:
        status.phase = "Failed"
        status.completion_time = now
        status.conditions = set_condition(status.conditions, Condition(
            type="Running", status="False", reason=reason, message=message), now)
        status.conditions = set_condition(status.conditions, Condition(
            type="Failed", status="True", reason=reason, message=message), now)
        self._event(sweep, "Warning", "Failed", message)

    def _summarise(self, sweep: Sweep, status: SweepStatus) -> None:
        count = {phase: sum(1 for r in status.trials if r.phase == phase)
                 for phase in ("Succeeded", "Failed", "Stopped", "Running")}
        status.trials_succeeded, status.trials_failed = count["Succeeded"], count["Failed"]
        status.trials_stopped, status.trials_running = count["Stopped"], count["Running"]
        best = best_trial(status.trials, sweep.spec.objective.goal)
        previous = status.best_trial
        status.best_trial = None if best is None or best.objective is None else BestTrial(
            name=best.name, parameters=best.parameters, objective=best.objective)
        if status.best_trial is not None and status.best_trial != previous and status.mlflow_run_id:
            self._log_best(sweep, status)

    # --- tracking ------------------------------------------------------------------------------------

    def _ensure_run(self, sweep: Sweep, status: SweepStatus) -> bool:
        if self._tracker is None:
            return True
        ns, name = sweep.metadata.namespace, sweep.metadata.name
        try:
            status.mlflow_run_id = self._tracker.ensure_run(
                key=f"Sweep/{ns}/{name}/{sweep.metadata.uid}", experiment=ns, run_name=name,
                params=summary(sweep.spec),
                tags={"shipyard.kind": "Sweep", "shipyard.project": ns, "shipyard.name": name,
                      "shipyard.uid": sweep.metadata.uid or ""})
        except TrackingError:
            return False
        if status.best_trial is not None:
            self._log_best(sweep, status)  # made late: the best so far, which an early run would have had
        return True

    @staticmethod
    def _tracked(status: SweepStatus) -> bool:
        tracked = status.condition("Tracked")
        return tracked is not None and tracked.status == "True"

    def _link_trial_runs(self, status: SweepStatus, owned: dict[str, TrainingJob]) -> bool:
        """Nest each trial's run under the sweep's and record it in the trial's row. True once every trial
        whose run exists or is still to come has its row's run id (then the sweep's run may end)."""
        if self._tracker is None or self._tracked(status):
            return True
        complete = True
        for row in status.trials:
            job = owned.get(row.name)
            if row.mlflow_run_id is not None or not _run_to_come(job):
                continue
            assert job is not None
            run_id = job.status.mlflow_run_id
            if run_id is None or status.mlflow_run_id is None:
                complete = False  # the TrainingJob controller, or this one, has not reached the tracker yet
                continue
            try:
                self._tracker.set_parent(run_id, status.mlflow_run_id)
            except TrackingRejected as exc:
                # Its run is gone (deleted in MLflow): nothing to nest; the row still says which run it was.
                log.warning("cannot nest trial %s's run %s under sweep run %s: %s", row.name, run_id,
                            status.mlflow_run_id, exc)
            except TrackingError:
                return False  # down again: the next pass goes on where this one stopped
            row.mlflow_run_id = run_id
        return complete

    def _annotate_parent_run(self, sweep: Sweep, status: SweepStatus, owned: dict[str, TrainingJob]) -> None:
        """Trials created while the tracker was unreachable learn their parent run once it exists."""
        run_id = status.mlflow_run_id
        if run_id is None:
            return
        for job in owned.values():
            if job.finished or job.metadata.deletion_timestamp is not None:
                continue
            if job.metadata.annotations.get(PARENT_RUN_ANNOTATION) != run_id:
                updated = job.model_copy(deep=True)
                updated.metadata.annotations[PARENT_RUN_ANNOTATION] = run_id
                self._store.apply([updated])

    def _log_best(self, sweep: Sweep, status: SweepStatus) -> None:
        assert self._tracker is not None and status.mlflow_run_id and status.best_trial is not None
        done = sum(1 for r in status.trials if r.done)
        metric = Metric(key=f"best_{sweep.spec.objective.metric}", value=status.best_trial.objective, step=done,
                        timestamp_ms=int(self._clock.now().timestamp() * 1000))
        try:
            self._tracker.log_metrics(status.mlflow_run_id, [metric])
        except TrackingError:
            pass  # one point of a summary curve: not worth holding anything back for

    def _terminate_run(self, status: SweepStatus, now: datetime, linked: bool) -> bool:
        """End the sweep's run once it has finished and its trials' runs are nested under it (recorded as
        condition Tracked); False: retry later."""
        if self._tracker is None or self._tracked(status):
            return True
        if status.mlflow_run_id is None or not linked:
            return False
        outcome: Literal["FINISHED", "FAILED"] = "FINISHED" if status.phase == "Succeeded" else "FAILED"
        try:
            self._tracker.set_terminated(status.mlflow_run_id, outcome)
        except TrackingError:
            return False
        status.conditions = set_condition(status.conditions, Condition(
            type="Tracked", status="True", reason="RunTerminated",
            message=f"MLflow run ended as {outcome}, every trial's run nested under it"), now)
        return True

    # --- deletion ------------------------------------------------------------------------------------

    def _finalize(self, sweep: Sweep) -> Result:
        """Deleting a Sweep deletes its trials and waits until they are gone (their processes stopped)."""
        owned, stale = self._trials(sweep)
        remaining = list(owned.values()) + stale
        for job in remaining:
            if job.metadata.deletion_timestamp is None:
                self._store.delete("TrainingJob", job.metadata.namespace, job.metadata.name)
        if any(self._store.get("TrainingJob", j.metadata.namespace, j.metadata.name) is not None for j in remaining):
            return Result(requeue_after=WAITING_RESYNC)
        if self._tracker is not None and sweep.status.mlflow_run_id and not sweep.finished:
            try:
                self._tracker.set_terminated(sweep.status.mlflow_run_id, "KILLED")
            except TrackingError:
                pass  # the sweep is going away: nobody is left to retry for
        return release(self._store, sweep)

    def _delete_orphans(self, namespace: str, name: str) -> None:
        """Trials whose Sweep vanished without its finalizer running (deleted before its first reconcile)."""
        for job in self._store.list("TrainingJob", namespace, Selector.equal({SWEEP_LABEL: name})):
            if job.metadata.deletion_timestamp is None and any(
                    ref.kind == self.kind and ref.name == name for ref in job.metadata.owner_references):
                self._store.delete("TrainingJob", namespace, job.metadata.name)

    # --- writing -------------------------------------------------------------------------------------

    def _write_status(self, sweep: Sweep, status: SweepStatus) -> None:
        if status.to_wire() == sweep.status.to_wire():
            return
        self._store.update_status(sweep.model_copy(update={"status": status}))

    def _event(self, sweep: Sweep, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self._store.record_event(sweep, type_, reason, message)


def _run_to_come(job: TrainingJob | None) -> bool:
    """Whether the trial's TrainingJob has, or will have, an MLflow run: the TrainingJob controller marks a job
    tracked (status.tracking) on its first pass with a tracker, and makes the run once the tracker answers."""
    return job is not None and (job.status.mlflow_run_id is not None or job.status.tracking is not None)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
