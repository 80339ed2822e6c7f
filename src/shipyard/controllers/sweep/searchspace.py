"""Which parameter values trial i gets: a pure function of the spec and i, nothing else.

Because an assignment depends only on (spec, index), a restarted controller, or a second replica of it,
regenerates exactly the trials it made before; no list of drawn values has to be stored anywhere.

Grid: the cartesian product of every parameter's grid values, parameters in declaration order, the last one
varying fastest (as itertools.product), trial i being the product's i-th point; `maxTrials` below the grid's
size takes its first points. Random: each value is drawn from a generator seeded with (seed, i, name), so
adding a parameter does not change the values the others get.
"""

from __future__ import annotations

import math
import random

from shipyard.resources.searchspace import RANDOM_DIGITS, Parameter, format_value
from shipyard.resources.sweep import SweepSpec


def assignment(spec: SweepSpec, index: int) -> dict[str, str]:
    """The parameter values (as the text substituted into the trial) of trial `index` (0-based)."""
    if spec.algorithm.type == "random":
        return {p.name: sample(p, spec.algorithm.seed, index) for p in spec.parameters}
    return grid_point(spec.parameters, spec.algorithm.grid_points, index)


def grid_point(parameters: list[Parameter], points: int, index: int) -> dict[str, str]:
    axes = [p.grid_values(points) for p in parameters]
    size = math.prod(len(a) for a in axes)
    if not 0 <= index < size:
        raise IndexError(f"grid point {index} outside a grid of {size}")
    out: dict[str, str] = {}
    for param, axis in zip(reversed(parameters), reversed(axes)):
        index, position = divmod(index, len(axis))
        out[param.name] = axis[position]
    return {p.name: out[p.name] for p in parameters}


def sample(param: Parameter, seed: int, index: int) -> str:
    # A string seed is hashed with SHA-512 by `random`, the same on every machine and Python run.
    rng = random.Random(f"shipyard-sweep:{seed}:{index}:{param.name}")
    if param.type == "categorical":
        return format_value(rng.choice(param.values or []))
    low, high = param.min, param.max
    assert low is not None and high is not None
    if param.type == "int":
        step = param.step or 1
        return str(int(low) + step * rng.randrange((int(high) - int(low)) // step + 1))
    if param.type == "logUniform":
        return format_value(math.exp(rng.uniform(math.log(low), math.log(high))), RANDOM_DIGITS)
    return format_value(rng.uniform(low, high), RANDOM_DIGITS)


def summary(spec: SweepSpec) -> dict[str, str]:
    """The search space as flat text, for the sweep's MLflow run parameters (values capped at 250 chars)."""
    out = {
        "algorithm": spec.algorithm.type,
        "objective": f"{spec.objective.goal} {spec.objective.metric}",
        "maxTrials": str(spec.max_trials),
        "parallelism": str(spec.parallelism),
        "maxFailedTrials": str(spec.max_failed_trials),
    }
    if spec.algorithm.type == "random":
        out["seed"] = str(spec.algorithm.seed)
    else:
        out["gridPoints"] = str(spec.algorithm.grid_points)
    if spec.early_stopping is not None:
        es = spec.early_stopping
        out["earlyStopping"] = f"{es.rule} (minSteps {es.min_steps}, minTrials {es.min_trials})"
    for p in spec.parameters:
        out[f"param.{p.name}"] = p.summary()[:250]
    return out
