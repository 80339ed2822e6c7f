"""How a daemon decides to track experiments: its own MLflow server, an external one, or none (said why)."""

from __future__ import annotations

import logging
import sys

import pytest

from shipyard.tracking import setup
from shipyard.tracking.mlflow_tracker import CLIENT_DEFAULTS, metric_key


@pytest.fixture(autouse=True)
def client_env(monkeypatch):
    for name in CLIENT_DEFAULTS:  # MlflowTracker sets these process-wide; give them back afterwards
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)


def test_switched_off(tmp_path, caplog):
    caplog.set_level(logging.INFO, "shipyard.tracking")
    assert setup(tmp_path, tmp_path / "volumes", environ={"SHIPYARD_TRACKING": "off"}) is None
    assert "experiment tracking is off (SHIPYARD_TRACKING=off)" in caplog.text


def test_without_mlflow_the_daemon_runs_untracked_and_says_so(tmp_path, caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    caplog.set_level(logging.INFO, "shipyard.tracking")
    assert setup(tmp_path, tmp_path / "volumes", environ={}) is None
    [record] = [r for r in caplog.records if "tracking" in r.getMessage()]
    assert "mlflow is not installed" in record.getMessage() and "shipyard[tracking]" in record.getMessage()
    assert not (tmp_path / "mlflow").exists()


def test_an_external_server_starts_nothing(tmp_path):
    pytest.importorskip("mlflow")
    tracking = setup(tmp_path, tmp_path / "volumes",
                     environ={"SHIPYARD_MLFLOW_TRACKING_URI": "http://mlflow.example:5000/"})
    assert tracking is not None and tracking.server is None and tracking.url == "http://mlflow.example:5000"
    assert tracking.tracker.tracking_uri == "http://mlflow.example:5000"
    assert not (tmp_path / "mlflow").exists()


def test_its_own_server_has_its_url_before_it_starts(tmp_path):
    pytest.importorskip("mlflow")
    tracking = setup(tmp_path, tmp_path / "volumes", environ={"SHIPYARD_MLFLOW_PORT": "45678"})
    assert tracking is not None and tracking.url == "http://127.0.0.1:45678"
    argv = tracking.server.argv()
    assert argv[1:4] == ["-m", "mlflow", "server"]
    assert f"sqlite:///{tmp_path}/mlflow/mlflow.db" in argv and "--workers" in argv
    assert not (tmp_path / "mlflow" / "server.json").exists()  # nothing was started


@pytest.mark.parametrize("key, expected", [("loss", "loss"), ("eval/exact match", "eval/exact match"),
                                           ("acc@1", "acc_1"), ("", "_")])
def test_metric_keys_mlflow_accepts(key, expected):
    assert metric_key(key) == expected


def test_mlflow_telemetry_is_off_unless_the_user_turns_it_on():
    from shipyard.tracking.server import server_environment

    env = server_environment({"PATH": "/bin"})
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true" and env["PATH"] == "/bin"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert server_environment({"MLFLOW_DISABLE_TELEMETRY": "false"})["MLFLOW_DISABLE_TELEMETRY"] == "false"
    assert CLIENT_DEFAULTS["MLFLOW_DISABLE_TELEMETRY"] == "true"  # the daemon's own client sends nothing either


def test_experiments_are_named_apart_from_mlflows_default():
    from shipyard.tracking.mlflow_tracker import experiment_name

    assert experiment_name("default") == "shipyard/default"
