"""The real MLflow tracking server (started by shipyard.tracking.server) and MlflowTracker, checked with MLflow's
own client. One server for the module: it takes 8–16 s to start on a small machine."""

from __future__ import annotations

import importlib.metadata
import json
import os
import time
import urllib.request

import pytest

pytest.importorskip("mlflow")
try:
    importlib.metadata.version("mlflow")  # the server needs the full package, not only mlflow-skinny
except importlib.metadata.PackageNotFoundError:
    pytest.skip("the full mlflow package is not installed", allow_module_level=True)

from mlflow.tracking import MlflowClient  # noqa: E402

from shipyard.controllers.clock import FakeClock  # noqa: E402
from shipyard.controllers.manager import ObjectKey  # noqa: E402
from shipyard.controllers.tracking import Metric, TrackingError, TrackingRejected  # noqa: E402
from shipyard.controllers.trainingjob import TrainingJobController  # noqa: E402
from shipyard.resources import TrainingJob  # noqa: E402
from shipyard.runtime.fake import FakeRuntime  # noqa: E402
from shipyard.store.sqlite import SQLiteStore  # noqa: E402
from shipyard.tracking import MlflowTracker, TrackingServer  # noqa: E402
from shipyard.tracking.server import free_port, healthy  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    srv = TrackingServer(home / "mlflow")
    srv.prepare()
    started = time.monotonic()
    srv.start()
    try:
        assert srv.wait_ready(180), f"not ready: {srv.log_file.read_text()[-2000:]}"
        print(f"\nMLflow server ready after {time.monotonic() - started:.1f}s")
        yield srv, home
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def tracker(server):
    srv, home = server
    return MlflowTracker(srv.url, lambda project, volume, path: home / "volumes" / project / volume / path.lstrip("/"))


@pytest.fixture(scope="module")
def client(server):
    return MlflowClient(tracking_uri=server[0].url, registry_uri=server[0].url)


def test_runs_are_idempotent_by_key_nested_and_tagged(tracker, client):
    parent = tracker.ensure_run("Sweep/default/lr/uid-1", "default", "lr", {"algorithm": "grid"},
                                {"shipyard.kind": "Sweep"})
    child = tracker.ensure_run("TrainingJob/default/lr-0/uid-2", "default", "lr-0",
                               {"lr": "0.001", "spec.replicas": "1"},
                               {"shipyard.kind": "TrainingJob", "shipyard.restarts": "0"}, parent_run_id=parent)
    assert tracker.ensure_run("TrainingJob/default/lr-0/uid-2", "default", "lr-0", {"lr": "0.001"}, {}) == child
    run = client.get_run(child)
    assert run.data.params == {"lr": "0.001", "spec.replicas": "1"}
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["shipyard.key"].endswith("uid-2")
    assert run.info.run_name == "lr-0"
    experiment = client.get_experiment_by_name("shipyard/default")  # not next to MLflow's own "Default"
    assert experiment.tags["shipyard.project"] == "default" and client.get_experiment_by_name("default") is None
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert [r.info.run_id for r in children] == [child]
    # A run made before its parent existed (a tracker that answered late) is nested afterwards.
    orphan = tracker.ensure_run("TrainingJob/default/lr-1/uid-5", "default", "lr-1", {}, {})
    tracker.set_parent(orphan, parent)
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.info.run_id for r in children) == sorted([child, orphan])
    with pytest.raises(TrackingRejected):
        tracker.set_parent("0" * 32, parent)  # no such run: retrying will not help
    tracker.set_tags(child, {"shipyard.restarts": "2"})
    assert client.get_run(child).data.tags["shipyard.restarts"] == "2"


def test_experiments_an_earlier_shipyard_named_after_the_bare_project_are_renamed_not_forked(server, client):
    srv, _ = server
    # As an earlier Shipyard left them: experiment "legacy" with a job's run; a user's own "notours".
    legacy_id = client.create_experiment("legacy")
    old = client.create_run(legacy_id, tags={"shipyard.key": "TrainingJob/legacy/old/uid-9",
                                             "shipyard.project": "legacy"}, run_name="old")
    client.create_experiment("notours")
    fresh = MlflowTracker(srv.url)  # a new daemon's tracker: nothing cached
    run = fresh.ensure_run("TrainingJob/legacy/old/uid-9", "legacy", "old", {}, {})
    assert run == old.info.run_id  # found again by its key, not made twice
    renamed = client.get_experiment(legacy_id)
    assert renamed.name == "shipyard/legacy" and client.get_experiment_by_name("legacy") is None
    fresh.ensure_run("TrainingJob/notours/x/uid-10", "notours", "x", {}, {})
    assert client.get_experiment_by_name("notours") is not None  # a user's experiment is left alone
    assert client.get_experiment_by_name("shipyard/notours") is not None
    assert client.get_experiment_by_name("Default").experiment_id == "0"


def test_the_server_runs_without_telemetry(server):
    srv, _ = server
    pid = json.loads(srv.state_file.read_text())["pid"]
    environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    assert b"MLFLOW_DISABLE_TELEMETRY=true" in environ
    with urllib.request.urlopen(f"{srv.url}/ajax-api/3.0/mlflow/ui-telemetry", timeout=10) as reply:
        assert json.load(reply)["disable_ui_telemetry"] is True  # the UI neither asks nor sends


def test_metric_histories_in_batches_and_run_end(tracker, client):
    run = tracker.ensure_run("TrainingJob/default/hist/uid-3", "default", "hist", {}, {})
    metrics = [Metric("loss", 10.0 / (step + 1), step, 1_700_000_000_000 + step) for step in range(2500)]
    metrics += [Metric("eval/exact match!", 0.5, 100, 1_700_000_000_100)]
    tracker.log_metrics(run, metrics)  # 2501 points: three log_batch calls
    history = client.get_metric_history(run, "loss")
    assert len(history) == 2500 and sorted(m.step for m in history) == list(range(2500))
    assert [m.value for m in client.get_metric_history(run, "eval/exact match_")] == [0.5]
    tracker.set_terminated(run, "FINISHED")
    assert client.get_run(run).info.status == "FINISHED"


def test_model_registry_versions_aliases_and_volumes(tracker, client, server):
    srv, home = server
    run = tracker.ensure_run("TrainingJob/team-a/ft/uid-4", "team-a", "ft", {}, {"shipyard.project": "team-a"})
    v1 = tracker.register_model("lifecycle-lora", run, "lifecycle", "/sweep/trial-0/merged", aliases=("champion",))
    assert (v1.version, v1.project, v1.aliases) == (1, "team-a", ("champion",))
    v2 = tracker.register_model("lifecycle-lora", None, "lifecycle", "/sweep/trial-3/merged",
                                aliases=("champion", "latest-good"), project="team-a")
    assert v2.version == 2
    by_alias = tracker.get_model_version("lifecycle-lora", "champion")
    assert (by_alias.version, by_alias.volume, by_alias.path, by_alias.project) == \
        (2, "lifecycle", "/sweep/trial-3/merged", "team-a")
    assert tracker.get_model_version("lifecycle-lora", "1").run_id == run
    official = client.get_model_version_by_alias("lifecycle-lora", "champion")
    assert official.version == "2" and official.source == "shipyard-volume://team-a/lifecycle/sweep/trial-3/merged"
    assert official.tags["shipyard.localUri"] == (home / "volumes/team-a/lifecycle/sweep/trial-3/merged").as_uri()
    listed = {(m.name, m.version): m for m in tracker.list_models()}
    assert set(listed[("lifecycle-lora", 2)].aliases) == {"champion", "latest-good"}
    assert listed[("lifecycle-lora", 1)].aliases == ()  # the alias moved
    with pytest.raises(TrackingError, match="no version or alias 'nope'"):
        tracker.get_model_version("lifecycle-lora", "nope")
    with pytest.raises(TrackingError):
        tracker.register_model("orphan", None, "v", "/p")  # whose volume? no run, no project


def test_a_training_job_is_tracked_end_to_end(tracker, client, tmp_path):
    store = SQLiteStore(tmp_path / "db")
    runtime, clock = FakeRuntime(), FakeClock()
    ctl = TrainingJobController(store, runtime, clock, tracker=tracker)
    key = ObjectKey("TrainingJob", "default", "e2e")
    store.apply([TrainingJob.model_validate({
        "metadata": {"name": "e2e", "annotations": {"shipyard.dev/sweep-parameters": json.dumps({"lr": 0.01})}},
        "spec": {"command": ["python", "train.py"], "args": ["--steps", "3"]}})])
    ctl.reconcile(key)
    runtime.add_pods("default", "e2e", "Running")
    pod = next(k[2] for k in runtime.objects if k[0] == "Pod")
    runtime.logs[("default", pod)] = b"".join(
        b'SHIPYARD_PROGRESS {"step": %d, "loss": %g, "tokens_per_second": 100}\n' % (s, 3.0 - s) for s in range(3))
    ctl.reconcile(key)
    runtime.set_job_condition("default", "e2e", "Complete")
    ctl.reconcile(key)
    run_id = store.get("TrainingJob", "default", "e2e").status.mlflow_run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["lr"] == "0.01"
    assert run.data.params["spec.args"] == "--steps 3" and run.data.tags["shipyard.name"] == "e2e"
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")] == [(0, 3.0), (1, 2.0), (2, 1.0)]
    store.close()


def test_a_server_that_is_not_there_fails_fast_with_tracking_error():
    down = MlflowTracker(f"http://127.0.0.1:{free_port('127.0.0.1')}")
    started = time.monotonic()
    with pytest.raises(TrackingError, match="unreachable"):
        down.ensure_run("k", "default", "n", {}, {})
    with pytest.raises(TrackingError, match="unreachable"):
        down.log_metrics("run", [Metric("loss", 1.0, 0, 0)])  # no second attempt while it is known down
    assert time.monotonic() - started < 5


def test_a_second_daemon_adopts_the_running_server_and_stopping_leaves_nothing(server):
    srv, home = server
    pid = json.loads(srv.state_file.read_text())["pid"]
    again = TrackingServer(home / "mlflow")
    assert again.prepare() == srv.url  # adopted, not a second server on the same database
    again.start()
    assert again.wait_ready(1)
    again.stop()
    assert not healthy(srv.url)
    assert not os.path.exists(f"/proc/{pid}") or b"mlflow" not in open(f"/proc/{pid}/cmdline", "rb").read()
    assert not srv.state_file.exists()
    with pytest.raises(TrackingError):
        MlflowTracker(srv.url).list_models()
