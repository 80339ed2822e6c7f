"""Table tests for the Sweep's pure policies: search space, substitution, median stopping, best trial, history."""

import pytest

from shipyard.controllers.sweep.best import best_trial
from shipyard.controllers.sweep.median_stopping import running_average, should_stop
from shipyard.controllers.sweep.searchspace import assignment, grid_point, sample, summary
from shipyard.controllers.sweep.substitute import (
    PARAMETERS_ANNOTATION,
    PARENT_RUN_ANNOTATION,
    SWEEP_LABEL,
    owned_by,
    trial_index,
    trial_job,
)
from shipyard.controllers.sweep.trials import observe, record_point
from shipyard.resources import Sweep, TrainingJob, TrialStatus
from shipyard.resources.searchspace import Parameter, format_value, substitute_text
from shipyard.resources.trainingjob import EnvVar


def param(**kw) -> Parameter:
    return Parameter.model_validate(kw)


def make_sweep(parameters, algorithm=None, max_trials=None, args=None, **meta) -> Sweep:
    names = [p["name"] for p in parameters]
    spec = {"parameters": parameters, "objective": {"metric": "loss", "goal": "minimize"},
            "trial": {"command": ["python", "train.py"],
                      "args": args or [a for n in names for a in (f"--{n}", "${" + n + "}")]}}
    if algorithm:
        spec["algorithm"] = algorithm
    if max_trials:
        spec["maxTrials"] = max_trials
    return Sweep.model_validate({"metadata": {"name": "sw", "uid": "u-1", **meta}, "spec": spec})


# --- values ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, text", [
    (0.001, "0.001"), (0.0010000000000000002, "0.001"), (1e-5, "1e-05"), (3.0, "3"), (8, "8"), ("3e-3", "3e-3"),
    (123456789.0, "1.23457e+08"), (0.1 + 0.2, "0.3"),
])
def test_values_are_short_text(value, text):
    assert format_value(value) == text


@pytest.mark.parametrize("spec, points, values", [
    ({"type": "categorical", "values": ["a", 2, 0.5]}, 3, ["a", "2", "0.5"]),
    ({"type": "uniform", "min": 0, "max": 1}, 3, ["0", "0.5", "1"]),
    ({"type": "uniform", "min": 0.1, "max": 0.2}, 2, ["0.1", "0.2"]),
    ({"type": "logUniform", "min": 0.0001, "max": 0.01}, 3, ["0.0001", "0.001", "0.01"]),
    ({"type": "logUniform", "min": 1e-4, "max": 1e-1}, 4, ["0.0001", "0.001", "0.01", "0.1"]),
    ({"type": "int", "min": 1, "max": 3}, 5, ["1", "2", "3"]),
    ({"type": "int", "min": 0, "max": 100}, 3, ["0", "50", "100"]),
    ({"type": "int", "min": 0, "max": 3}, 3, ["0", "2", "3"]),  # rounded, never duplicated
    ({"type": "int", "min": 4, "max": 16, "step": 4}, 3, ["4", "8", "12", "16"]),
    ({"type": "int", "min": 7, "max": 7}, 3, ["7"]),
])
def test_grid_values(spec, points, values):
    assert param(name="p", **spec).grid_values(points) == values


def test_grid_is_a_cartesian_product_last_parameter_fastest():
    ps = [param(name="lr", type="categorical", values=["3e-3", "1e-2"]), param(name="r", type="categorical",
                                                                               values=[4, 8, 16])]
    points = [grid_point(ps, 3, i) for i in range(6)]
    assert points == [{"lr": "3e-3", "r": "4"}, {"lr": "3e-3", "r": "8"}, {"lr": "3e-3", "r": "16"},
                      {"lr": "1e-2", "r": "4"}, {"lr": "1e-2", "r": "8"}, {"lr": "1e-2", "r": "16"}]
    with pytest.raises(IndexError):
        grid_point(ps, 3, 6)


def test_grid_assignment_and_max_trials_take_the_first_points():
    sweep = make_sweep([{"name": "lr", "type": "uniform", "min": 0, "max": 1},
                        {"name": "r", "type": "int", "min": 1, "max": 2}], max_trials=4)
    assert sweep.total_trials == 4
    assert [assignment(sweep.spec, i) for i in range(4)] == [
        {"lr": "0", "r": "1"}, {"lr": "0", "r": "2"}, {"lr": "0.5", "r": "1"}, {"lr": "0.5", "r": "2"}]


def test_random_depends_only_on_seed_and_index():
    parameters = [{"name": "lr", "type": "logUniform", "min": 1e-5, "max": 1e-1},
                  {"name": "r", "type": "int", "min": 4, "max": 64, "step": 4},
                  {"name": "opt", "type": "categorical", "values": ["adam", "sgd"]},
                  {"name": "drop", "type": "uniform", "min": 0, "max": 0.5}]
    a = make_sweep(parameters, {"type": "random", "seed": 7}, max_trials=20)
    again = make_sweep(parameters, {"type": "random", "seed": 7}, max_trials=20)
    other = make_sweep(parameters, {"type": "random", "seed": 8}, max_trials=20)
    draws = [assignment(a.spec, i) for i in range(20)]
    assert draws == [assignment(again.spec, i) for i in range(20)]
    assert draws != [assignment(other.spec, i) for i in range(20)]
    assert assignment(a.spec, 13) == draws[13]  # no dependence on what was drawn before
    assert len({d["lr"] for d in draws}) > 10
    for d in draws:
        assert 1e-5 <= float(d["lr"]) <= 1e-1 and len(d["lr"]) <= 10
        assert int(d["r"]) in range(4, 65, 4) and d["opt"] in ("adam", "sgd") and 0 <= float(d["drop"]) <= 0.5
    # Adding a parameter leaves the others' draws alone.
    fewer = make_sweep(parameters[:2], {"type": "random", "seed": 7}, max_trials=20)
    assert [assignment(fewer.spec, i)["lr"] for i in range(20)] == [d["lr"] for d in draws]
    assert sample(param(name="k", type="int", min=3, max=3), 0, 5) == "3"


def test_summary_for_tracking():
    sweep = make_sweep([{"name": "lr", "type": "logUniform", "min": 1e-4, "max": 1e-2}])
    assert summary(sweep.spec) == {"algorithm": "grid", "objective": "minimize loss", "maxTrials": "3",
                                   "parallelism": "1", "maxFailedTrials": "0", "gridPoints": "3",
                                   "param.lr": "logUniform[0.0001, 0.01]"}


# --- substitution ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, out", [
    ("--lr=${lr}", "--lr=0.01"),
    ("${trial}/${sweep}", "sw-3/sw"),
    ("echo $${HOME} ${lr}", "echo ${HOME} 0.01"),
    ("$(POD_NAME) stays for the runtime", "$(POD_NAME) stays for the runtime"),
    ("${unknown}", "${unknown}"),
])
def test_substitute_text(text, out):
    assert substitute_text(text, {"lr": "0.01", "trial": "sw-3", "sweep": "sw"}) == out


def test_trial_job_fills_the_template_and_is_owned():
    sweep = make_sweep([{"name": "lr", "type": "categorical", "values": ["0.01", "0.1"]}],
                       args=["--lr", "${lr}", "--out", "/out/${trial}"], labels={"team": "nlp"},
                       annotations={"shipyard.dev/local-workdir": "/home/me"})
    sweep.spec.trial.env = [EnvVar(name="LR", value="lr=${lr}")]
    sweep.spec.trial.working_dir = "/w/${trial}"
    job = trial_job(sweep, 1, {"lr": "0.1"}, parent_run_id="run7")
    assert job.metadata.name == "sw-1" and job.spec.args == ["--lr", "0.1", "--out", "/out/sw-1"]
    assert job.spec.env[0].value == "lr=0.1" and job.spec.working_dir == "/w/sw-1"
    assert job.spec.command == ["python", "train.py"]
    assert job.metadata.labels == {"team": "nlp", SWEEP_LABEL: "sw", "shipyard.dev/trial-index": "1"}
    assert job.metadata.annotations == {PARAMETERS_ANNOTATION: '{"lr":"0.1"}', PARENT_RUN_ANNOTATION: "run7",
                                        "shipyard.dev/local-workdir": "/home/me"}
    [owner] = job.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid, owner.controller) == ("Sweep", "sw", "u-1", True)
    assert owned_by(job, sweep) and trial_index(job) == 1
    assert PARENT_RUN_ANNOTATION not in trial_job(sweep, 0, {"lr": "0.01"}).metadata.annotations
    other = sweep.model_copy(deep=True)
    other.metadata.uid = "u-2"
    assert not owned_by(job, other)


# --- median stopping ------------------------------------------------------------------------------------

GOOD = [(0, 0.0), (60, 0.4), (120, 0.7), (180, 0.9)]
FINE = [(0, 0.0), (60, 0.3), (120, 0.6), (180, 0.8)]
BEST = [(0, 0.0), (60, 0.5), (120, 0.8), (180, 0.95)]


@pytest.mark.parametrize("history, completed, goal, min_steps, min_trials, stop", [
    ([(0, 0.0), (60, 0.05)], [GOOD, FINE], "maximize", 0, 2, True),  # medians at 60: 0.2, 0.15 → 0.175
    ([(0, 0.0), (60, 0.2)], [GOOD, FINE], "maximize", 0, 2, False),  # 0.2 beats the median 0.175
    ([(0, 0.0), (60, 0.175)], [GOOD, FINE], "maximize", 0, 2, False),  # equal is not worse
    ([(0, 0.0), (60, 0.05)], [GOOD, FINE], "maximize", 61, 2, False),  # before minSteps
    ([(0, 0.0), (60, 0.05)], [GOOD], "maximize", 0, 2, False),  # too few completed trials
    ([(0, 0.0), (60, 0.05)], [GOOD, FINE, BEST], "maximize", 0, 3, True),
    ([(0, 0.0)], [GOOD, FINE], "maximize", 0, 2, False),  # at step 0 everyone is the base model
    ([(0, 0.0), (60, 0.4), (120, 0.1)], [GOOD, FINE], "maximize", 0, 2, False),  # its best (0.4) counts
    ([(0, 0.0), (60, 0.3), (120, 0.1)], [GOOD, FINE], "maximize", 0, 2, True),  # 0.3 < median 0.333 at 120
    ([], [GOOD, FINE], "maximize", 0, 1, False),
    ([(30, 0.05)], [[(60, 0.5)], [(60, 0.4)]], "maximize", 0, 1, False),  # nobody completed had reached step 30
    # minimize (a loss): stop if the best loss is above the median running average
    ([(10, 3.0), (20, 2.9)], [[(10, 3.0), (20, 2.0)], [(10, 3.2), (20, 2.2)]], "minimize", 0, 2, True),
    ([(10, 3.0), (20, 2.5)], [[(10, 3.0), (20, 2.0)], [(10, 3.2), (20, 2.2)]], "minimize", 0, 2, False),
])
def test_median_stopping(history, completed, goal, min_steps, min_trials, stop):
    verdict = should_stop(history, completed, goal, min_steps, min_trials)
    assert (verdict is not None) == stop, verdict
    if verdict is not None:
        assert verdict.step == history[-1][0] and "median" in verdict.message


def test_running_average_uses_steps_up_to_s():
    assert running_average(GOOD, 60) == pytest.approx(0.2)
    assert running_average(GOOD, 119) == pytest.approx(0.2)
    assert running_average(GOOD, 1000) == pytest.approx(0.5)
    assert running_average([(5, 1.0)], 4) is None


# --- best trial -----------------------------------------------------------------------------------------

def row(name, phase="Succeeded", objective=None):
    return TrialStatus(name=name, parameters={}, phase=phase, objective=objective)


@pytest.mark.parametrize("rows, goal, best", [
    ([row("a", objective=0.5), row("b", objective=0.9), row("c", objective=0.7)], "maximize", "b"),
    ([row("a", objective=0.5), row("b", objective=0.9), row("c", objective=0.7)], "minimize", "a"),
    ([row("a", objective=0.9), row("b", objective=0.9)], "maximize", "a"),  # ties: the earliest
    ([row("a", "Stopped", 0.99), row("b", "Failed", 0.99), row("c", objective=0.1)], "maximize", "c"),
    ([row("a", "Running", 0.99), row("b")], "maximize", None),  # running, or no objective: not eligible
    ([], "maximize", None),
])
def test_best_trial(rows, goal, best):
    found = best_trial(rows, goal)
    assert (found.name if found else None) == best


# --- history and observation ----------------------------------------------------------------------------

@pytest.mark.parametrize("history, point, out", [
    ([], (0, 1.0), [(0, 1.0)]),
    ([(0, 1.0)], (5, 0.5), [(0, 1.0), (5, 0.5)]),
    ([(0, 1.0), (5, 0.5)], (5, 0.5), [(0, 1.0), (5, 0.5)]),
    ([(0, 1.0), (5, 0.5)], (5, 0.4), [(0, 1.0), (5, 0.4)]),  # same step, newer value
    ([(0, 1.0), (5, 0.5), (10, 0.3)], (5, 0.45), [(0, 1.0), (5, 0.45)]),  # resumed from a checkpoint
])
def test_record_point(history, point, out):
    assert record_point(history, *point) == out


def test_history_is_thinned_but_spans_the_run():
    history: list = []
    for step in range(1000):
        history = record_point(history, step, float(step), limit=100)
    assert len(history) <= 100 and history[0] == (0, 0.0) and history[-1] == (999, 999.0)
    steps = [s for s, _ in history]
    assert steps == sorted(steps) and max(b - a for a, b in zip(steps, steps[1:])) <= 50  # no gap over 5% of the run


def job(phase="Running", step=None, loss=None, metrics=None, **status):
    wire = {"metadata": {"name": "sw-0"}, "spec": {"command": ["x"]},
            "status": {"phase": phase, **status}}
    if step is not None or loss is not None or metrics:
        wire["status"]["progress"] = {"step": step, "loss": loss, "metrics": metrics or {}}
    return TrainingJob.model_validate(wire)


def test_observe_maps_phases_and_objective():
    start = TrialStatus(name="sw-0", parameters={"lr": "0.1"})
    running = observe(start, job("Running", 10, 2.0), 2.0, "minimize")
    assert (running.phase, running.step, running.objective, running.best_objective, running.history) == \
        ("Running", 10, 2.0, 2.0, [(10, 2.0)])
    later = observe(running, job("Running", 20, 2.5), 2.5, "minimize")
    assert (later.objective, later.best_objective, later.history) == (2.5, 2.0, [(10, 2.0), (20, 2.5)])
    assert observe(later, job("Running", 25), None, "minimize").history == later.history  # no objective: no point
    restarting = observe(later, job("Restarting", 20, restarts=1), None, "minimize")
    assert (restarting.phase, restarting.reason) == ("Running", "Restarting")
    failed = observe(later, job("Failed", conditions=[{"type": "Failed", "status": "True",
                                                        "reason": "RestartLimitExceeded", "message": "boom"}]),
                     None, "minimize")
    assert (failed.phase, failed.reason, failed.message) == ("Failed", "RestartLimitExceeded", "boom")
    gone = observe(later, None, None, "minimize")
    assert (gone.phase, gone.reason) == ("Failed", "TrialDeleted")
    done = observe(later, job("Succeeded", 30, 1.5), 1.5, "minimize")
    assert done.phase == "Succeeded" and done.objective == 1.5
    assert observe(done, None, None, "minimize") == done  # finished rows never change
