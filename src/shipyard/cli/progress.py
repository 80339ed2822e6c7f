"""`apply --wait`: follow applied jobs to completion over one watch, with a live display on a terminal.

Driven entirely by watch events (no polling): each change re-renders the job's row. When stdout is not a
terminal (CI logs, pipes) a live display would be noise, so one plain line is printed per phase change.
"""

from __future__ import annotations

from typing import Any, Iterable

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from shipyard.client import Client
from shipyard.resources import Resource

from .common import CliError
from .printers import fmt

Key = tuple[str, str]  # (namespace, name)
DONE = ("Succeeded", "Failed")


def _fields(obj: Resource) -> dict[str, Any]:
    status: Any = getattr(obj, "status", None)
    progress = getattr(status, "progress", None)
    step = getattr(progress, "step", None)
    total = getattr(progress, "total_steps", None)
    rate = getattr(progress, "tokens_per_second", None)
    trials = getattr(status, "trials", None)
    if trials is not None:  # a Sweep: its progress is how many of its trials have finished
        step = sum(1 for t in trials if t.phase in ("Succeeded", "Failed", "Stopped"))
        total = getattr(getattr(obj, "spec", None), "max_trials", None)
    return {
        "phase": getattr(status, "phase", "-"),
        "restarts": getattr(status, "restarts", 0),
        "step": step,
        "total": total,
        "steps": f"{step}/{total}" if step is not None and total else fmt(step),
        "loss": fmt(getattr(progress, "loss", None)),
        "rate": "-" if rate is None else f"{rate:,.0f}",
        "trials": trials is not None,
    }


class _Live:
    """A rich Progress with one row per job: name, phase, bar, step/total, loss, tokens/s, ETA, restarts."""

    def __init__(self, console: Console, keys: list[Key]):
        self.progress = Progress(
            TextColumn("{task.fields[name]}", style="bold"),
            TextColumn("{task.fields[phase]:<10}"),
            BarColumn(bar_width=20),
            TextColumn("{task.fields[steps]}"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[rate]} tok/s"),
            TextColumn("eta"), TimeRemainingColumn(compact=True),
            TextColumn("restarts {task.fields[restarts]}"),
            console=console, transient=False, auto_refresh=True,
        )
        width = max(len(name) for _, name in keys)
        self.tasks: dict[Key, TaskID] = {
            key: self.progress.add_task("", total=None, name=key[1].ljust(width), phase="Pending", steps="-",
                                        loss="-", rate="-", restarts=0)
            for key in keys}

    def __enter__(self) -> "_Live":
        self.progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.progress.stop()

    def update(self, key: Key, obj: Resource, previous: str | None) -> None:
        f = _fields(obj)
        done = f["phase"] in DONE
        total = f["total"] or (1 if done else None)
        completed = f["step"] or 0
        if f["phase"] == "Succeeded" and total:
            completed = total
        self.progress.update(self.tasks[key], total=total, completed=completed, phase=f["phase"],
                             steps=f["steps"], loss=f["loss"], rate=f["rate"], restarts=f["restarts"])


class _Plain:
    """One line per phase change, and one per tenth of the steps, so logs show progress without noise."""

    def __init__(self, console: Console, kind: str):
        self.console, self.kind = console, kind.lower()
        self.reported: dict[Key, int] = {}

    def __enter__(self) -> "_Plain":
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def update(self, key: Key, obj: Resource, previous: str | None) -> None:
        f = _fields(obj)
        extra = f" (restarts {f['restarts']})" if f["restarts"] else ""
        if f["phase"] != previous:
            self.console.print(f"{self.kind}/{key[1]} {f['phase']}{extra}", highlight=False, soft_wrap=True)
        if f["step"] is not None and f["total"] and f["phase"] == "Running":
            tenth = int(10 * f["step"] / f["total"])
            if tenth > self.reported.get(key, 0):
                self.reported[key] = tenth
                unit = "trials done" if f["trials"] else "step"
                figures = "" if f["trials"] else f" loss {f['loss']} {f['rate']} tok/s"
                self.console.print(f"{self.kind}/{key[1]} {unit} {f['steps']}{figures}{extra}",
                                   highlight=False, soft_wrap=True)


def follow(client: Client, kind: str, keys: Iterable[Key], timeout: float | None, console: Console) -> None:
    """Return when every job has finished; CliError naming the failures (or the stragglers on timeout)."""
    wanted = list(dict.fromkeys(keys))
    namespaces = {ns for ns, _ in wanted}
    namespace = next(iter(namespaces)) if len(namespaces) == 1 else None
    name = wanted[0][1] if len(wanted) == 1 else None
    latest: dict[Key, Resource] = {}
    deleted: set[Key] = set()
    display = _Live(console, wanted) if console.is_terminal else _Plain(console, kind)
    with display:
        for type_, obj in client.watch(kind, namespace, name=name, initial=True, timeout=timeout):
            key = (obj.metadata.namespace, obj.metadata.name)
            if key not in wanted:
                continue
            previous = _fields(latest[key])["phase"] if key in latest else None
            if type_ == "DELETED":
                deleted.add(key)
            else:
                latest[key] = obj
                display.update(key, obj, previous)
            if all(k in deleted or (k in latest and _fields(latest[k])["phase"] in DONE) for k in wanted):
                break
        else:
            pending = [f"{kind.lower()}/{n} ({_fields(latest[(ns, n)])['phase'] if (ns, n) in latest else 'absent'})"
                       for ns, n in wanted if (ns, n) not in deleted
                       and not ((ns, n) in latest and _fields(latest[(ns, n)])["phase"] in DONE)]
            raise CliError(f"timed out after {timeout:g}s waiting for {', '.join(pending)}")
    failures = [f"{kind.lower()}/{name} was deleted while waiting" for _, name in sorted(deleted)]
    for key in wanted:
        obj = latest.get(key)
        if key in deleted or obj is None or _fields(obj)["phase"] == "Succeeded":
            continue
        status: Any = getattr(obj, "status", None)
        cond = status.condition("Failed") if status is not None else None
        message = (cond.message or cond.reason) if cond is not None else ""
        failures.append(f"{kind.lower()}/{key[1]} failed" + (f": {message}" if message else ""))
    if failures:
        raise CliError("; ".join(failures))


SERVING = ("Ready", "Idle")  # Idle: scaled to zero, serving on the next request


def follow_serving(client: Client, kind: str, keys: Iterable[Key], timeout: float | None, console: Console) -> None:
    """Return when every Endpoint/App is Ready (or Idle); print each phase change; CliError on timeout, with
    what the controller says is missing (its Available condition)."""
    wanted = list(dict.fromkeys(keys))
    namespaces = {ns for ns, _ in wanted}
    namespace = next(iter(namespaces)) if len(namespaces) == 1 else None
    latest: dict[Key, Resource] = {}
    for type_, obj in client.watch(kind, namespace, name=wanted[0][1] if len(wanted) == 1 else None, initial=True,
                                   timeout=timeout):
        key = (obj.metadata.namespace, obj.metadata.name)
        if key not in wanted or type_ == "DELETED":
            continue
        phase = getattr(obj.status, "phase", None)
        if key not in latest or getattr(latest[key].status, "phase", None) != phase:
            url = getattr(obj.status, "url", None)
            console.print(f"{kind.lower()}/{key[1]} {phase}" + (f" {url}" if phase in SERVING and url else ""))
        latest[key] = obj
        if all(k in latest and getattr(latest[k].status, "phase", None) in SERVING for k in wanted):
            return
    pending = []
    for ns, n in wanted:
        obj = latest.get((ns, n))
        cond = obj.status.condition("Available") if obj is not None else None
        pending.append(f"{kind.lower()}/{n}" + (f" ({cond.message})" if cond is not None and cond.message else ""))
    raise CliError(f"timed out after {timeout or 0:g}s waiting for {', '.join(pending)} to serve")
