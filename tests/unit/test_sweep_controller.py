"""Sweep controller over SQLite and a fake clock; the test plays the TrainingJob controller by writing trials'
statuses, so every step of a sweep's life is checked without processes."""

import pytest

from shipyard.controllers.clock import FakeClock
from shipyard.controllers.manager import Manager, ObjectKey
from shipyard.controllers.sweep import FINALIZER, PARENT_RUN_ANNOTATION, SWEEP_LABEL, SweepController
from shipyard.controllers.sweep.substitute import trial_job
from shipyard.controllers.tracking import FakeTracker
from shipyard.resources import Sweep, TrainingJob
from shipyard.runtime.fake import FakeRuntime
from shipyard.store.sqlite import SQLiteStore

KEY = ObjectKey("Sweep", "default", "sw")
EXACT = "exact_match"


def make_sweep(**spec) -> Sweep:
    base = {
        "parameters": [{"name": "lr", "type": "categorical", "values": ["3e-3", "1e-2"]},
                       {"name": "r", "type": "categorical", "values": [4, 8]}],
        "objective": {"metric": EXACT, "goal": "maximize"},
        "parallelism": 2,
        "trial": {"command": ["python", "-m", "shipyard.workloads.finetune"],
                  "args": ["--lr", "${lr}", "--lora-r", "${r}", "--output-dir", "/lifecycle/sweep/${trial}"],
                  "volumes": [{"name": "lifecycle", "mountPath": "/lifecycle"}]},
        "register": {"model": "lifecycle", "volume": "lifecycle", "path": "/sweep/${trial}/merged",
                     "alias": "champion"},
    }
    base.update(spec)
    return Sweep.model_validate({"metadata": {"name": "sw"}, "spec": base})


@pytest.fixture
def world(tmp_path):
    store = SQLiteStore(tmp_path / "db")
    clock = FakeClock()
    tracker = FakeTracker()
    yield store, clock, tracker, SweepController(store, tracker, clock)
    store.close()


def sweep_of(store) -> Sweep:
    return store.get("Sweep", "default", "sw")


def trials(store) -> dict[str, TrainingJob]:
    return {j.metadata.name: j for j in store.list("TrainingJob", "default")
            if j.metadata.labels.get(SWEEP_LABEL) == "sw"}


def unfinished(store) -> int:
    return sum(1 for j in trials(store).values() if not j.finished)


def play(store, name, phase, step=None, value=None, **status):
    """Write a trial's status as the TrainingJob controller would."""
    job = store.get("TrainingJob", "default", name)
    wire = {"phase": phase, **status}
    if step is not None:
        wire["progress"] = {"step": step, "totalSteps": 180, "loss": 1.0,
                            "metrics": {} if value is None else {EXACT: value}}
    store.update_status(job.model_copy(update={"status": type(job.status).model_validate(wire)}))


def run_curve(store, ctl, name, curve, phase_after="Succeeded"):
    """Report a learning curve step by step, reconciling the sweep after each report."""
    for step, value in curve:
        play(store, name, "Running", step, value)
        ctl.reconcile(KEY)
    if phase_after == "Succeeded":
        play(store, name, "Succeeded", *curve[-1])
        ctl.reconcile(KEY)


def reasons(store):
    return [e.reason for e in store.list_events("Sweep", "default", "sw")]


def curve(final):
    return [(0, 0.0), (60, round(final / 2, 4)), (120, round(final * 0.8, 4)), (180, final)]


def test_grid_runs_two_at_a_time_picks_the_best_and_registers_it(world):
    store, clock, tracker, ctl = world
    store.apply([make_sweep()])
    ctl.reconcile(KEY)
    sweep = sweep_of(store)
    assert FINALIZER in sweep.metadata.finalizers
    assert sweep.status.phase == "Running" and sweep.status.start_time == clock.now()
    assert sorted(trials(store)) == ["sw-0", "sw-1"]
    assert [(t.name, t.phase, t.parameters) for t in sweep.status.trials] == [
        ("sw-0", "Pending", {"lr": "3e-3", "r": "4"}), ("sw-1", "Pending", {"lr": "3e-3", "r": "8"})]
    job = trials(store)["sw-0"]
    assert job.spec.args == ["--lr", "3e-3", "--lora-r", "4", "--output-dir", "/lifecycle/sweep/sw-0"]
    [owner] = job.metadata.owner_references
    assert (owner.kind, owner.uid) == ("Sweep", sweep.metadata.uid)
    run_id = sweep.status.mlflow_run_id
    assert run_id and job.metadata.annotations[PARENT_RUN_ANNOTATION] == run_id
    run = tracker.runs[run_id]
    assert run["key"] == f"Sweep/default/sw/{sweep.metadata.uid}" and run["experiment"] == "default"
    assert run["params"]["param.lr"] == "categorical[3e-3, 1e-2]" and run["tags"]["shipyard.kind"] == "Sweep"

    finals = {"sw-0": 0.5, "sw-1": 0.9, "sw-2": 0.7, "sw-3": 0.6}
    most, order = 0, []
    while not sweep_of(store).finished:
        # Play the oldest unfinished trial to the end, checking the count after every reconcile.
        name = min(n for n, j in trials(store).items() if not j.finished)
        order.append(name)
        for step, value in curve(finals[name]):
            play(store, name, "Running", step, value)
            ctl.reconcile(KEY)
            most = max(most, unfinished(store))
        play(store, name, "Succeeded", 180, finals[name])
        ctl.reconcile(KEY)
        most = max(most, unfinished(store))
    assert most == 2 and order == ["sw-0", "sw-1", "sw-2", "sw-3"]

    sweep = sweep_of(store)
    status = sweep.status
    assert status.phase == "Succeeded" and status.completion_time == clock.now()
    assert (status.trials_succeeded, status.trials_failed, status.trials_stopped, status.trials_running) == \
        (4, 0, 0, 0)
    assert status.best_trial.model_dump() == {"name": "sw-1", "parameters": {"lr": "3e-3", "r": "8"},
                                              "objective": 0.9}
    row = status.trial("sw-1")
    assert row.objective == 0.9 and row.best_objective == 0.9 and row.step == 180
    assert row.history == [(0, 0.0), (60, 0.45), (120, 0.72), (180, 0.9)]
    [model] = tracker.models
    assert (model.name, model.version, model.volume, model.path, model.aliases) == \
        ("lifecycle", 1, "lifecycle", "/sweep/sw-1/merged", ("champion",))
    assert model.run_id == getattr(trials(store)["sw-1"].status, "mlflow_run_id", None)
    assert status.registered_model.model_dump() == {"name": "lifecycle", "version": 1}
    assert status.condition("Registered").status == "True"
    assert status.condition("Succeeded").message == "best trial sw-1 (exact_match 0.9) with lr=3e-3, r=8"
    assert tracker.runs[run_id]["status"] == "FINISHED"
    assert [m.value for m in tracker.runs[run_id]["metrics"]][-1] == 0.9
    assert reasons(store).count("TrialCreated") == 4 and reasons(store)[-2:] == ["Registered", "Succeeded"]

    version = sweep.metadata.resource_version
    assert ctl.reconcile(KEY).requeue_after is None
    assert sweep_of(store).metadata.resource_version == version  # nothing changed: no write
    assert len(tracker.models) == 1


def test_failed_trials_are_tolerated_up_to_max_failed_trials(world):
    store, clock, tracker, ctl = world
    store.apply([make_sweep(maxFailedTrials=1)])
    ctl.reconcile(KEY)
    play(store, "sw-1", "Running", 10, 0.1)
    failed = [{"type": "Failed", "status": "True", "reason": "RestartLimitExceeded",
               "message": "replica 0 exited with code 1; giving up"}]
    play(store, "sw-0", "Failed", conditions=failed)
    ctl.reconcile(KEY)
    status = sweep_of(store).status
    assert status.phase == "Running" and status.trials_failed == 1
    assert (status.trial("sw-0").phase, status.trial("sw-0").reason) == ("Failed", "RestartLimitExceeded")
    assert "sw-2" in trials(store)  # the sweep goes on
    play(store, "sw-2", "Failed", conditions=failed)
    ctl.reconcile(KEY)
    status = sweep_of(store).status
    assert status.phase == "Failed" and status.trials_failed == 2
    cond = status.condition("Failed")
    assert cond.reason == "MaxFailedTrialsExceeded"
    assert "2 trial(s) failed, more than maxFailedTrials (1)" in cond.message and "exited with code 1" in cond.message
    assert (status.trial("sw-1").phase, status.trial("sw-1").reason) == ("Stopped", "SweepFailed")
    assert "sw-1" not in trials(store) and "sw-3" not in trials(store)  # running one stopped, no new ones
    assert "TrialFailed" in reasons(store) and reasons(store)[-1] == "Failed"
    assert tracker.runs[status.mlflow_run_id]["status"] == "FAILED"
    ctl.reconcile(KEY)
    assert "sw-3" not in trials(store)


def test_first_failure_fails_the_sweep_by_default(world):
    store, clock, tracker, ctl = world
    store.apply([make_sweep(register=None)])
    ctl.reconcile(KEY)
    play(store, "sw-0", "Failed")
    ctl.reconcile(KEY)
    status = sweep_of(store).status
    assert status.phase == "Failed" and status.condition("Failed").reason == "MaxFailedTrialsExceeded"
    assert status.trial("sw-0").reason == "TrialFailed"


def test_median_rule_stops_a_clearly_bad_trial(world):
    store, clock, tracker, ctl = world
    store.apply([make_sweep(earlyStopping={"minSteps": 60, "minTrials": 2})])
    ctl.reconcile(KEY)
    run_curve(store, ctl, "sw-0", curve(0.8))
    run_curve(store, ctl, "sw-1", curve(0.9))
    assert sorted(n for n, j in trials(store).items() if not j.finished) == ["sw-2", "sw-3"]
    play(store, "sw-2", "Running", 0, 0.0)
    play(store, "sw-3", "Running", 0, 0.0)
    ctl.reconcile(KEY)
    assert sweep_of(store).status.trials_running == 2  # step 0 is below minSteps
    play(store, "sw-2", "Running", 60, 0.05)  # the others were at 0.4 and 0.45 by now
    play(store, "sw-3", "Running", 60, 0.5)
    ctl.reconcile(KEY)
    status = sweep_of(store).status
    row = status.trial("sw-2")
    assert (row.phase, row.reason, row.step, row.objective) == ("Stopped", "EarlyStopped", 60, 0.05)
    assert "median" in row.message
    assert "sw-2" not in trials(store)  # its TrainingJob was deleted (its finalizer stops the processes)
    assert status.trial("sw-3").phase == "Running" and status.trials_stopped == 1
    assert "TrialStopped" in reasons(store)
    run_curve(store, ctl, "sw-3", [(120, 0.8), (180, 0.95)])
    status = sweep_of(store).status
    assert status.phase == "Succeeded" and status.best_trial.name == "sw-3"
    assert (status.trials_succeeded, status.trials_stopped) == (3, 1)


def test_deleting_the_sweep_deletes_its_trials_and_waits_for_them(world):
    store, clock, tracker, ctl = world
    store.apply([make_sweep()])
    ctl.reconcile(KEY)
    job = trials(store)["sw-0"]
    job.metadata.finalizers.append("shipyard.dev/cleanup")  # as the TrainingJob controller does
    store.update_metadata(job)
    store.delete("Sweep", "default", "sw")
    ctl.reconcile(KEY)
    assert sweep_of(store) is not None  # sw-0 is still stopping
    assert trials(store)["sw-0"].metadata.deletion_timestamp is not None and "sw-1" not in trials(store)
    job = trials(store)["sw-0"]
    job.metadata.finalizers = []
    store.update_metadata(job)
    ctl.reconcile(KEY)
    assert sweep_of(store) is None and trials(store) == {}
    assert tracker.runs and next(iter(tracker.runs.values()))["status"] == "KILLED"


def test_a_restarted_controller_adopts_trials_instead_of_duplicating_them(world):
    store, clock, tracker, ctl = world
    store.apply([make_sweep()])
    ctl.reconcile(KEY)
    # As if the controller died after creating the trials but before writing their rows.
    sweep = sweep_of(store)
    store.update_status(sweep.model_copy(update={"status": type(sweep.status)()}))
    fresh = SweepController(store, tracker, clock)
    fresh.reconcile(KEY)
    status = sweep_of(store).status
    assert [t.name for t in status.trials] == ["sw-0", "sw-1"] and sorted(trials(store)) == ["sw-0", "sw-1"]
    assert status.trial("sw-1").parameters == {"lr": "3e-3", "r": "8"}
    assert len(tracker.runs) == 1  # the same parent run is found again
    assert reasons(store).count("TrialCreated") == 2
    for name in ["sw-0", "sw-1"]:
        run_curve(store, fresh, name, curve(0.5))
    assert sorted(trials(store)) == ["sw-0", "sw-1", "sw-2", "sw-3"]


def test_tracking_errors_never_fail_the_sweep(world):
    store, clock, tracker, ctl = world
    tracker.fail = True
    store.apply([make_sweep(parallelism=4)])
    result = ctl.reconcile(KEY)
    assert result.requeue_after is not None
    status = sweep_of(store).status
    assert status.mlflow_run_id is None and len(trials(store)) == 4
    assert all(PARENT_RUN_ANNOTATION not in j.metadata.annotations for j in trials(store).values())
    for name in ["sw-0", "sw-1", "sw-2"]:
        run_curve(store, ctl, name, curve(0.5))
    play(store, "sw-3", "Running", 60, 0.3)
    tracker.fail = False
    ctl.reconcile(KEY)
    run_id = sweep_of(store).status.mlflow_run_id
    # The trial still running learns its parent run; finished ones are left alone.
    assert trials(store)["sw-3"].metadata.annotations[PARENT_RUN_ANNOTATION] == run_id
    assert PARENT_RUN_ANNOTATION not in trials(store)["sw-0"].metadata.annotations
    tracker.fail = True
    run_curve(store, ctl, "sw-3", [(180, 0.6)])
    status = sweep_of(store).status
    assert status.phase == "Running"  # every trial done, but the best model is not registered yet
    cond = status.condition("Registered")
    assert (cond.status, cond.reason) == ("False", "RegistrationPending")
    assert ctl.reconcile(KEY).requeue_after == pytest.approx(10.0)
    tracker.fail = False
    clock.advance(10)
    ctl.reconcile(KEY)
    status = sweep_of(store).status
    assert status.phase == "Succeeded" and status.registered_model.version == 1
    assert tracker.models[0].path == "/sweep/sw-3/merged"
    assert tracker.runs[run_id]["status"] == "FINISHED"


def test_without_a_tracker_the_sweep_succeeds_unregistered(tmp_path):
    store = SQLiteStore(tmp_path / "db")
    ctl = SweepController(store, clock=FakeClock())
    store.apply([make_sweep(parallelism=4)])
    ctl.reconcile(KEY)
    for name in ["sw-0", "sw-1", "sw-2", "sw-3"]:
        run_curve(store, ctl, name, curve(0.5))
    status = sweep_of(store).status
    assert status.phase == "Succeeded" and status.best_trial.name == "sw-0"  # ties: the earliest
    assert status.condition("Registered").reason == "TrackingDisabled" and status.mlflow_run_id is None
    store.close()


def test_no_objective_reported_fails_with_a_reason(world):
    store, clock, tracker, ctl = world
    store.apply([make_sweep(parallelism=4, maxTrials=2)])
    ctl.reconcile(KEY)
    for name in ["sw-0", "sw-1"]:
        play(store, name, "Succeeded", 180)
    ctl.reconcile(KEY)
    status = sweep_of(store).status
    assert status.phase == "Failed" and status.condition("Failed").reason == "ObjectiveNotReported"
    assert tracker.models == []


def test_trials_of_an_earlier_sweep_of_the_same_name_are_replaced(world):
    store, clock, tracker, ctl = world
    old = make_sweep()
    old.metadata.uid = "an-earlier-uid"
    store.apply([trial_job(old, 0, {"lr": "1e-2", "r": "8"})])
    store.apply([make_sweep()])
    ctl.reconcile(KEY)
    assert "sw-0" not in trials(store)  # removed, not adopted; sw-0 waits until its name is free
    assert sorted(trials(store)) == []
    ctl.reconcile(KEY)
    jobs = trials(store)
    assert sorted(jobs) == ["sw-0", "sw-1"] and jobs["sw-0"].spec.args[1] == "3e-3"


def test_a_trial_store_change_wakes_its_sweep(tmp_path):
    store = SQLiteStore(tmp_path / "db")
    manager = Manager(store, FakeRuntime(), [SweepController(store, clock=FakeClock())], clock=FakeClock())
    store.apply([make_sweep()])
    assert manager.queue.get(timeout=0) == KEY
    manager.queue.done(KEY)
    sweep = sweep_of(store)
    store.apply([trial_job(sweep, 0, {"lr": "3e-3", "r": "4"})])
    assert manager.queue.get(timeout=0) == KEY
    store.close()


@pytest.mark.skipif("mlflow_run_id" not in TrainingJob.model_fields["status"].annotation.model_fields,
                    reason="TrainingJob status has no mlflowRunId")
def test_the_best_trials_run_is_registered_once_even_across_a_crash(world):
    store, clock, tracker, ctl = world
    store.apply([make_sweep(parallelism=4)])
    ctl.reconcile(KEY)
    for i, name in enumerate(["sw-0", "sw-1", "sw-2", "sw-3"]):
        play(store, name, "Succeeded", 180, [0.2, 0.4, 0.8, 0.6][i], mlflowRunId=f"trial-run-{i}")
    ctl.reconcile(KEY)
    status = sweep_of(store).status
    assert status.trial("sw-2").mlflow_run_id == "trial-run-2"
    assert [(m.run_id, m.version) for m in tracker.models] == [("trial-run-2", 1)]
    # As if the controller died after registering but before writing status: the version is found, not redone.
    sweep = sweep_of(store)
    lost = sweep.status.model_copy(update={"phase": "Running", "registered_model": None})
    store.update_status(sweep.model_copy(update={"status": lost}))
    SweepController(store, tracker, clock).reconcile(KEY)
    assert len(tracker.models) == 1 and sweep_of(store).status.registered_model.version == 1
