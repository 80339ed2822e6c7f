"""A tracker that answers only after a sweep's trials finished must leave what an early one leaves: the real
Sweep and TrainingJob controllers over SQLite, a fake runtime and the in-memory FakeTracker (down, then up)."""

from __future__ import annotations

import pytest

from shipyard.controllers.clock import FakeClock
from shipyard.controllers.manager import ObjectKey
from shipyard.controllers.sweep import PARENT_RUN_ANNOTATION, SweepController
from shipyard.controllers.tracking import FakeTracker
from shipyard.controllers.trainingjob import TrainingJobController
from shipyard.controllers.trainingjob.run_tracking import RETRY_SECONDS
from shipyard.resources import Sweep
from shipyard.runtime.fake import FakeRuntime
from shipyard.store.sqlite import SQLiteStore

SWEEP = ObjectKey("Sweep", "default", "fast")
SCORES = {"fast-0": 0.3, "fast-1": 0.9, "fast-2": 0.5}
STEPS = 5


def make_sweep(**spec) -> Sweep:
    base = {"parameters": [{"name": "q", "type": "categorical", "values": ["a", "b", "c"]}],
            "objective": {"metric": "score", "goal": "maximize"},
            "parallelism": 3,
            "trial": {"command": ["python", "train.py", "${q}"], "volumes": [{"name": "data", "mountPath": "/data"}]},
            "register": {"model": "fast", "volume": "data", "path": "/${trial}", "alias": "champion"}}
    base.update(spec)
    return Sweep.model_validate({"metadata": {"name": "fast"}, "spec": base})


class World:
    def __init__(self, tmp_path):
        self.store = SQLiteStore(tmp_path / "db")
        self.runtime, self.clock, self.tracker = FakeRuntime(), FakeClock(), FakeTracker()
        self.sweeps = SweepController(self.store, self.tracker, self.clock)
        self.jobs = TrainingJobController(self.store, self.runtime, self.clock, tracker=self.tracker)

    def sweep(self) -> Sweep:
        return self.store.get("Sweep", "default", "fast")

    def job(self, name):
        return self.store.get("TrainingJob", "default", name)

    def run_trial(self, name: str) -> None:
        """Play a trial to its end as the local runtime would: pods, progress lines, the Job complete."""
        key = ObjectKey("TrainingJob", "default", name)
        self.jobs.reconcile(key)
        self.runtime.add_pods("default", name, "Running")
        pod = next(k[2] for k in self.runtime.objects if k[0] == "Pod" and k[2].startswith(f"{name}-0-"))
        self.runtime.logs[("default", pod)] = b"".join(
            b'SHIPYARD_PROGRESS {"step": %d, "loss": %g, "score": %g}\n' % (s, 1 - s / STEPS, SCORES[name] * s / STEPS)
            for s in range(1, STEPS + 1))
        self.jobs.reconcile(key)
        self.runtime.set_job_condition("default", name, "Complete")
        self.jobs.reconcile(key)
        assert self.job(name).status.phase == "Succeeded"

    def catch_up_jobs(self) -> None:
        for name in SCORES:
            self.jobs.reconcile(ObjectKey("TrainingJob", "default", name))


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.store.close()


def trial_runs(tracker):
    return {r["name"]: (run_id, r) for run_id, r in tracker.runs.items()
            if r["tags"].get("shipyard.kind") == "TrainingJob"}


def test_trials_that_finish_before_the_tracker_answers_are_tracked_and_registered_as_if_it_had(world):
    world.tracker.fail = True
    world.store.apply([make_sweep()])
    world.sweeps.reconcile(SWEEP)
    for name in SCORES:
        world.run_trial(name)
        assert PARENT_RUN_ANNOTATION not in world.job(name).metadata.annotations
    world.sweeps.reconcile(SWEEP)
    status = world.sweep().status
    assert status.phase == "Running" and status.best_trial.name == "fast-1"
    assert status.condition("Registered").reason == "RegistrationPending"

    world.tracker.fail = False  # the tracking server answers at last
    world.clock.advance(RETRY_SECONDS)
    world.sweeps.reconcile(SWEEP)  # the sweep gets there first: its run, but no trial run to register yet
    status = world.sweep().status
    parent = status.mlflow_run_id
    assert parent and status.phase == "Running" and world.tracker.models == []
    registered = status.condition("Registered")
    assert registered.reason == "RegistrationPending" and "fast-1's MLflow run" in registered.message

    world.catch_up_jobs()  # the TrainingJob controller makes the trials' runs, without a parent, full histories
    runs = trial_runs(world.tracker)
    assert sorted(runs) == sorted(SCORES) and all(r["parent"] is None for _, r in runs.values())
    world.sweeps.reconcile(SWEEP)
    status = world.sweep().status
    assert status.phase == "Succeeded", status.conditions
    for name, (run_id, run) in trial_runs(world.tracker).items():
        assert run["parent"] == parent and status.trial(name).mlflow_run_id == run_id
        assert [m.step for m in run["metrics"] if m.key == "score"] == list(range(1, STEPS + 1))
        assert run["status"] == "FINISHED"
    [model] = world.tracker.models
    assert (model.run_id, model.project, model.path, model.aliases) == \
        (runs["fast-1"][0], "default", "/fast-1", ("champion",))
    assert world.tracker.runs[parent]["status"] == "FINISHED" and status.condition("Tracked").status == "True"
    assert [m.value for m in world.tracker.runs[parent]["metrics"] if m.key == "best_score"] == [0.9]


def test_a_sweep_that_finished_unregistered_while_the_tracker_was_down_is_tracked_later(world):
    world.tracker.fail = True
    world.store.apply([make_sweep(register=None)])
    world.sweeps.reconcile(SWEEP)
    for name in SCORES:
        world.run_trial(name)
    assert world.sweeps.reconcile(SWEEP).requeue_after is not None  # done, but its run is still to be made
    assert world.sweep().status.phase == "Succeeded" and world.sweep().status.mlflow_run_id is None

    world.tracker.fail = False
    world.clock.advance(RETRY_SECONDS)
    world.catch_up_jobs()  # this time the trials' runs come first
    world.sweeps.reconcile(SWEEP)
    status = world.sweep().status
    assert status.mlflow_run_id and status.condition("Tracked").status == "True"
    assert {r["parent"] for _, r in trial_runs(world.tracker).values()} == {status.mlflow_run_id}
    assert world.tracker.runs[status.mlflow_run_id]["status"] == "FINISHED"
    assert world.sweeps.reconcile(SWEEP).requeue_after is None  # nothing left to catch up


def test_a_registration_the_tracker_refuses_ends_the_sweep_saying_why(world):
    world.tracker.refuse = {"register_model"}
    world.store.apply([make_sweep()])
    world.sweeps.reconcile(SWEEP)
    for name in SCORES:
        world.run_trial(name)
    world.sweeps.reconcile(SWEEP)
    status = world.sweep().status
    assert status.phase == "Failed" and status.condition("Failed").reason == "RegistrationFailed"
    assert "refused to register fast" in status.condition("Registered").message
    assert status.best_trial.name == "fast-1"  # the result is kept: it can be registered by hand
    assert world.tracker.runs[status.mlflow_run_id]["status"] == "FAILED"


def test_a_best_trial_whose_run_can_no_longer_come_is_registered_without_one(world):
    world.tracker.fail = True
    world.store.apply([make_sweep()])
    world.sweeps.reconcile(SWEEP)
    for name in SCORES:
        world.run_trial(name)
    world.sweeps.reconcile(SWEEP)
    # Its TrainingJob is gone before the tracker answered (deleted by hand; a TTL does the same).
    job = world.job("fast-1")
    job.metadata.finalizers = []
    world.store.update_metadata(job)
    world.store.delete("TrainingJob", "default", "fast-1")
    world.tracker.fail = False
    world.sweeps.reconcile(SWEEP)
    status = world.sweep().status
    assert status.phase == "Succeeded", status.conditions
    [model] = world.tracker.models
    assert (model.run_id, model.project, model.path) == (None, "default", "/fast-1")
