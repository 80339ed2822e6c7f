"""The progress line of docs/contracts.md: `SHIPYARD_PROGRESS {json}`, printed by global rank 0 only.

A line on stdout rather than an API call, so a workload needs nothing of Shipyard (this module imports only
the standard library) and the controller reads it from the log on every runtime. Non-finite numbers are
dropped: `NaN` is not JSON, and a parser in another language would reject the whole line.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import TextIO

PREFIX = "SHIPYARD_PROGRESS "


def _is_main_rank() -> bool:
    # RANK is set by torchrun and by the platform for plain processes; a lone `python script.py` is rank 0.
    try:
        return int(os.environ.get("RANK", "0") or "0") == 0
    except ValueError:
        return True


def format_line(step: int, total_steps: int, loss: float | None = None,
                tokens_per_second: float | None = None, **metrics: float) -> str:
    """The line without printing it (for tests and for writers other than stdout)."""
    fields: dict[str, float | int] = {"step": int(step), "total_steps": int(total_steps)}
    for key, value in {"loss": loss, "tokens_per_second": tokens_per_second, **metrics}.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # The controller keeps numeric keys only; anything else is a bug in the caller, say so early.
            raise TypeError(f"progress metric {key!r} must be a number, got {type(value).__name__}")
        if not math.isfinite(value):
            continue
        fields[key] = value if isinstance(value, int) else round(float(value), 6)
    return PREFIX + json.dumps(fields, separators=(", ", ": "))


def report(step: int, total_steps: int, loss: float | None = None, tokens_per_second: float | None = None,
           *, stream: TextIO | None = None, **metrics: float) -> str | None:
    """Print exactly one progress line, flushed, on global rank 0; returns it (None on other ranks)."""
    if not _is_main_rank():
        return None
    line = format_line(step, total_steps, loss, tokens_per_second, **metrics)
    out = stream if stream is not None else sys.stdout
    # One write of the whole line: a concurrent print from another thread cannot split it.
    out.write(line + "\n")
    out.flush()
    return line
