"""The median stopping rule (Golovin et al., "Google Vizier", KDD 2017; Katib's `medianstop`).

At step s, a running trial is stopped if its best objective so far is strictly worse than the median of the
running averages of the completed trials' objectives up to step s. It needs no model of the learning curve
and never stops a trial that is at least as good as a typical completed one, so it is safe by default.

Pure: histories in, a decision out. `min_steps` keeps early, noisy steps from being judged; `min_trials` is
how many completed trials must have reported by step s before the median means anything.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Literal, Sequence

Goal = Literal["minimize", "maximize"]
History = Sequence[tuple[int, float]]  # (step, value), oldest first


@dataclass(frozen=True)
class Verdict:
    step: int
    best: float
    median: float
    trials: int  # completed trials the median was taken over

    @property
    def message(self) -> str:
        return (f"best objective {self.best:.4g} by step {self.step} is worse than {self.median:.4g}, the median "
                f"of {self.trials} completed trials' running averages up to that step")


def running_average(history: History, step: int) -> float | None:
    values = [v for s, v in history if s <= step]
    return sum(values) / len(values) if values else None


def should_stop(history: History, completed: Sequence[History], goal: Goal, min_steps: int = 0,
                min_trials: int = 2) -> Verdict | None:
    """A Verdict if the running trial with `history` should stop now, else None."""
    if not history:
        return None
    step = history[-1][0]
    if step < min_steps:
        return None
    averages = [a for h in completed if (a := running_average(h, step)) is not None]
    if len(averages) < max(min_trials, 1):
        return None
    values = [v for _, v in history]
    best = max(values) if goal == "maximize" else min(values)
    median = statistics.median(averages)
    worse = best < median if goal == "maximize" else best > median
    return Verdict(step, best, median, len(averages)) if worse else None
