"""Sweep manifests: defaults, and bad search spaces refused at apply time with the field's path."""

from pathlib import Path

import pytest

from shipyard.resources import KINDS, ManifestError, Sweep, load_resources, parse_yaml, resolve_kind

ROOT = Path(__file__).resolve().parents[2]

SWEEP = """\
apiVersion: shipyard.dev/v1alpha1
kind: Sweep
metadata: {name: lr}
spec:
  parameters:
    - {name: lr, type: logUniform, min: 0.0001, max: 0.01}
    - {name: r, type: categorical, values: [4, 8]}
  objective: {metric: exact_match, goal: maximize}
  trial:
    command: [python, train.py]
    args: [--lr, "${lr}", --lora-r, "${r}", --out, "/data/${sweep}/${trial}"]
    env: [{name: SEED, value: "1"}]
    volumes: [{name: data, mountPath: /data}]
"""


def load(text: str) -> Sweep:
    [sweep] = load_resources(parse_yaml(text, "sweep.yaml"))
    assert isinstance(sweep, Sweep)
    return sweep


def refuse(text: str) -> ManifestError:
    with pytest.raises(ManifestError) as err:
        load_resources(parse_yaml(text, "sweep.yaml"))
    assert "\n" not in str(err.value)
    return err.value


def test_defaults_and_registration():
    sweep = load(SWEEP)
    spec = sweep.spec
    assert (spec.algorithm.type, spec.algorithm.seed, spec.algorithm.grid_points) == ("grid", 0, 3)
    assert spec.max_trials == 6 == sweep.total_trials  # 3 log-spaced points × 2 values
    assert (spec.parallelism, spec.max_failed_trials, spec.early_stopping, spec.registration) == (1, 0, None, None)
    assert sweep.status.phase == "Pending" and sweep.status.trials == []
    assert KINDS["Sweep"] is Sweep and resolve_kind("sw") is Sweep and resolve_kind("sweeps") is Sweep
    wire = sweep.to_wire()
    assert wire["spec"]["maxTrials"] == 6 and "register" not in wire["spec"]


def test_example_validates():
    [sweep] = load_resources(parse_yaml((ROOT / "examples/lifecycle/sweep.yaml").read_text(), "sweep.yaml"))
    assert isinstance(sweep, Sweep)
    assert sweep.total_trials == 4 and sweep.spec.parallelism == 2
    assert sweep.spec.registration.model_dump() == {"model": "lifecycle", "volume": "lifecycle",
                                                    "path": "/sweep/${trial}/merged", "alias": "champion"}


def spec_with(old: str, new: str) -> str:
    assert old in SWEEP, old
    return SWEEP.replace(old, new)


LR = "{name: lr, type: logUniform, min: 0.0001, max: 0.01}"
R = "{name: r, type: categorical, values: [4, 8]}"
OBJECTIVE = "objective: {metric: exact_match, goal: maximize}"
REGISTER = OBJECTIVE + "\n  register: {model: m, volume: data, path: '/${sweep}/${trial}/merged'}"


@pytest.mark.parametrize("text, path, words", [
    (spec_with(R, "{name: r, type: categorical, values: []}"), "spec.parameters[1].values", "must not be empty"),
    (spec_with(R, "{name: r, type: categorical}"), "spec.parameters[1].values", "required"),
    (spec_with(R, "{name: r, type: categorical, values: [4, 4.0]}"), "spec.parameters[1].values[1]",
     "also values[0]"),
    (spec_with(R, "{name: r, type: categorical, values: [4, yes]}"), "spec.parameters[1].values[1]",
     "string or a number"),
    (spec_with(R, "{name: r, type: categorical, values: [4], min: 1}"), "spec.parameters[1].min", "range"),
    (spec_with(LR, "{name: lr, type: uniform, min: 0.5, max: 0.1}"), "spec.parameters[0].max",
     "greater than min"),
    (spec_with(LR, "{name: lr, type: uniform, min: 0.5, max: 0.5}"), "spec.parameters[0].max",
     "greater than min"),
    (spec_with(LR, "{name: lr, type: logUniform, min: 0, max: 0.1}"), "spec.parameters[0].min",
     "greater than 0"),
    (spec_with(LR, "{name: lr, type: uniform, max: 0.1}"), "spec.parameters[0].min", "required"),
    (spec_with(LR, "{name: lr, type: uniform, min: 0.1, max: 0.2, values: [1]}"), "spec.parameters[0].values",
     "only for categorical"),
    (spec_with(LR, "{name: lr, type: int, min: 8, max: 2}"), "spec.parameters[0].max", "at least min"),
    (spec_with(LR, "{name: lr, type: int, min: 1.5, max: 2}"), "spec.parameters[0].min", "whole number"),
    (spec_with(LR, "{name: lr, type: uniform, min: 0.1, max: 0.2, step: 1}"), "spec.parameters[0].step",
     "only for int"),
    (spec_with(LR, "{name: lr, type: gaussian, min: 0.1, max: 0.2}"), "spec.parameters[0].type", "Input should be"),
    (spec_with(LR, "{name: 2lr, type: uniform, min: 0.1, max: 0.2}"), "spec.parameters[0].name", "identifier"),
    (spec_with(LR, "{name: trial, type: uniform, min: 0.1, max: 0.2}"), "spec.parameters[0].name", "reserved"),
    (spec_with(R, "{name: lr, type: categorical, values: [4, 8]}"), "spec.parameters[1].name",
     "also parameters[0]"),
    (spec_with('"${lr}", --lora-r', '"${lrr}", --lora-r'), "spec.trial.args[1]",
     "unknown placeholder ${lrr}; parameters are lr, r"),
    (spec_with('value: "1"', 'value: "${seed}"'), "spec.trial.env[0].value", "unknown placeholder ${seed}"),
    (spec_with('"${r}"', '"4"'), "spec.parameters[1].name", "${r} appears nowhere"),
    (spec_with("mountPath: /data", "mountPath: \"/data/${trial}\""), "spec.trial.volumes[0].mountPath",
     "substituted only in command, args"),
    (spec_with("trial:\n", "maxTrials: 7\n  trial:\n"), "spec.maxTrials", "exceeds the grid's 6 points (3 × 2)"),
    (spec_with("trial:\n", "algorithm: {type: random}\n  trial:\n"), "spec.maxTrials", "required for random"),
    (spec_with("trial:\n", "algorithm: {type: bayesian}\n  trial:\n"), "spec.algorithm.type", "Input should be"),
    (spec_with("trial:\n", "parallelism: 0\n  trial:\n"), "spec.parallelism", "greater than or equal to 1"),
    (spec_with("goal: maximize", "goal: up"), "spec.objective.goal", "Input should be"),
    (spec_with(OBJECTIVE, REGISTER.replace("volume: data", "volume: models")), "spec.register.volume",
     "'models' is not among trial.volumes (data)"),
    (spec_with(OBJECTIVE, REGISTER.replace("/${sweep}/${trial}/merged", "/best/merged")), "spec.register.path",
     "must contain ${trial}"),
    (spec_with(OBJECTIVE, REGISTER.replace("/merged", "/${x}")), "spec.register.path", "unknown placeholder ${x}"),
    (spec_with(OBJECTIVE, REGISTER.replace("path: '/", "path: '")), "spec.register.path", "absolute path"),
    (spec_with("trial:\n", "trialz: 1\n  trial:\n"), "spec.trialz", "unknown field"),
    (spec_with("name: lr}", "name: " + "x" * 51 + "}"), "metadata.name", "at most 52 characters"),
])
def test_bad_sweeps_are_refused_with_the_field_path(text, path, words):
    err = refuse(text)
    assert err.path == path, str(err)
    assert words in err.message, str(err)


def test_literal_dollar_braces_and_grid_cap():
    sweep = load(spec_with('"/data/${sweep}/${trial}"', '"/data/${sweep}/${trial}", -c, "echo $${HOME}"'))
    assert sweep.spec.trial.args[-1] == "echo $${HOME}"  # substituted to ${HOME} only when a trial is made
    many = SWEEP.replace(LR, "{name: lr, type: int, min: 1, max: 300, step: 1}")
    err = refuse(many)
    assert err.path == "spec.maxTrials" and "600 points" in err.message
    assert load(many.replace("trial:\n", "maxTrials: 10\n  trial:\n")).total_trials == 10
