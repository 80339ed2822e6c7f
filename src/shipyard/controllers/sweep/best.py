"""The best trial: the best final objective by the goal among succeeded trials; ties go to the earliest trial.

The final (latest) value is compared, not the best value seen along the way, because the files a trial leaves,
which get registered, are those of its end, not of its best intermediate step.
"""

from __future__ import annotations

from typing import Literal

from shipyard.resources.sweep import TrialStatus

Goal = Literal["minimize", "maximize"]


def better(a: float, b: float, goal: Goal) -> bool:
    """Whether a is strictly better than b."""
    return a > b if goal == "maximize" else a < b


def best_trial(trials: list[TrialStatus], goal: Goal) -> TrialStatus | None:
    """`trials` in creation order; only succeeded trials that reported the objective compete."""
    best: TrialStatus | None = None
    for trial in trials:
        if trial.phase != "Succeeded" or trial.objective is None:
            continue
        if best is None or better(trial.objective, best.objective, goal):  # type: ignore[arg-type]
            best = trial
    return best


def best_value(values: list[float], goal: Goal) -> float | None:
    if not values:
        return None
    return max(values) if goal == "maximize" else min(values)
