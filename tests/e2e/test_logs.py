"""`shipyard logs` through a real daemon for every kind with pods: a TrainingJob (and its previous attempt),
an Endpoint with two replicas (`--all`, prefixed), an App, a Workspace and a Sweep's trial; bad flags answer
one line; a deleted job's log files are gone. The size cap is proven faster in
tests/integration/test_local_pod_logs.py."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import Shipyard

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# A server on $PORT answering 200 everywhere (the Endpoint's /health and the App's /), saying who it is.
SERVER = ("import http.server, os\n"
          "print('serving', os.environ['SHIPYARD_POD_NAME'], flush=True)\n"
          "class H(http.server.BaseHTTPRequestHandler):\n"
          "    def do_GET(self):\n"
          "        self.send_response(200); self.send_header('Content-Length', '2'); self.end_headers()\n"
          "        self.wfile.write(b'ok')\n"
          "    def log_message(self, *a): pass\n"
          "http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()\n")


# Prints its rank and attempt; attempt 0 fails (rank 0, after rank 1 printed), attempt 1 succeeds.
FLAKY = ("import os, pathlib, sys, time\n"
         "n, rank = int(os.environ['SHIPYARD_RESTART_COUNT']), os.environ['RANK']\n"
         "print('rank', rank, 'attempt', n, flush=True)\n"
         "printed = pathlib.Path(os.environ['SHIPYARD_VOLUME_SYNC']) / 'rank-1-printed'\n"
         "if n == 0 and rank == '1':\n"
         "    printed.touch()\n"
         "    time.sleep(600)\n"
         "while n == 0 and not printed.exists():\n"
         "    time.sleep(0.05)\n"
         "sys.exit(1 if n == 0 else 0)\n")


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    instance = Shipyard(tmp_path_factory.mktemp("logs") / "home")
    instance.up()
    try:
        yield instance
    finally:
        instance.down_and_check()


def apply(platform: Shipyard, kind: str, name: str, spec: dict) -> None:
    platform.run("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "shipyard.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}))


def logs(platform: Shipyard, *args: str) -> str:
    return platform.run("logs", *args).stdout


def logs_when(platform: Shipyard, predicate, *args: str, timeout: float = 180) -> str:
    """The output of `shipyard logs ARGS` once `predicate` holds for it (pods start asynchronously)."""
    def attempt():
        result = platform.run("logs", *args, check=False)
        return result.returncode == 0 and predicate(result.stdout) and result.stdout
    return wait_for(attempt, timeout=timeout, interval=0.5, message=f"shipyard logs {' '.join(args)}")


def one_line_error(platform: Shipyard, *args: str, contains: str) -> None:
    result = platform.run("logs", *args, check=False)
    assert result.returncode == 1 and contains in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_training_job_its_previous_attempt_and_deletion(platform):
    # Attempt 0 fails on rank 0, but only once rank 1 has printed its line: else the gang restart could stop
    # rank 1 before it wrote anything (under CPU limits it starts later), and `--previous` would be empty.
    apply(platform, "TrainingJob", "flaky", {
        "replicas": 2, "maxRestarts": 1, "backoffSeconds": 0,
        "volumes": [{"name": "sync", "mountPath": "/sync"}],
        "command": ["python", "-c", FLAKY]})
    wait_for(lambda: platform.get("flaky").get("status", {}).get("phase") == "Succeeded", timeout=240,
             interval=0.5, message="flaky succeeded on its second attempt")
    assert logs(platform, "tj/flaky") == "rank 0 attempt 1\n"
    assert logs(platform, "tj/flaky", "--previous") == "rank 0 attempt 0\n"
    assert logs(platform, "tj/flaky", "--replica", "1", "--previous") == "rank 1 attempt 0\n"
    every = sorted(logs(platform, "tj/flaky", "--all").splitlines())
    assert len(every) == 2 and all(re.fullmatch(rf"\[pod/flaky-{i}-\w+\] rank {i} attempt 1", line)
                                   for i, line in enumerate(every)), every
    assert logs(platform, "tj/flaky", "--since", "1h", "--tail", "1") == "rank 0 attempt 1\n"
    one_line_error(platform, "tj/flaky", "--since", "garbage", contains="not a duration")
    one_line_error(platform, "tj/flaky", "--replica", "5", contains="out of range")
    one_line_error(platform, "tj/flaky", "--trial", "0", contains="--trial applies to a sweep")

    log_dir = platform.home / "logs" / "default"
    assert any(f.name.startswith("flaky-") for f in log_dir.iterdir())
    platform.run("delete", "tj/flaky")
    wait_for(lambda: not any(f.name.startswith("flaky-") for f in log_dir.iterdir()), timeout=60,
             message="the deleted job's log files removed")


def test_endpoint_app_workspace_and_sweep_trial(platform):
    apply(platform, "Endpoint", "echo", {"engine": "custom", "model": "/models/none", "command": ["python", "-c", SERVER],
                                         "volumes": [{"name": "models", "mountPath": "/models"}],
                                         "replicas": {"min": 2, "max": 2}})
    apply(platform, "App", "board", {"command": ["python", "-c", SERVER], "port": 8000})
    apply(platform, "Workspace", "lab", {})
    apply(platform, "Sweep", "lr", {
        "parameters": [{"name": "lr", "type": "categorical", "values": ["0.1", "0.2"]}],
        "objective": {"metric": "loss", "goal": "minimize"},
        "trial": {"command": ["python", "-c", "import sys; print('trial with lr', sys.argv[1], flush=True)",
                              "${lr}"]}})

    both = logs_when(platform, lambda out: len(out.splitlines()) == 2, "endpoint/echo", "--all")
    lines = sorted(both.splitlines())
    pods = [line.split("]")[0].removeprefix("[pod/") for line in lines]
    assert lines == [f"[pod/{pod}] serving {pod}" for pod in pods] and len(set(pods)) == 2
    assert logs(platform, "endpoint/echo", "--pod", pods[1]) == f"serving {pods[1]}\n"
    assert logs(platform, "endpoint/echo", "-l", "shipyard.dev/kind=endpoint", "--replica", "0").startswith("serving ")
    one_line_error(platform, "endpoint/echo", "--replica", "2", contains="--replica must be below 2")
    one_line_error(platform, "endpoint/echo", "-l", "a=b=c", contains="label selector")

    assert logs_when(platform, lambda out: out.startswith("serving board-"), "app/board")
    assert logs_when(platform, lambda out: out.strip() != "", "workspace/lab", "--tail", "5", timeout=240)

    assert logs_when(platform, lambda out: out == "trial with lr 0.1\n", "sweep/lr", "--trial", "0", timeout=240)
    one_line_error(platform, "sweep/lr", contains="--trial I")
    one_line_error(platform, "sweep/lr", "--trial", "7", contains="--trial must be below")
    for ref in ("endpoint/echo", "app/board", "workspace/lab", "sweep/lr"):
        platform.run("delete", ref)
