"""Metric histories from the progress contract: every `SHIPYARD_PROGRESS` line of rank 0, read once, in order.

`status.progress` needs only the newest line, so it reads a tail; a history needs every line, so this reads
each pod's log from where the last read stopped (a byte offset per pod) and only up to the last complete
line — a line still being written is read on the next pass. A gang restart brings new pods (new names, new
logs, offsets from zero); a pod that has left the runtime gets one last read of whatever its log still holds
(the local runtime keeps logs; on a cluster the read comes back empty) and is then forgotten.
Pure apart from the `read` function it is given, so partial lines and restarts are table-tested.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..tracking import Metric
from .progress import parse_line
from .replicas import COMPLETION_INDEX

# Per pod and pass. A backlog (a daemon restarted mid-job, a tracker that was down) is caught up over a few
# passes instead of one long stall of a controller worker.
MAX_READ_BYTES = 256 * 1024
TERMINAL_PHASES = ("Succeeded", "Failed")
# Progress keys that describe the run's position, not a measurement.
_NOT_METRICS = ("step", "total_steps", "metrics")

ReadRange = Callable[[str, int, int], bytes]  # (pod, offset, max_bytes) → bytes


@dataclass
class Batch:
    metrics: list[Metric] = field(default_factory=list)
    # Offsets after this batch; pods that have left and have nothing more are no longer in it.
    offsets: dict[str, int] = field(default_factory=dict)
    more: bool = False  # a read came back full: there may be more right away


def rank0_pods(pods: list[dict[str, Any]]) -> tuple[list[str], set[str]]:
    """Names of the rank-0 pods of every attempt, oldest first, and those of them that have terminated
    (their logs are complete, so a last line without a newline counts)."""
    rank0 = [p for p in pods if p["metadata"].get("annotations", {}).get(COMPLETION_INDEX) == "0"]
    rank0.sort(key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))
    done = {p["metadata"]["name"] for p in rank0 if p.get("status", {}).get("phase") in TERMINAL_PHASES}
    return [p["metadata"]["name"] for p in rank0], done


def metrics_of(text: str, timestamp_ms: int) -> list[Metric]:
    """Every numeric field of every progress line, at that line's step. A line without a step takes the
    previous line's (0 before any), so a script that reports, say, eval_loss on its own line still lands
    beside the training step it belongs to."""
    out: list[Metric] = []
    step = 0
    for line in text.splitlines():
        parsed = parse_line(line)
        if parsed is None:
            continue
        step = parsed.get("step", step)
        values = {k: v for k, v in parsed.items() if k not in _NOT_METRICS}
        values.update(parsed["metrics"])
        out.extend(Metric(key, float(value), step, timestamp_ms) for key, value in values.items())
    return out


def read_new(read: ReadRange, pods: list[str], finished: set[str], offsets: dict[str, int], timestamp_ms: int,
             max_bytes: int | None = None) -> Batch:
    """What is new in the logs of `pods` (oldest first) since `offsets`. Pods in `offsets` but no longer in
    `pods` have left the runtime: they come first (they are older than any live pod) and are read to the end."""
    max_bytes = max_bytes or MAX_READ_BYTES
    batch = Batch()
    departed = [p for p in offsets if p not in pods]
    for pod in departed + pods:
        start = offsets.get(pod, 0)
        data = read(pod, start, max_bytes)
        batch.more = batch.more or len(data) >= max_bytes
        complete = pod in departed or pod in finished
        end = data.rfind(b"\n") + 1
        if complete and len(data) < max_bytes:
            end = len(data)  # the process has exited: its last line is whole even without a newline
        elif end == 0 and len(data) >= max_bytes:
            end = len(data)  # one line longer than a read is no progress line: step over it
        if end:
            batch.metrics += metrics_of(data[:end].decode("utf-8", errors="replace"), timestamp_ms)
        if pod in departed and end == 0:
            continue  # gone and read to the end: forget it
        batch.offsets[pod] = start + end
    return batch
