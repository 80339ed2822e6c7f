"""Turning wire objects into what people read: kubectl-style tables, ages, YAML/JSON, `describe` sections.

Table columns are data, keyed by kind: a new kind adds a row spec to COLUMNS, not printing code. Values are
read from the wire form (camelCase dicts), so the columns name the same paths `-o yaml` shows.

PyYAML is imported where YAML is written, not here: a table needs none of it, and every `get` pays for what
this module imports.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, NamedTuple

Wire = dict[str, Any]


def dig(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def age(value: Any, now: datetime | None = None) -> str:
    """kubectl's short durations: 5s, 3m, 2h, 4d, 1y."""
    ts = parse_time(value)
    if ts is None:
        return "-"
    seconds = max(0, int(((now or datetime.now(timezone.utc)) - ts).total_seconds()))
    for unit, size in (("y", 365 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def fmt(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


# --- table specs ----------------------------------------------------------------------------------------

class Column(NamedTuple):  # not a dataclass: importing dataclasses costs a CLI call ~20 ms (inspect)
    header: str
    value: str | Callable[[Wire], Any]  # a dotted wire path, or a function of the object
    wide: bool = False

    def render(self, obj: Wire) -> str:
        return fmt(dig(obj, self.value) if isinstance(self.value, str) else self.value(obj))


def _replicas(obj: Wire) -> str:
    running = sum(1 for r in dig(obj, "status.replicaStatuses") or [] if r.get("phase") == "Running")
    return f"{running}/{fmt(dig(obj, 'spec.replicas'))}"


def _progress(obj: Wire) -> str | None:
    step, total = dig(obj, "status.progress.step"), dig(obj, "status.progress.totalSteps")
    if step is None:
        return None
    return f"{step}/{total}" if total else str(step)


def _rate(obj: Wire) -> str | None:
    rate = dig(obj, "status.progress.tokensPerSecond")
    return None if rate is None else f"{rate:,.0f}"


def _serving_ready(obj: Wire) -> str:
    return f"{dig(obj, 'status.readyReplicas') or 0}/{dig(obj, 'status.desiredReplicas') or 0}"


def _per_second(obj: Wire) -> str:
    rate = dig(obj, "status.requestsPerSecond") or 0.0
    return f"{rate:.1f}"


def _serving_columns() -> list[Column]:
    return [NAME, Column("PHASE", "status.phase"), Column("READY", _serving_ready), Column("REQ/S", _per_second),
            Column("URL", "status.url"), AGE,
            Column("IN-FLIGHT", "status.inFlight", wide=True),
            Column("REPLICAS", lambda o: f"{dig(o, 'spec.replicas.min')}..{dig(o, 'spec.replicas.max')}", wide=True),
            Column("PUBLIC", "spec.public", wide=True)]


def _trials_done(obj: Wire) -> str:
    done = sum(dig(obj, f"status.trials{k}") or 0 for k in ("Succeeded", "Failed", "Stopped"))
    return f"{done}/{fmt(dig(obj, 'spec.maxTrials'))}"


def _sweep_columns() -> list[Column]:
    return [NAME, Column("PHASE", "status.phase"), Column("TRIALS", _trials_done),
            Column("RUNNING", "status.trialsRunning"), Column("BEST", "status.bestTrial.objective"),
            Column("BEST TRIAL", "status.bestTrial.name"), AGE,
            Column("OBJECTIVE", lambda o: f"{dig(o, 'spec.objective.goal')} {dig(o, 'spec.objective.metric')}",
                   wide=True),
            Column("FAILED", "status.trialsFailed", wide=True), Column("STOPPED", "status.trialsStopped", wide=True),
            Column("MODEL", lambda o: (f"{dig(o, 'status.registeredModel.name')} "
                                       f"v{dig(o, 'status.registeredModel.version')}")
                   if dig(o, "status.registeredModel") else None, wide=True)]


NAME = Column("NAME", "metadata.name")
AGE = Column("AGE", lambda o: age(dig(o, "metadata.creationTimestamp")))
PROJECT = Column("PROJECT", "metadata.namespace")

COLUMNS: dict[str, list[Column]] = {
    "TrainingJob": [
        NAME,
        Column("PHASE", "status.phase"),
        Column("REPLICAS", _replicas),
        Column("RESTARTS", "status.restarts"),
        Column("PROGRESS", _progress),
        Column("LOSS", "status.progress.loss"),
        AGE,
        Column("TOKENS/S", _rate, wide=True),
        Column("STARTED", lambda o: age(dig(o, "status.startTime")) if dig(o, "status.startTime") else None,
               wide=True),
    ],
    "Endpoint": _serving_columns(),
    "App": _serving_columns(),
    "Sweep": _sweep_columns(),
    "Workspace": [
        NAME, Column("IDE", "spec.ide"), Column("PHASE", "status.phase"), Column("URL", "status.url"),
        Column("LAST ACTIVE", lambda o: age(dig(o, "status.lastActivityTime")) if dig(o, "status.lastActivityTime")
               else None),
        AGE,
        Column("IDLE TIMEOUT", lambda o: f"{dig(o, 'spec.idleTimeout')}s" if dig(o, "spec.idleTimeout") else None,
               wide=True),
        Column("SUSPENDED", "status.suspendReason", wide=True),
    ],
    # As kubectl: the type and how many keys; values never reach the client at all.
    "Secret": [NAME, Column("TYPE", "spec.type"), Column("DATA", lambda o: len(dig(o, "status.keys") or {})), AGE],
    "Project": [NAME, Column("DISPLAY NAME", "spec.displayName"), Column("PHASE", "status.phase"),
                Column("MEMBERS", lambda o: len(dig(o, "spec.members") or [])), AGE,
                Column("DESCRIPTION", "spec.description", wide=True)],
}
DEFAULT_COLUMNS = [NAME, Column("PHASE", "status.phase"), AGE]


def columns_for(kind: str, wide: bool, all_projects: bool) -> list[Column]:
    cols = [c for c in COLUMNS.get(kind, DEFAULT_COLUMNS) if wide or not c.wide]
    return [PROJECT, *cols] if (wide or all_projects) and kind != "Project" else cols


def format_rows(rows: list[list[str]], widths: list[int] | None = None) -> list[str]:
    """Left-aligned columns three spaces apart, as kubectl prints them (no boxes: output stays greppable)."""
    if not rows:
        return []
    widths = widths or [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["   ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def table(columns: list[Column], objects: Iterable[Wire]) -> tuple[list[str], list[int]]:
    rows = [[c.header for c in columns]] + [[c.render(o) for c in columns] for o in objects]
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    return format_rows(rows, widths), widths


def sweep_trials(obj: Wire) -> list[str]:
    """A Sweep's trials as a table, best objective first (by the goal), trials without one last."""
    trials = dig(obj, "status.trials") or []
    if not trials:
        return []
    maximize = dig(obj, "spec.objective.goal") == "maximize"
    names = [p.get("name") for p in dig(obj, "spec.parameters") or []]
    best = dig(obj, "status.bestTrial.name")

    def order(item: tuple[int, Wire]) -> tuple[int, float, int]:
        value = item[1].get("objective")
        return (1, 0.0, item[0]) if value is None else (0, -value if maximize else value, item[0])

    rows = [["TRIAL", "PHASE", *(n.upper() for n in names), "STEP", str(dig(obj, "spec.objective.metric")).upper(),
             "BEST SEEN", "REASON"]]
    for _, t in sorted(enumerate(trials), key=order):
        params = t.get("parameters") or {}
        rows.append([("* " if t.get("name") == best else "  ") + fmt(t.get("name")), fmt(t.get("phase")),
                     *(fmt(params.get(n)) for n in names), fmt(t.get("step")), fmt(t.get("objective")),
                     fmt(t.get("bestObjective")), fmt(t.get("reason"))])
    return format_rows(rows)


# --- structured output ----------------------------------------------------------------------------------

def dump(data: Any, output: str) -> str:
    if output == "json":
        return json.dumps(data, indent=2) + "\n"
    import yaml

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


def as_list(items: list[Wire]) -> Wire:
    return {"apiVersion": "v1", "kind": "List", "items": items}


def dump_documents(objects: list[Wire]) -> str:
    import yaml

    return "---\n".join(yaml.safe_dump(o, sort_keys=False, default_flow_style=False) for o in objects)


# --- describe -------------------------------------------------------------------------------------------

def _pairs(mapping: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (mapping or {}).items()) or "<none>"


def _when(value: Any) -> str:
    return f"{value} ({age(value)} ago)" if parse_time(value) else fmt(value)


def _title(key: str) -> str:
    out = "".join(" " + ch if ch.isupper() else ch for ch in key)
    return out[:1].upper() + out[1:]


def _section(title: str, headers: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return [f"{title}:  <none>"]
    return [f"{title}:"] + ["  " + line for line in format_rows([headers, *rows])]


# Compiled on first use (re.compile at import would cost every `get`, which never prints YAML).
_PLAIN = r"^[A-Za-z0-9_/.@+-][A-Za-z0-9_/.@+ =,:-]*$"
_AMBIGUOUS = r"(?i)^(?:[-+]?[0-9_.]+(?:[eE][-+]?[0-9]+)?|true|false|yes|no|on|off|null|~|y|n)$"


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    plain = re.match(_PLAIN, text) and not re.match(_AMBIGUOUS, text) and ": " not in text and not text.endswith(":")
    return text if plain else json.dumps(text)  # a JSON string is a valid double-quoted YAML scalar


def block_yaml(value: Any, indent: str = "") -> list[str]:
    """Plain data as block-style YAML lines, for `describe`: what PyYAML would print for a spec, without
    importing PyYAML (a `describe` must not pay for it; `-o yaml` still uses it)."""
    lines: list[str] = []
    items = value.items() if isinstance(value, dict) else ((None, v) for v in value)
    for key, item in items:
        head = f"{indent}{key}:" if key is not None else f"{indent}-"
        if isinstance(item, (dict, list)) and item:
            nested = block_yaml(item, indent + "  " if key is not None or isinstance(item, list) else "")
            if key is None and isinstance(item, dict):  # `- first: 1` then the other keys under it
                lines.append(f"{head} {nested[0].lstrip()}")
                lines += [indent + "  " + line for line in nested[1:]]
            elif key is not None and isinstance(item, list):
                lines.append(head)
                lines += block_yaml(item, indent)
            else:
                lines.append(head)
                lines += nested
        else:
            shown = ("{}" if isinstance(item, dict) else "[]") if isinstance(item, (dict, list)) else _scalar(item)
            lines.append(f"{head} {shown}")
    return lines


def describe(obj: Wire, events: list[Wire]) -> str:
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    lines = [
        f"Name:         {meta.get('name')}",
        f"Kind:         {obj.get('kind')}",
        *([f"Project:      {meta.get('namespace')}"] if meta.get("namespace") else []),
        f"UID:          {fmt(meta.get('uid'))}",
        f"Labels:       {_pairs(meta.get('labels'))}",
        f"Annotations:  {_pairs(meta.get('annotations'))}",
        f"Created:      {_when(meta.get('creationTimestamp'))}",
    ]
    if meta.get("deletionTimestamp"):
        lines.append(f"Deleting:     since {_when(meta['deletionTimestamp'])}, finalizers {meta.get('finalizers')}")
    lines.append("Spec:")
    spec = {k: v for k, v in (obj.get("spec") or {}).items() if v not in ([], {}, None)}
    lines += ["  " + line for line in block_yaml(spec)]
    lines.append("Status:")
    special = {"conditions", "replicaStatuses", "progress"}
    for key, value in status.items():
        if key not in special and not isinstance(value, (dict, list)):
            lines.append(f"  {_title(key) + ':':<21}{_when(value) if key.endswith('Time') else fmt(value)}")
    progress = status.get("progress")
    if progress:
        shown = {k: v for k, v in progress.items() if k != "metrics"} | (progress.get("metrics") or {})
        lines.append(f"  {'Progress:':<21}{', '.join(f'{k}={fmt(v)}' for k, v in shown.items())}")
    lines += _section("Conditions", ["TYPE", "STATUS", "REASON", "MESSAGE", "LAST TRANSITION"], [
        [fmt(c.get("type")), fmt(c.get("status")), fmt(c.get("reason")), fmt(c.get("message")),
         age(c.get("lastTransitionTime")) + " ago" if c.get("lastTransitionTime") else "-"]
        for c in status.get("conditions") or []])
    if status.get("bestTrial"):
        bt = status["bestTrial"]
        best = f"{bt.get('name')} ({fmt(bt.get('objective'))}) {_pairs(bt.get('parameters'))}"
        lines.append(f"  {'Best Trial:':<21}{best}")
    if status.get("registeredModel"):
        rm = status["registeredModel"]
        lines.append(f"  {'Registered Model:':<21}{rm.get('name')} version {rm.get('version')}")
    if "trials" in status:
        table = sweep_trials(obj)
        lines += ["Trials:", *("  " + line for line in table)] if table else ["Trials:  <none>"]
    if isinstance(status.get("keys"), dict):  # a Secret: its keys and sizes, as `kubectl describe secret`
        lines += ["Data:", *(f"  {key}:  {size} bytes" for key, size in status["keys"].items())] \
            if status["keys"] else ["Data:  <none>"]
    if obj.get("kind") == "Project":  # who may do what there, and what it holds
        lines += _section("Members", ["KIND", "NAME", "ROLE"], [
            [fmt(m.get("kind")), fmt(m.get("name")), fmt(m.get("role"))]
            for m in (obj.get("spec") or {}).get("members") or []])
        held = obj.get("held") or {}  # counted by `project describe` as it asks (see cli/project.py)
        lines.append(f"Holds:  {', '.join(f'{n} {k}' for k, n in held.items()) or '<nothing>'}")
    if "replicaStatuses" in status:
        lines += _section("Replicas", ["INDEX", "PHASE", "EXIT CODE", "REASON"], [
            [fmt(r.get("index")), fmt(r.get("phase")), fmt(r.get("exitCode")), fmt(r.get("reason"))]
            for r in status.get("replicaStatuses") or []])
    lines += _section("Events", ["TYPE", "REASON", "AGE", "COUNT", "MESSAGE"], [
        [fmt(e.get("type")), fmt(e.get("reason")), age(e.get("lastTimestamp")), f"x{e.get('count', 1)}",
         fmt(e.get("message"))] for e in events])
    return "\n".join(lines) + "\n"
