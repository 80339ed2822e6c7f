"""TrainingJob runs and metric histories, with the in-memory FakeTracker: no MLflow, no processes."""

from __future__ import annotations

import json

import pytest

from shipyard.controllers.clock import FakeClock
from shipyard.controllers.manager import ObjectKey
from shipyard.controllers.tracking import FakeTracker
from shipyard.controllers.trainingjob import TrainingJobController
from shipyard.controllers.trainingjob.run_tracking import RETRY_SECONDS, WARN_AFTER_SECONDS
from shipyard.resources import TrainingJob
from shipyard.runtime.fake import FakeRuntime
from shipyard.store.sqlite import SQLiteStore

KEY = ObjectKey("TrainingJob", "default", "llm")


def make_job(annotations=None, **spec):
    base = {"replicas": 2, "command": ["torchrun", "train.py"], "args": ["--lr", "3e-4", "--name", "a b"],
            "maxRestarts": 2, "backoffSeconds": 0, "resources": {"cpu": "1", "memory": "2Gi"},
            "volumes": [{"name": "ckpt", "mountPath": "/ckpt"}]}
    base.update(spec)
    return TrainingJob.model_validate({"metadata": {"name": "llm", "annotations": annotations or {}}, "spec": base})


@pytest.fixture
def world(tmp_path):
    store = SQLiteStore(tmp_path / "db")
    runtime, clock, tracker = FakeRuntime(), FakeClock(), FakeTracker()
    yield store, runtime, clock, tracker, TrainingJobController(store, runtime, clock, tracker=tracker)
    store.close()


def current(store):
    return store.get("TrainingJob", "default", "llm")


def progress(**fields) -> bytes:
    return b"SHIPYARD_PROGRESS " + json.dumps(fields).encode() + b"\n"


def rank0(runtime):
    return sorted((o["metadata"]["creationTimestamp"], k[2]) for k, o in runtime.objects.items()
                  if k[0] == "Pod" and k[2].startswith("llm-0-"))[-1][1]


def history(tracker, run_id, key="loss"):
    return [(m.step, m.value) for m in tracker.runs[run_id]["metrics"] if m.key == key]


def test_a_run_per_job_with_params_tags_and_its_id_in_status(world):
    store, runtime, clock, tracker, ctl = world
    store.apply([make_job(annotations={"shipyard.dev/sweep-parameters": json.dumps({"lr": 0.0003, "rank": 8}),
                                       "shipyard.dev/mlflow-parent-run-id": "parent123"})])
    ctl.reconcile(KEY)
    job = current(store)
    [(run_id, run)] = tracker.runs.items()
    assert job.status.mlflow_run_id == run_id and job.to_wire()["status"]["mlflowRunId"] == run_id
    assert run["key"] == f"TrainingJob/default/llm/{job.metadata.uid}"
    assert (run["experiment"], run["name"], run["parent"]) == ("default", "llm", "parent123")
    assert run["params"]["spec.command"] == "torchrun train.py"
    assert run["params"]["spec.args"] == "--lr 3e-4 --name 'a b'"
    assert run["params"]["spec.replicas"] == "2" and run["params"]["spec.resources.memory"] == "2Gi"
    assert run["params"]["spec.volumes"] == "ckpt:/ckpt"
    assert (run["params"]["lr"], run["params"]["rank"]) == ("0.0003", "8")  # the trial's, by their own names
    assert run["tags"] == {"shipyard.project": "default", "shipyard.kind": "TrainingJob", "shipyard.name": "llm",
                           "shipyard.uid": job.metadata.uid, "shipyard.restarts": "0"}
    ctl.reconcile(KEY)
    assert len(tracker.runs) == 1


def test_a_malformed_sweep_annotation_costs_nothing(world):
    store, runtime, clock, tracker, ctl = world
    store.apply([make_job(annotations={"shipyard.dev/sweep-parameters": "{not json"})])
    ctl.reconcile(KEY)
    [run] = tracker.runs.values()
    assert "spec.command" in run["params"] and current(store).status.mlflow_run_id


def test_every_progress_line_is_logged_once_in_order_and_the_run_ends_with_the_job(world):
    store, runtime, clock, tracker, ctl = world
    store.apply([make_job()])
    ctl.reconcile(KEY)
    runtime.add_pods("default", "llm", "Running")
    pod = rank0(runtime)
    runtime.logs[("default", pod)] = progress(step=1, loss=3.0, lr=0.1) + b"noise\n" + progress(step=2, loss=2.5)
    ctl.reconcile(KEY)
    run_id = current(store).status.mlflow_run_id
    assert history(tracker, run_id) == [(1, 3.0), (2, 2.5)]
    assert history(tracker, run_id, "lr") == [(1, 0.1)]
    assert current(store).status.progress.step == 2  # the tail-based progress is unchanged

    runtime.logs[("default", pod)] += progress(step=3, loss=2.0) + b'SHIPYARD_PROGRESS {"step": 4, "loss": '
    clock.advance(2)
    ctl.reconcile(KEY)
    ctl.reconcile(KEY)  # nothing new: nothing sent again
    assert history(tracker, run_id) == [(1, 3.0), (2, 2.5), (3, 2.0)]
    assert tracker.runs[run_id]["metrics"][-1].timestamp_ms == int(clock.now().timestamp() * 1000)

    runtime.logs[("default", pod)] += b'1.5, "eval_loss": 1.7}\n'
    runtime.set_job_condition("default", "llm", "Complete")
    ctl.reconcile(KEY)
    job = current(store)
    assert job.status.phase == "Succeeded" and job.status.tracking.run_ended
    assert history(tracker, run_id) == [(1, 3.0), (2, 2.5), (3, 2.0), (4, 1.5)]
    assert history(tracker, run_id, "eval_loss") == [(4, 1.7)]
    assert tracker.runs[run_id]["status"] == "FINISHED"


def test_a_restarted_controller_neither_resends_nor_skips(world, tmp_path):
    store, runtime, clock, tracker, ctl = world
    store.apply([make_job()])
    ctl.reconcile(KEY)
    runtime.add_pods("default", "llm", "Running")
    pod = rank0(runtime)
    runtime.logs[("default", pod)] = progress(step=1, loss=3.0)
    ctl.reconcile(KEY)
    runtime.logs[("default", pod)] += b"lots of other output\n" * 10  # advances only the in-memory offset
    ctl.reconcile(KEY)
    runtime.logs[("default", pod)] += progress(step=2, loss=2.0)

    restarted = TrainingJobController(store, runtime, clock, tracker=tracker)  # the daemon came back
    restarted.reconcile(KEY)
    run_id = current(store).status.mlflow_run_id
    assert len(tracker.runs) == 1
    assert history(tracker, run_id) == [(1, 3.0), (2, 2.0)]
    assert current(store).status.tracking.log_offsets == {pod: len(runtime.logs[("default", pod)])}


def test_a_gang_restart_sends_the_old_attempts_tail_then_the_new_one_and_tags_the_restart(world):
    store, runtime, clock, tracker, ctl = world
    store.apply([make_job()])
    ctl.reconcile(KEY)
    runtime.add_pods("default", "llm", "Running")
    old = rank0(runtime)
    runtime.logs[("default", old)] = progress(step=1, loss=3.0)
    ctl.reconcile(KEY)
    runtime.logs[("default", old)] += progress(step=2, loss=2.9)  # written just before replica 1 crashed
    runtime.set_job_condition("default", "llm", "Failed", "PodFailurePolicy")
    ctl.reconcile(KEY)  # restart recorded
    ctl.reconcile(KEY)  # old gang deleted (its pods go with it; the log stays)
    ctl.reconcile(KEY)  # attempt 2 created
    runtime.add_pods("default", "llm", "Running")
    new = rank0(runtime)
    assert new != old
    runtime.logs[("default", new)] = progress(step=2, loss=2.8)
    ctl.reconcile(KEY)
    run_id = current(store).status.mlflow_run_id
    assert history(tracker, run_id) == [(1, 3.0), (2, 2.9), (2, 2.8)]
    assert tracker.runs[run_id]["tags"]["shipyard.restarts"] == "1"
    assert len(tracker.runs) == 1


def test_a_failed_job_ends_its_run_failed(world):
    store, runtime, clock, tracker, ctl = world
    store.apply([make_job(maxRestarts=0)])
    ctl.reconcile(KEY)
    runtime.add_pods("default", "llm", exit_codes={0: 1})
    runtime.set_job_condition("default", "llm", "Failed", "PodFailurePolicy")
    ctl.reconcile(KEY)
    job = current(store)
    assert job.status.phase == "Failed" and tracker.runs[job.status.mlflow_run_id]["status"] == "FAILED"


def test_a_tracker_that_is_down_changes_nothing_for_the_job_and_is_retried_later(world):
    store, runtime, clock, tracker, ctl = world
    tracker.fail = True
    store.apply([make_job()])
    ctl.reconcile(KEY)
    runtime.add_pods("default", "llm", "Running")
    pod = rank0(runtime)
    runtime.logs[("default", pod)] = progress(step=1, loss=3.0)
    for _ in range(3):
        ctl.reconcile(KEY)
    job = current(store)
    assert job.status.phase == "Running" and job.status.progress.step == 1 and job.status.mlflow_run_id is None

    def warnings():
        return [e for e in store.list_events("TrainingJob", "default", "llm") if e.reason == "TrackingUnavailable"]

    assert warnings() == []  # a tracking server that is still starting is no news
    for _ in range(int(WARN_AFTER_SECONDS // RETRY_SECONDS) + 1):
        clock.advance(RETRY_SECONDS)
        ctl.reconcile(KEY)
        ctl.reconcile(KEY)
    [warning] = warnings()
    assert "tracking server unavailable" in warning.message and current(store).status.phase == "Running"

    tracker.fail = False
    ctl.reconcile(KEY)
    assert tracker.runs == {}  # within the retry period: not asked again yet
    clock.advance(RETRY_SECONDS)
    ctl.reconcile(KEY)
    run_id = current(store).status.mlflow_run_id
    assert history(tracker, run_id) == [(1, 3.0)]  # nothing lost while it was down


def test_a_job_that_finished_while_the_tracker_was_down_gets_its_run_completed(world):
    store, runtime, clock, tracker, ctl = world
    store.apply([make_job()])
    ctl.reconcile(KEY)
    runtime.add_pods("default", "llm", "Running")
    pod = rank0(runtime)
    tracker.fail = True
    runtime.logs[("default", pod)] = progress(step=1, loss=3.0) + progress(step=2, loss=2.0)
    runtime.set_job_condition("default", "llm", "Complete")
    ctl.reconcile(KEY)
    assert current(store).status.phase == "Succeeded"
    tracker.fail = False
    clock.advance(RETRY_SECONDS)
    result = ctl.reconcile(KEY)
    job = current(store)
    assert job.status.tracking.run_ended and result.requeue_after is None
    assert history(tracker, job.status.mlflow_run_id) == [(1, 3.0), (2, 2.0)]
    assert tracker.runs[job.status.mlflow_run_id]["status"] == "FINISHED"


def test_deleting_a_running_job_ends_its_run_killed(world):
    store, runtime, clock, tracker, ctl = world
    store.apply([make_job()])
    ctl.reconcile(KEY)
    run_id = current(store).status.mlflow_run_id
    store.delete("TrainingJob", "default", "llm")
    ctl.reconcile(KEY)
    assert current(store) is None and tracker.runs[run_id]["status"] == "KILLED"


def test_without_a_tracker_nothing_is_tracked(tmp_path):
    store = SQLiteStore(tmp_path / "db")
    ctl = TrainingJobController(store, FakeRuntime(), FakeClock())
    store.apply([make_job()])
    ctl.reconcile(KEY)
    status = current(store).status
    assert status.mlflow_run_id is None and status.tracking is None
    assert "mlflowRunId" not in current(store).to_wire()["status"]
    store.close()


def test_a_backlog_left_when_the_job_ends_is_sent_before_the_run_ends(world, monkeypatch):
    from shipyard.controllers.trainingjob import history as reader

    monkeypatch.setattr(reader, "MAX_READ_BYTES", 256)  # a few lines per read
    store, runtime, clock, tracker, ctl = world
    store.apply([make_job()])
    ctl.reconcile(KEY)
    runtime.add_pods("default", "llm", exit_codes={0: 0, 1: 0})
    runtime.logs[("default", rank0(runtime))] = b"".join(progress(step=s, loss=1.0 / (s + 1)) for s in range(100))
    runtime.set_job_condition("default", "llm", "Complete")
    ctl.reconcile(KEY)
    run_id = current(store).status.mlflow_run_id
    assert [s for s, _ in history(tracker, run_id)] == list(range(100))
    assert tracker.runs[run_id]["status"] == "FINISHED"
