"""A trial's row in the Sweep's status, derived from its TrainingJob: phase, objective and its history.

Pure: the row before and the TrainingJob now in, the row after out. The row's MLflow run id is not copied
here: the controller records it once the run is nested under the sweep's (see controller.py). The history is what the median rule
compares, so it must survive restarts of the trial: a gang restart resumes from a checkpoint and reports
steps again, and those later reports replace the ones they repeat instead of piling up after them.
"""

from __future__ import annotations

from typing import Literal

from shipyard.resources import TrainingJob
from shipyard.resources.sweep import HISTORY_POINTS, TrialStatus

from .best import best_value

Goal = Literal["minimize", "maximize"]


def record_point(history: list[tuple[int, float]], step: int, value: float,
                 limit: int = HISTORY_POINTS) -> list[tuple[int, float]]:
    """History with (step, value) added: it replaces any point at or after `step` (re-reported after a restart),
    and when the history outgrows `limit` it is thinned to half as many points evenly spread over the steps, so
    it always spans the whole run."""
    out = [p for p in history if p[0] < step]
    if history and history[-1] == (step, value) and len(out) == len(history) - 1:
        return list(history)
    out.append((step, value))
    if len(out) > limit:
        out = thin(out, limit // 2)
    return out


def thin(history: list[tuple[int, float]], points: int) -> list[tuple[int, float]]:
    """About `points` points evenly spread over the steps, keeping the first and the last."""
    gap = (history[-1][0] - history[0][0]) / max(points, 1)
    kept = [history[0]]
    for point in history[1:-1]:
        if point[0] - kept[-1][0] >= gap:
            kept.append(point)
    return kept + [history[-1]]


def observe(row: TrialStatus, job: TrainingJob | None, objective: float | None, goal: Goal) -> TrialStatus:
    """The row after looking at the trial's TrainingJob (None: it is gone). Finished rows never change."""
    if row.done:
        return row
    row = row.model_copy(deep=True)
    if job is None or job.metadata.deletion_timestamp is not None:
        # Only someone else deletes an unfinished trial: the sweep marks a trial Stopped before deleting it.
        row.phase, row.reason = "Failed", "TrialDeleted"
        row.message = "its TrainingJob was deleted before it finished"
        return row
    progress = job.status.progress
    if progress is not None and progress.step is not None:
        row.step = progress.step
    if objective is not None:
        step = progress.step if progress is not None and progress.step is not None else (row.step or 0)
        row.history = record_point(row.history, step, objective)
        row.objective = objective
        row.best_objective = best_value([v for v in (row.best_objective, objective) if v is not None], goal)
    phase = job.status.phase
    if phase in ("Running", "Restarting"):
        row.phase = "Running"
        row.reason = "Restarting" if phase == "Restarting" else None
        row.message = f"restart {job.status.restarts}" if phase == "Restarting" else None
    elif phase == "Succeeded":
        row.phase, row.reason, row.message = "Succeeded", None, None
    elif phase == "Failed":
        failed = job.status.condition("Failed")
        row.phase = "Failed"
        row.reason = (failed.reason if failed else None) or "TrialFailed"
        row.message = (failed.message if failed else None) or "its TrainingJob failed"
    return row
