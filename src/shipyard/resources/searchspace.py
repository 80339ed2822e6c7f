"""A Sweep's search space: parameters, the values a grid visits, and `${name}` placeholders in a trial.

These live with the resources (not with the Sweep controller) because apply-time validation needs them: the
default `maxTrials` of a grid is its size, and a trial template must be checked against the parameters it
names before anything runs. Everything here is pure and deterministic, so the controller regenerates the same
values after a restart.

Values are strings by the time they reach a trial: command-line flags and env values are text, and a short
text (`0.001`, not `0.0010000000000000002`) is what people read in tables and in MLflow.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import FieldError, Model

ParameterType = Literal["categorical", "uniform", "logUniform", "int"]
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Names the platform fills in for every trial; a parameter may not shadow them.
BUILTIN_PLACEHOLDERS = ("trial", "sweep")
# `${name}`, or `$${name}` for a literal `${name}` (a shell variable in `bash -c` args, say).
PLACEHOLDER = re.compile(r"\$(\$?)\{([^{}]*)\}")
# Where placeholders are substituted: the fields that carry a trial's hyperparameters to its program.
SUBSTITUTED_FIELDS = ("command", "args", "env", "workingDir")
GRID_DIGITS = 6  # significant digits of a grid point: enough to tell points apart, short enough to read
RANDOM_DIGITS = 4  # a random draw needs no more precision than the noise between trials


def format_value(value: Any, digits: int = GRID_DIGITS) -> str:
    """The short text of a parameter value: ints as they are, floats to `digits` significant digits."""
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    return f"{float(value):.{digits}g}"


class Parameter(Model):
    """One searched hyperparameter. One model for all types (not a tagged union) so that errors name
    `parameters[i].max` rather than a union branch."""

    name: str
    type: ParameterType
    values: list[str | int | float] | None = None
    min: int | float | None = None
    max: int | float | None = None
    step: int | None = Field(default=None, ge=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not IDENTIFIER.match(v):
            raise ValueError(f"{v!r} must be an identifier (letters, digits, '_'; not starting with a digit), "
                             "as it is written ${name} in the trial")
        if v in BUILTIN_PLACEHOLDERS:
            raise ValueError(f"{v!r} is reserved: ${{{v}}} is filled in by Shipyard")
        return v

    @field_validator("values", mode="before")
    @classmethod
    def _no_bools(cls, v: Any) -> Any:
        # YAML's `yes`/`true` would otherwise become 1 silently.
        if isinstance(v, list):
            for i, item in enumerate(v):
                if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                    raise FieldError(f"[{i}]", f"{item!r} must be a string or a number")
        return v

    @model_validator(mode="after")
    def _by_type(self) -> "Parameter":
        if self.type == "categorical":
            if self.values is None:
                raise FieldError("values", "required for a categorical parameter (a non-empty list)")
            if not self.values:
                raise FieldError("values", "must not be empty: a categorical parameter needs at least one value")
            for field in ("min", "max", "step"):
                if getattr(self, field) is not None:
                    raise FieldError(field, f"only for range parameters (uniform, logUniform, int), not {self.type}")
            seen: dict[str, int] = {}
            for i, text in enumerate(format_value(v) for v in self.values):
                if text in seen:
                    raise FieldError(f"values[{i}]", f"{text!r} is also values[{seen[text]}]")
                seen[text] = i
            return self
        if self.values is not None:
            raise FieldError("values", f"only for categorical parameters, not {self.type} (give min and max)")
        for field in ("min", "max"):
            if getattr(self, field) is None:
                raise FieldError(field, f"required for a {self.type} parameter")
        low, high = self.min, self.max
        assert low is not None and high is not None
        if not (math.isfinite(low) and math.isfinite(high)):
            raise FieldError("min", "min and max must be finite numbers")
        if self.type == "int":
            for field in ("min", "max"):
                value = getattr(self, field)
                if not float(value).is_integer():
                    raise FieldError(field, f"{value} must be a whole number for an int parameter")
                setattr(self, field, int(value))
            if low > high:
                raise FieldError("max", f"{self.max} must be at least min ({self.min})")
            return self
        if self.step is not None:
            raise FieldError("step", f"only for int parameters, not {self.type}")
        self.min, self.max = float(low), float(high)
        if self.type == "logUniform" and low <= 0:
            raise FieldError("min", f"{low:g} must be greater than 0 for a logUniform parameter")
        if low >= high:
            raise FieldError("max", f"{high:g} must be greater than min ({low:g})")
        return self

    def grid_values(self, points: int) -> list[str]:
        """The values a grid search visits, in order, without duplicates: every categorical value; `points`
        evenly spaced values of a uniform range (log-spaced for logUniform), ends included; every `step`-th
        integer of an int range, or `points` evenly spaced integers when no step is given."""
        if self.type == "categorical":
            return [format_value(v) for v in self.values or []]
        low, high = self.min, self.max
        assert low is not None and high is not None
        if self.type == "int":
            low, high = int(low), int(high)
            if self.step is not None:
                raw: list[Any] = list(range(low, high + 1, self.step))
            elif high - low + 1 <= points:
                raw = list(range(low, high + 1))
            else:
                raw = [round(low + (high - low) * k / (points - 1)) for k in range(points)]
        elif self.type == "logUniform":
            a, b = math.log(low), math.log(high)
            raw = [math.exp(a + (b - a) * k / (points - 1)) for k in range(points)]
        else:
            raw = [low + (high - low) * k / (points - 1) for k in range(points)]
        return list(dict.fromkeys(format_value(v) for v in raw))

    def summary(self) -> str:
        if self.type == "categorical":
            return f"categorical[{', '.join(format_value(v) for v in self.values or [])}]"
        step = f" step {self.step}" if self.step is not None else ""
        return f"{self.type}[{format_value(self.min)}, {format_value(self.max)}]{step}"


# --- placeholders ---------------------------------------------------------------------------------------

def placeholder_names(text: str) -> list[str]:
    """The names `${name}` in text, in order (escaped `$${name}` excluded)."""
    return [m.group(2) for m in PLACEHOLDER.finditer(text) if not m.group(1)]


def substitute_text(text: str, values: dict[str, str]) -> str:
    """Replace `${name}` by values[name] and `$${name}` by a literal `${name}`; unknown names stay as they are
    (validation refuses them before any trial is made)."""
    def repl(m: re.Match[str]) -> str:
        if m.group(1):
            return "${" + m.group(2) + "}"
        return values.get(m.group(2), m.group(0))
    return PLACEHOLDER.sub(repl, text)


def _strings(node: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(node, str):
        return [(path, node)]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in _strings(v, f"{path}.{k}" if path else k)]
    if isinstance(node, list):
        return [s for i, v in enumerate(node) for s in _strings(v, f"{path}[{i}]")]
    return []


def substitutable_strings(trial: dict[str, Any]) -> list[tuple[str, str]]:
    """(field path, text) of every string of a trial spec (wire form) where placeholders are substituted."""
    out: list[tuple[str, str]] = []
    for field in SUBSTITUTED_FIELDS:
        if field == "env":
            out += [(f"env[{i}].value", e["value"]) for i, e in enumerate(trial.get("env") or []) if "value" in e]
        elif trial.get(field) is not None:
            out += _strings(trial[field], field)
    return out


def stray_placeholders(trial: dict[str, Any]) -> list[tuple[str, str]]:
    """(field path, text) of strings outside the substituted fields that look like placeholders."""
    substituted = {path for path, _ in substitutable_strings(trial)}
    return [(path, text) for path, text in _strings(trial, "")
            if path not in substituted and placeholder_names(text)]


def substitute_trial(trial: dict[str, Any], values: dict[str, str]) -> dict[str, Any]:
    """A copy of a trial spec (wire form) with placeholders replaced in command, args, env values, workingDir."""
    out = dict(trial)
    for field in ("command", "args"):
        if out.get(field) is not None:
            out[field] = [substitute_text(a, values) for a in out[field]]
    if out.get("env"):
        # An entry taking its value from a Secret (valueFrom) has no value to substitute, and must not get one.
        out["env"] = [{**e, "value": substitute_text(e["value"], values)} if "value" in e else e
                      for e in out["env"]]
    if out.get("workingDir") is not None:
        out["workingDir"] = substitute_text(out["workingDir"], values)
    return out
