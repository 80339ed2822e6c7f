"""Plain coercion of the CLI's options (str, bool, int, float, lists of str), without pydantic.

Why: typer (0.2x) converts every option through a pydantic TypeAdapter, and importing pydantic for that costs
a `shipyard get` more CPU than everything else it does. Shipyard's verbs only take strings, numbers with
bounds and lists of strings, so those are converted here, with the same messages typer gives; anything else
(or a typer without this seam) keeps typer's own conversion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

try:  # typer's private seam; when it moves, the CLI simply keeps typer's conversion
    from typer._click.exceptions import BadParameter
    from typer._coercion import RuntimeParam
    from typer.core import _TyperParameter
except ImportError:  # pragma: no cover - depends on the installed typer
    RuntimeParam = _TyperParameter = None  # type: ignore[assignment,misc]

_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}

_WORDS = {int: ("a valid integer", "unable to parse string as an integer"),
          float: ("a valid number", "unable to parse string as a number")}


def _number(kind: type, value: Any, info: Any) -> Any:
    if isinstance(value, kind) and not isinstance(value, bool):
        number = value
    else:
        try:
            number = kind(str(value).strip())
        except ValueError:
            what, why = _WORDS[kind]
            raise BadParameter(f"Input should be {what}, {why}") from None
    low, high = info.min, info.max
    if info.clamp:
        return kind(max(low, number) if low is not None else number) if high is None else \
            kind(min(high, max(low, number) if low is not None else number))
    if low is not None and number < low:
        raise BadParameter(f"Input should be greater than or equal to {low}")
    if high is not None and number > high:
        raise BadParameter(f"Input should be less than or equal to {high}")
    return number


if RuntimeParam is not None:
    @dataclass(frozen=True)
    class PlainParam(RuntimeParam):  # type: ignore[misc,valid-type]
        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            annotation = self.annotation
            try:
                if annotation is str:
                    return str(value)
                if annotation is bool:
                    return _boolean(value)
                if annotation == list[str]:
                    return [str(v) for v in value]
                return _number(annotation, value, self.parameter_info)
            except BadParameter as exc:
                exc.ctx, exc.param = ctx, param
                raise


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise BadParameter("Input should be a valid boolean, unable to interpret input")


PLAIN = (str, bool, int, float, list[str])


def install() -> None:
    """Make typer convert parameters of the plain types above here; once per process, idempotent."""
    if _TyperParameter is None or getattr(_TyperParameter, "_shipyard_plain", False) \
            or not hasattr(_TyperParameter, "get_runtime_param"):
        return
    original = _TyperParameter.get_runtime_param

    def get_runtime_param(self: Any) -> Any:
        desc = getattr(self, "type_descriptor", None)
        if getattr(self, "_runtime_param", None) is None and desc is not None \
                and desc.annotation in PLAIN and desc.file_annotation is None:
            self._runtime_param = PlainParam(parameter_info=desc.parameter_info, annotation=desc.annotation)
        return original(self)

    _TyperParameter.get_runtime_param = get_runtime_param
    _TyperParameter._shipyard_plain = True
