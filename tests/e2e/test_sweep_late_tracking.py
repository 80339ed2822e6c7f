"""A fast sweep applied right after `shipyard up`, whose trials all finish before the tracking server answers,
ends exactly as if it had answered from the start: one parent run, a child run per trial with every progress
point, the best trial registered with its run, the Sweep Succeeded.

Deterministic, not lucky: the daemon is pointed (SHIPYARD_MLFLOW_TRACKING_URI) at a port where no server
listens, and the test starts an MLflow server on that port only once every trial has finished.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from shipyard.tracking import TrackingServer
from shipyard.tracking.server import free_port
from tests.conftest import wait_for
from tests.e2e.conftest import Shipyard

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
pytest.importorskip("mlflow")

TRIALS = 6
STEPS = 8
# About a second: python's start-up and eight progress lines.
SCRIPT = textwrap.dedent("""
    import json, sys
    q = float(sys.argv[1])
    for step in range(1, %d + 1):
        print("SHIPYARD_PROGRESS " + json.dumps({"step": step, "total_steps": %d, "loss": 1 - q * step / %d,
                                                   "score": q * step / %d}), flush=True)
""" % (STEPS, STEPS, STEPS, STEPS))
QUALITIES = ["0.1", "0.6", "0.3", "0.9", "0.2", "0.5"]


def test_a_sweep_that_finishes_before_the_tracking_server_answers_ends_as_if_it_had(tmp_path):
    from mlflow.tracking import MlflowClient

    port = free_port("127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    platform = Shipyard(tmp_path / "home", tracking=True)
    platform.env["SHIPYARD_MLFLOW_TRACKING_URI"] = url  # nothing listens there yet
    server = TrackingServer(tmp_path / "mlflow", port=port)
    platform.up()
    try:
        platform.run("apply", "-f", "-", input=json.dumps({
            "apiVersion": "shipyard.dev/v1alpha1", "kind": "Sweep", "metadata": {"name": "fast"}, "spec": {
                "parameters": [{"name": "q", "type": "categorical", "values": QUALITIES}],
                "algorithm": {"type": "grid"},
                "objective": {"metric": "score", "goal": "maximize"},
                "parallelism": TRIALS,
                "trial": {"command": ["python", "-c", SCRIPT, "${q}"], "maxRestarts": 0,
                          "resources": {"cpu": "100m"}, "volumes": [{"name": "data", "mountPath": "/data"}]},
                "register": {"model": "fast", "volume": "data", "path": "/${trial}", "alias": "champion"}}}))

        def sweep() -> dict:
            return platform.get("fast", "sweep").get("status", {})

        def all_trials_done() -> dict | bool:
            status = sweep()
            trials = status.get("trials", [])
            return len(trials) == TRIALS and all(t["phase"] == "Succeeded" for t in trials) and status

        status = wait_for(all_trials_done, timeout=300, interval=0.5, message="every trial to finish")
        # Nothing has reached the tracker: the sweep waits for it instead of registering a version without a run.
        assert status["phase"] == "Running" and status.get("mlflowRunId") is None, status
        registered = next(c for c in status["conditions"] if c["type"] == "Registered")
        assert registered["reason"] == "RegistrationPending"

        server.prepare()
        server.start()
        assert server.wait_ready(180), server.log_file.read_text()[-2000:]

        def tracked() -> dict | bool:
            status = sweep()
            return status.get("phase") in ("Succeeded", "Failed") and any(
                c["type"] == "Tracked" and c["status"] == "True" for c in status.get("conditions", [])) and status

        status = wait_for(tracked, timeout=300, interval=0.5, message="the sweep to finish and be tracked")
        assert status["phase"] == "Succeeded", status["conditions"]
        best = status["bestTrial"]
        assert best["parameters"]["q"] == "0.9" and status["registeredModel"] == {"name": "fast", "version": 1}

        client = MlflowClient(url, registry_uri=url)
        experiment = client.get_experiment_by_name("shipyard/default")
        parents = client.search_runs([experiment.experiment_id], "tags.`shipyard.kind` = 'Sweep'")
        assert [r.info.run_id for r in parents] == [status["mlflowRunId"]]
        children = client.search_runs([experiment.experiment_id],
                                      f"tags.mlflow.parentRunId = '{status['mlflowRunId']}'")
        assert sorted(r.info.run_name for r in children) == sorted(t["name"] for t in status["trials"])
        rows = {t["name"]: t for t in status["trials"]}
        for child in children:
            row = rows[child.info.run_name]
            assert row["mlflowRunId"] == child.info.run_id and child.data.params["q"] == row["parameters"]["q"]
            # Each run is ended after its whole history was sent: wait for the end, then every point is there.
            wait_for(lambda: client.get_run(child.info.run_id).info.status == "FINISHED", timeout=60, interval=0.5,
                     message=f"{child.info.run_name}'s run to end")
            for key in ("loss", "score"):
                assert [m.step for m in client.get_metric_history(child.info.run_id, key)] == \
                    list(range(1, STEPS + 1)), (child.info.run_name, key)
        version = client.get_model_version_by_alias("fast", "champion")
        assert version.run_id == rows[best["name"]]["mlflowRunId"]
        assert version.tags["shipyard.project"] == "default" and version.tags["shipyard.path"] == f"/{best['name']}"
        assert client.get_run(status["mlflowRunId"]).info.status == "FINISHED"
    finally:
        try:
            platform.down_and_check()
        finally:
            server.stop()
