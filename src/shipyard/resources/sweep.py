"""Kind Sweep: a hyperparameter search whose trials are TrainingJobs, run `parallelism` at a time.

`trial` is a TrainingJob spec whose command, args, env values and workingDir may say `${param}` (and
`${trial}`, `${sweep}`); `parameters` span the search space; `objective` names a metric of the progress
contract. Everything that can be known before a trial runs is checked here, at apply time, with the field
path: a typo in a placeholder or an empty list would otherwise surface as N failed trials.

Failures follow Katib: `maxFailedTrials` is how many failed trials the sweep tolerates; one more fails it.
The default, 0, fails the sweep on the first failure, because a trial that crashes (a bad flag, a missing
file) usually crashes in every trial, and finding out after one costs one trial, not all of them.

The spec is immutable (delete and apply again): trials already run were drawn from the old search space, and
a best trial across two spaces would compare different experiments.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError, model_validator

from .base import FieldError, Model, Resource, Status, format_loc
from .searchspace import (
    BUILTIN_PLACEHOLDERS,
    Parameter,
    placeholder_names,
    stray_placeholders,
    substitutable_strings,
    substitute_text,
    substitute_trial,
)
from .trainingjob import TrainingJob, TrainingJobSpec

# The status lists every trial with its objective history, and the whole object must fit in one etcd
# object (1.5 MiB) on a cluster: 200 trials of 100 points stay well below.
MAX_TRIALS = 200
HISTORY_POINTS = 100
TRIAL_NAME_LIMIT = 52  # a TrainingJob's (its pods are NAME-INDEX)
_METRIC = r"^[A-Za-z_][A-Za-z0-9_.\-]*$"
_MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"


class Algorithm(Model):
    # Bayesian optimisation is left out: done well it needs a Gaussian-process library and warm-up logic,
    # and with 4 to 20 trials grid and random search are as good in practice.
    type: Literal["grid", "random"] = "grid"
    seed: int = 0
    # How many values a grid takes from each continuous range (ends included; log-spaced for logUniform).
    grid_points: int = Field(default=3, ge=2, le=100)


class Objective(Model):
    # A key of the progress contract: loss, tokens_per_second, or any extra numeric key (exact_match, eval_loss).
    metric: str = Field(pattern=_METRIC, max_length=128)
    goal: Literal["minimize", "maximize"]


class EarlyStopping(Model):
    """The median stopping rule (Google Vizier, Katib): stop a running trial whose best objective so far is
    worse than the median of the completed trials' running averages at the same step."""

    rule: Literal["median"] = "median"
    min_steps: int = Field(default=0, ge=0)  # a trial is never judged before it reports this step
    min_trials: int = Field(default=2, ge=1, le=MAX_TRIALS)  # completed trials needed before anyone is judged


class Register(Model):
    """Register the best trial's files as a new version of an MLflow registered model when the sweep succeeds."""

    model: str = Field(pattern=_MODEL_NAME)
    volume: str  # one of trial.volumes
    path: str  # inside that volume (not under its mountPath), with ${trial}: /sweep/${trial}/merged
    alias: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")


class SweepSpec(Model):
    trial: TrainingJobSpec
    parameters: list[Parameter] = Field(min_length=1, max_length=32)
    algorithm: Algorithm = Field(default_factory=Algorithm)
    objective: Objective
    # Grid: defaults to the grid's size (and may not exceed it). Random: required.
    max_trials: int | None = Field(default=None, ge=1, le=MAX_TRIALS)
    parallelism: int = Field(default=1, ge=1, le=MAX_TRIALS)
    max_failed_trials: int = Field(default=0, ge=0, le=MAX_TRIALS)
    early_stopping: EarlyStopping | None = None
    # `register` on the wire; another Python name because pydantic models inherit ABCMeta.register.
    registration: Register | None = Field(default=None, alias="register")

    def grid_size(self) -> int:
        return math.prod(len(p.grid_values(self.algorithm.grid_points)) for p in self.parameters)

    def first_values(self) -> dict[str, str]:
        """Each parameter at its first grid point: a valid assignment, used to check the trial template."""
        return {p.name: p.grid_values(self.algorithm.grid_points)[0] for p in self.parameters}

    @model_validator(mode="after")
    def _search_space(self) -> "SweepSpec":
        names = [p.name for p in self.parameters]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise FieldError(f"parameters[{i}].name", f"{name!r} is also parameters[{names.index(name)}]")
        self._check_trials()
        self._check_placeholders(names)
        self._check_register(names)
        self._check_substituted()
        return self

    def _check_trials(self) -> None:
        if self.algorithm.type == "random":
            if self.max_trials is None:
                raise FieldError("maxTrials", "required for random search (how many trials to draw)")
            return
        size = self.grid_size()
        dims = " × ".join(str(len(p.grid_values(self.algorithm.grid_points))) for p in self.parameters)
        if self.max_trials is None:
            if size > MAX_TRIALS:
                raise FieldError("maxTrials", f"the grid has {size} points ({dims}), more than a sweep may run "
                                              f"({MAX_TRIALS}); set maxTrials or narrow the grid")
            self.max_trials = size
        elif self.max_trials > size:
            raise FieldError("maxTrials", f"{self.max_trials} exceeds the grid's {size} points ({dims}); "
                                          "lower it or leave it out")

    def _check_placeholders(self, names: list[str]) -> None:
        known = set(names) | set(BUILTIN_PLACEHOLDERS)
        trial = self.trial.to_wire()
        used: set[str] = set()
        for path, text in substitutable_strings(trial):
            for name in placeholder_names(text):
                if name not in known:
                    raise FieldError(f"trial.{path}", f"unknown placeholder ${{{name}}}; parameters are "
                                     f"{', '.join(names)} (also ${{trial}}, ${{sweep}}; $${{{name}}} is a literal)")
                used.add(name)
        for path, _ in stray_placeholders(trial):
            raise FieldError(f"trial.{path}", "placeholders are substituted only in command, args, env values "
                                              "and workingDir")
        for i, name in enumerate(names):
            if name not in used:
                raise FieldError(f"parameters[{i}].name", f"${{{name}}} appears nowhere in the trial's command, "
                                 "args, env values or workingDir, so every trial would run the same")

    def _check_register(self, names: list[str]) -> None:
        if self.registration is None:
            return
        volumes = [v.name for v in self.trial.volumes if v.persistent]  # a secret volume holds no model
        if self.registration.volume not in volumes:
            raise FieldError("register.volume", f"{self.registration.volume!r} is not among trial.volumes "
                                                f"({', '.join(volumes) or 'none'})")
        path = self.registration.path
        if not path.startswith("/") or ".." in path.split("/"):
            raise FieldError("register.path", f"{path!r} must be an absolute path inside the volume, without '..'")
        if "trial" not in placeholder_names(path):
            raise FieldError("register.path", f"{path!r} must contain ${{trial}}: every trial writes its own files, "
                                              "and the best trial's are registered")
        for name in placeholder_names(path):
            if name not in names and name not in BUILTIN_PLACEHOLDERS:
                raise FieldError("register.path", f"unknown placeholder ${{{name}}}")

    def _check_substituted(self) -> None:
        values = {**self.first_values(), "trial": "sweep-0", "sweep": "sweep"}
        try:
            TrainingJobSpec.model_validate(substitute_trial(self.trial.to_wire(), values))
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            raise FieldError(f"trial.{format_loc(tuple(err['loc']))}",
                             f"invalid once placeholders are filled in: {err['msg']}") from None

    def register_path(self, trial: str, sweep: str, parameters: dict[str, str]) -> str:
        assert self.registration is not None
        return substitute_text(self.registration.path, {**parameters, "trial": trial, "sweep": sweep})


SweepPhase = Literal["Pending", "Running", "Succeeded", "Failed"]
# Stopped: ended by the sweep (early stopping, or the sweep failing), not by the trial's own failure.
TrialPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Stopped"]
TRIAL_DONE = ("Succeeded", "Failed", "Stopped")


class TrialStatus(Model):
    name: str
    parameters: dict[str, str]
    phase: TrialPhase = "Pending"
    objective: float | None = None  # the latest value reported
    best_objective: float | None = None  # the best value reported, by the goal
    step: int | None = None
    # [step, value] of the objective, oldest first; thinned to points evenly spread over the steps when it
    # outgrows HISTORY_POINTS, so it always spans the whole run (the median rule compares trials at equal steps).
    history: list[tuple[int, float]] = Field(default_factory=list)
    reason: str | None = None
    message: str | None = None
    mlflow_run_id: str | None = None

    @property
    def done(self) -> bool:
        return self.phase in TRIAL_DONE


class BestTrial(Model):
    name: str
    parameters: dict[str, str]
    objective: float


class RegisteredModel(Model):
    name: str
    version: int


class SweepStatus(Status):
    phase: SweepPhase = "Pending"
    trials: list[TrialStatus] = Field(default_factory=list)
    best_trial: BestTrial | None = None
    trials_succeeded: int = 0
    trials_failed: int = 0
    trials_stopped: int = 0
    trials_running: int = 0
    registered_model: RegisteredModel | None = None
    mlflow_run_id: str | None = None
    start_time: datetime | None = None
    completion_time: datetime | None = None

    def trial(self, name: str) -> TrialStatus | None:
        return next((t for t in self.trials if t.name == name), None)


class Sweep(Resource):
    KIND: ClassVar[str] = "Sweep"
    PLURAL: ClassVar[str] = "sweeps"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("sw", "sweep")
    SPEC_IMMUTABLE: ClassVar[bool] = True

    kind: Literal["Sweep"] = "Sweep"
    spec: SweepSpec
    status: SweepStatus = Field(default_factory=SweepStatus)

    @model_validator(mode="after")
    def _trial_names_fit(self) -> "Sweep":
        longest = f"{self.metadata.name}-{self.total_trials - 1}"
        if len(longest) > TRIAL_NAME_LIMIT:
            raise FieldError("metadata.name", f"too long: trials are named NAME-INDEX ({longest!r}) and a "
                                              f"TrainingJob name may have at most {TRIAL_NAME_LIMIT} characters")
        return self

    @property
    def total_trials(self) -> int:
        return self.spec.max_trials or 0  # set by validation for grids, required for random search

    @property
    def finished(self) -> bool:
        return self.status.phase in ("Succeeded", "Failed")

    def trial_name(self, index: int) -> str:
        return f"{self.metadata.name}-{index}"

    def objective_of(self, trial: TrainingJob) -> float | None:
        """The objective in a trial's latest progress line, if that line carries it."""
        progress = trial.status.progress
        if progress is None:
            return None
        metric = self.spec.objective.metric
        if metric in ("loss", "tokens_per_second"):
            value: Any = getattr(progress, metric)
        else:
            value = progress.metrics.get(metric)
        return None if value is None else float(value)
