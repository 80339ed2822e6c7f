"""The progress contract: rank 0 prints lines `SHIPYARD_PROGRESS {json}` to stdout or stderr.

Chosen over an SDK call or a side file because any script in any language can print a line, and logs are
readable on every runtime (a file locally, the pods/log API on a cluster). Keys: step, total_steps, loss,
tokens_per_second; any other numeric key is kept as a metric. Malformed lines are ignored, never fatal.
"""

from __future__ import annotations

import json
import math
from typing import Any

PREFIX = "SHIPYARD_PROGRESS "
_ALIASES = {"totalSteps": "total_steps", "tokensPerSecond": "tokens_per_second"}


def parse_line(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line.startswith(PREFIX):
        return None
    try:
        data = json.loads(line[len(PREFIX):])
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    out: dict[str, Any] = {"metrics": {}}
    for key, value in data.items():
        key = _ALIASES.get(key, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        if key in ("step", "total_steps"):
            out[key] = int(value)
        elif key in ("loss", "tokens_per_second"):
            out[key] = float(value)
        else:
            out["metrics"][key] = float(value)
    return out if len(out) > 1 or out["metrics"] else None


def last_progress(text: str) -> dict[str, Any] | None:
    """The newest valid progress line in a chunk of log text (normally its tail), with `metrics` holding the
    newest value of every metric seen in the chunk: evaluations (eval_loss, exact_match) are printed every N
    steps, and a sweep judging trials by one must still see it after later training lines."""
    newest: dict[str, Any] | None = None
    for line in reversed(text.splitlines()):
        parsed = parse_line(line)
        if parsed is None:
            continue
        if newest is None:
            newest = parsed
        else:
            for key, value in parsed["metrics"].items():
                newest["metrics"].setdefault(key, value)
    return newest
