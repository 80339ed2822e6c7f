"""Sweeps through a real daemon with a real MLflow server: a 4-trial grid of the built-in finetune, two at a
time, the best registered and served as `models:/…`; the MLflow client's view of it; and synthetic trials with
known curves for the median stopping rule and for failure limits.

One daemon (with tracking) serves the module: its MLflow server takes ~8 s to start.
"""

from __future__ import annotations

import json
import textwrap

import httpx
import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import Shipyard
from tests.workloads.serve_fixtures import build_tiny_model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    instance = Shipyard(tmp_path_factory.mktemp("sweeps") / "home", tracking=True)
    instance.up()
    # A tiny random-init base with a chat template: fine-tuning it moves the held-out loss within seconds.
    build_tiny_model(instance.home / "volumes" / "default" / "work" / "base")
    try:
        yield instance
    finally:
        instance.down_and_check()


def apply(platform: Shipyard, obj: dict) -> None:
    platform.run("apply", "-f", "-", input=json.dumps(obj))


def sweep_status(platform: Shipyard, name: str) -> dict:
    return platform.get(name, "sweep").get("status", {})


def wait_sweep(platform: Shipyard, name: str, phases: tuple[str, ...], timeout: float = 600,
               on_poll=None) -> dict:
    def done():
        status = sweep_status(platform, name)
        if on_poll is not None:
            on_poll(status)
        return status.get("phase") in phases and status
    return wait_for(done, timeout=timeout, interval=0.25, message=f"sweep/{name} in {phases}")


def mlflow_url(platform: Shipyard) -> str:
    url = json.loads((platform.home / "daemon.json").read_text())["mlflowUrl"]
    wait_for(lambda: _healthy(url), timeout=120, interval=0.5, message="the MLflow server")
    return url


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_grid_sweep_of_finetune_registers_the_best_and_serves_it(platform):
    from mlflow.tracking import MlflowClient

    url = mlflow_url(platform)
    apply(platform, {"apiVersion": "shipyard.dev/v1alpha1", "kind": "Sweep", "metadata": {"name": "grid"}, "spec": {
        "parameters": [{"name": "lr", "type": "categorical", "values": ["1e-3", "2e-2"]},
                       {"name": "r", "type": "categorical", "values": [2, 8]}],
        "algorithm": {"type": "grid"},
        "objective": {"metric": "eval_loss", "goal": "minimize"},
        "parallelism": 2,
        "trial": {
            "command": ["python", "-m", "shipyard.workloads.finetune"],
            "args": ["--base-model", "/work/base", "--output-dir", "/work/grid/${trial}", "--task", "stdlib-kind",
                     "--steps", "24", "--batch-size", "8", "--lr", "${lr}", "--lora-r", "${r}",
                     "--warmup-steps", "2", "--eval-every", "12", "--eval-examples", "16", "--max-new-tokens", "4",
                     "--log-every", "4"],
            "resources": {"cpu": "1"},
            "volumes": [{"name": "work", "mountPath": "/work"}]},
        "register": {"model": "tiny-chat", "volume": "work", "path": "/grid/${trial}/merged", "alias": "champion"},
    }})
    most_at_once = []

    def count_running(status):
        most_at_once.append(sum(1 for t in status.get("trials", []) if t.get("phase") in ("Pending", "Running")))

    status = wait_sweep(platform, "grid", ("Succeeded", "Failed"), on_poll=count_running)
    assert status["phase"] == "Succeeded", status
    trials = status["trials"]
    assert len(trials) == 4 and all(t["phase"] == "Succeeded" for t in trials)
    assert max(most_at_once) <= 2  # parallelism, as seen by a client polling throughout
    best = min(trials, key=lambda t: t["objective"])
    assert status["bestTrial"]["name"] == best["name"]
    assert status["registeredModel"]["name"] == "tiny-chat"
    table = platform.run("get", "sweep", "grid").stdout
    assert best["name"] in table and best["parameters"]["lr"] in table

    # MLflow: the sweep is a parent run, each trial a child run with its parameters and metric history.
    client = MlflowClient(url)
    parent = client.get_run(status["mlflowRunId"])
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 4
    child = next(r for r in children if r.info.run_name == best["name"])
    assert child.data.params.get("lr") == best["parameters"]["lr"]
    history = client.get_metric_history(child.info.run_id, "loss")
    assert [m.step for m in history] == sorted(m.step for m in history) and len(history) >= 4
    assert client.get_metric_history(child.info.run_id, "eval_loss")
    version = client.get_model_version_by_alias("tiny-chat", "champion")
    assert version.run_id == child.info.run_id
    assert "tiny-chat" in platform.run("models").stdout

    # Serve the registered model by its alias, through the gateway.
    apply(platform, {"apiVersion": "shipyard.dev/v1alpha1", "kind": "Endpoint", "metadata": {"name": "champion"},
                     "spec": {"model": "models:/tiny-chat@champion", "servedModelName": "tiny",
                              "resources": {"cpu": "250m"}}})
    endpoint = wait_for(lambda: (s := platform.get("champion", "endpoint").get("status", {})).get("phase") == "Ready"
                        and s, timeout=180, interval=0.25, message="the models:/ endpoint")
    assert endpoint["resolvedModel"]["path"].endswith(f"/grid/{best['name']}/merged")
    key = platform.run("apikey", "create", "sweeps", "-q").stdout.strip()
    reply = httpx.post(endpoint["url"] + "v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                       json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
                       timeout=60)
    assert reply.status_code == 200, reply.text
    platform.run("delete", "endpoint", "champion", "--wait")
    platform.run("delete", "sweep", "grid", "--wait")
    assert not [j for j in json.loads(platform.run("get", "tj", "-o", "json").stdout).get("items", [])
                if j["metadata"]["name"].startswith("grid-")]  # trials go with their sweep


SYNTHETIC = textwrap.dedent("""
    import json, os, sys, time
    quality, fail = float(sys.argv[1]), sys.argv[2] == "1"
    for step in range(1, 41):
        # a known curve: good trials fall towards 1 - quality, the bad one stays high
        print("SHIPYARD_PROGRESS " + json.dumps({"step": step, "total_steps": 40,
                                                   "loss": 1 - quality * step / 40}), flush=True)
        if fail and step == 5:
            sys.exit(3)
        time.sleep(0.25)  # slow enough for the controller, which samples progress every ~2 s, to see the curve
""")


def synthetic_sweep(name: str, qualities: list[str], fails: list[str], **spec) -> dict:
    return {"apiVersion": "shipyard.dev/v1alpha1", "kind": "Sweep", "metadata": {"name": name}, "spec": {
        "parameters": [{"name": "q", "type": "categorical", "values": qualities},
                       {"name": "fail", "type": "categorical", "values": fails}],
        "algorithm": {"type": "grid"},
        "objective": {"metric": "loss", "goal": "minimize"},
        "parallelism": 1,
        "trial": {"command": ["python", "-c", SYNTHETIC, "${q}", "${fail}"], "maxRestarts": 0},
        **spec}}


def test_median_stopping_stops_a_clearly_bad_trial(platform):
    apply(platform, synthetic_sweep("median", ["0.9", "0.8", "0.0"], ["0"],
                                    earlyStopping={"rule": "median", "minSteps": 10, "minTrials": 2}))
    status = wait_sweep(platform, "median", ("Succeeded", "Failed"), timeout=240)
    by_q = {t["parameters"]["q"]: t for t in status["trials"]}
    assert by_q["0.9"]["phase"] == by_q["0.8"]["phase"] == "Succeeded"
    assert by_q["0.0"]["phase"] == "Stopped" and by_q["0.0"]["step"] < 40, by_q["0.0"]
    assert status["phase"] == "Succeeded" and status["bestTrial"]["parameters"]["q"] == "0.9"
    platform.run("delete", "sweep", "median", "--wait")


def test_failed_trials_are_recorded_until_max_failed_trials_then_the_sweep_fails(platform):
    apply(platform, synthetic_sweep("failing", ["0.5", "0.6", "0.7"], ["1"], maxFailedTrials=1))
    status = wait_sweep(platform, "failing", ("Succeeded", "Failed"), timeout=240)
    assert status["phase"] == "Failed"
    failed = [t for t in status["trials"] if t["phase"] == "Failed"]
    assert len(failed) == 2  # one tolerated, the second one fails the sweep
    reason = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert reason["reason"] == "MaxFailedTrialsExceeded"
    described = platform.run("describe", "sweep", "failing").stdout
    assert "MaxFailedTrialsExceeded" in described
    platform.run("delete", "sweep", "failing", "--wait")


def test_bad_search_spaces_are_refused_with_a_field_path(platform):
    bad = synthetic_sweep("bad", [], ["0"])
    result = platform.run("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert result.returncode == 1 and "spec.parameters[0]" in result.stderr and len(result.stderr.splitlines()) == 1
    typo = synthetic_sweep("typo", ["0.5"], ["0"])
    typo["spec"]["trial"]["command"][-1] = "${fial}"
    result = platform.run("apply", "-f", "-", input=json.dumps(typo), check=False)
    assert result.returncode == 1 and "${fial}" in result.stderr and "spec.trial.command" in result.stderr
    ranged = synthetic_sweep("ranged", ["0.5"], ["0"])
    ranged["spec"]["parameters"].append({"name": "lr", "type": "logUniform", "min": 0.1, "max": 0.01})
    result = platform.run("apply", "-f", "-", input=json.dumps(ranged), check=False)
    assert result.returncode == 1 and "spec.parameters[2]" in result.stderr
    names = [s["metadata"]["name"] for s in json.loads(platform.run("get", "sweeps", "-o", "json").stdout)["items"]]
    assert not {"bad", "typo", "ranged"} & set(names)  # nothing half-stored
