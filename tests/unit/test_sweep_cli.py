"""What people see of a Sweep: `get` with its trials best first, `describe`, and `render` of its trials."""

from __future__ import annotations

from pathlib import Path

import yaml

from shipyard.resources import Sweep, load_resources, parse_yaml
from tests.unit.test_client_cli import cli, server, store  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "lifecycle" / "sweep.yaml"


def stored_sweep(store) -> Sweep:
    [sweep] = load_resources(parse_yaml(EXAMPLE.read_text(), "sweep.yaml"))
    store.apply([sweep])
    sweep = store.get("Sweep", "default", "lifecycle-sweep")
    status = type(sweep.status).model_validate({
        "phase": "Running", "trialsSucceeded": 2, "trialsStopped": 1, "trialsRunning": 1,
        "bestTrial": {"name": "lifecycle-sweep-1", "parameters": {"lr": "3e-3", "r": "8"}, "objective": 0.91},
        "trials": [
            {"name": "lifecycle-sweep-0", "parameters": {"lr": "3e-3", "r": "4"}, "phase": "Succeeded",
             "objective": 0.62, "bestObjective": 0.62, "step": 180, "history": [[0, 0.0], [180, 0.62]]},
            {"name": "lifecycle-sweep-1", "parameters": {"lr": "3e-3", "r": "8"}, "phase": "Succeeded",
             "objective": 0.91, "bestObjective": 0.91, "step": 180},
            {"name": "lifecycle-sweep-2", "parameters": {"lr": "1e-2", "r": "4"}, "phase": "Stopped",
             "objective": 0.05, "bestObjective": 0.05, "step": 60, "reason": "EarlyStopped"},
            {"name": "lifecycle-sweep-3", "parameters": {"lr": "1e-2", "r": "8"}, "phase": "Running"},
        ]})
    return store.update_status(sweep.model_copy(update={"status": status}))


def test_get_one_sweep_shows_its_trials_best_first(cli, store):
    stored_sweep(store)
    code, out, err = cli("get", "sweep", "lifecycle-sweep")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "TRIALS", "RUNNING", "BEST", "BEST", "TRIAL", "AGE"]
    assert lines[1].split()[:6] == ["lifecycle-sweep", "Running", "3/4", "1", "0.91", "lifecycle-sweep-1"]
    assert lines[2] == ""
    assert lines[3].split() == ["TRIAL", "PHASE", "LR", "R", "STEP", "EXACT_MATCH", "BEST", "SEEN", "REASON"]
    assert [line.split()[0] for line in lines[4:]] == ["*", "lifecycle-sweep-0", "lifecycle-sweep-2",
                                                       "lifecycle-sweep-3"]
    assert lines[4].split()[1:] == ["lifecycle-sweep-1", "Succeeded", "3e-3", "8", "180", "0.91", "0.91", "-"]
    assert lines[6].split()[-1] == "EarlyStopped" and lines[7].split()[1:] == ["Running", "1e-2", "8", "-", "-",
                                                                               "-", "-"]
    code, out, _ = cli("get", "sw")
    assert code == 0 and len(out.splitlines()) == 2  # a list has no trials tables
    code, out, _ = cli("get", "sweeps", "-o", "wide")
    assert "maximize exact_match" in out


def test_describe_sweep(cli, store):
    stored_sweep(store)
    code, out, err = cli("describe", "sweep", "lifecycle-sweep")
    assert code == 0, err
    assert "Best Trial:          lifecycle-sweep-1 (0.91) lr=3e-3, r=8" in out
    trials = out[out.index("\nTrials:") + 1:].splitlines()
    assert "EXACT_MATCH" in trials[1] and "lifecycle-sweep-1" in trials[2]


def test_render_of_a_sweep_shows_its_trials(cli):
    code, out, err = cli("render", "-f", str(EXAMPLE))
    assert code == 0 and err == ""
    jobs = [o for o in yaml.safe_load_all(out) if o["kind"] == "Job"]
    assert [j["metadata"]["name"] for j in jobs] == [f"lifecycle-sweep-{i}" for i in range(4)]  # the whole grid
    args = [" ".join(j["spec"]["template"]["spec"]["containers"][0]["args"]) for j in jobs]
    assert all("${" not in a for a in args) and "--lr 3e-3" in args[0] and "--lora-r 8" in args[1]


def test_apply_through_the_api_and_refusals_name_the_field(cli, store, tmp_path):
    code, out, err = cli("apply", "-f", str(EXAMPLE))
    assert code == 0, err
    assert out.strip() == "sweep/lifecycle-sweep created"
    sweep = store.get("Sweep", "default", "lifecycle-sweep")
    assert sweep.spec.max_trials == 4 and "shipyard.dev/local-workdir" in sweep.metadata.annotations
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace('"${lr}"', '"${lrr}"'))
    code, _, err = cli("apply", "-f", str(bad))
    assert code != 0
    assert f"{bad}: document 1: spec.trial.args[13]: unknown placeholder ${{lrr}}; parameters are lr, r" in err
