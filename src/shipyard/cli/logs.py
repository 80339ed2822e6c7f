"""`shipyard logs`: print (or follow) the output of a resource's pods, with `kubectl logs`' flags."""

from __future__ import annotations

import re
import sys
from typing import Annotated, Optional

from . import _typer as typer  # typer only when typer reads the signature (cli/_typer.py)
from . import common
from .common import CliError, make_client, project_of, split_ref

_DURATION = re.compile(r"(\d+)(h|m|s)")
_SECONDS = {"h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> int:
    """`10m`, `1h30m`, `45s`, or plain seconds → seconds (at least 1), as `kubectl logs --since` reads them."""
    text = text.strip()
    if text.isdigit():
        seconds = int(text)
    elif re.fullmatch(r"(?:\d+[hms])+", text):
        seconds = sum(int(n) * _SECONDS[unit] for n, unit in _DURATION.findall(text))
    else:
        raise CliError(f"--since {text!r} is not a duration (e.g. 30s, 10m, 1h30m)")
    if seconds < 1:
        raise CliError(f"--since {text!r} must be at least one second")
    return seconds


def logs(
    ctx: typer.Context,
    what: Annotated[str, typer.Argument(metavar="KIND/NAME", help="e.g. tj/my-job, endpoint/chat, sweep/lr")],
    name: Annotated[Optional[str], typer.Argument(metavar="[NAME]")] = None,
    replica: Annotated[Optional[int], typer.Option(
        "--replica", "-r", min=0, help="Replica index: a job's rank, a workspace's ordinal, a serving pod by age.")]
    = None,
    pod: Annotated[Optional[str], typer.Option("--pod", help="This pod of the resource, by name.")] = None,
    all_pods: Annotated[bool, typer.Option("--all", help="Every pod, each line prefixed [pod/NAME].")] = False,
    selector: Annotated[Optional[str], typer.Option(
        "--selector", "-l", help="Only pods with these labels (k=v,k2!=v2, as kubectl).")] = None,
    previous: Annotated[bool, typer.Option(
        "--previous", "-p", help="The previous attempt: the container before its restart, or the pod before.")]
    = False,
    since: Annotated[Optional[str], typer.Option("--since", help="Only lines of the last 30s, 10m, 1h…")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing as the log grows.")] = False,
    tail: Annotated[Optional[int], typer.Option("--tail", min=0, help="Only the last N lines (per pod).")] = None,
    trial: Annotated[Optional[int], typer.Option("--trial", min=0, help="A sweep's trial, by index.")] = None,
    project: common.ProjectOption = None,
) -> None:
    """Print the logs of a resource's pods (replica 0 of a job, else the newest ready pod)."""
    cls, name = split_ref(what, name)
    if not name:
        raise CliError(f"logs needs an object: shipyard logs {cls.KIND.lower()}/NAME")
    since_seconds = parse_duration(since) if since is not None else None
    with make_client() as client:
        for line in client.logs(cls.KIND, name, project_of(ctx, project), replica=replica, follow=follow,
                                tail_lines=tail, pod=pod, all_pods=all_pods, previous=previous,
                                since_seconds=since_seconds, selector=selector, trial=trial):
            sys.stdout.write(line + "\n")
            if follow:
                sys.stdout.flush()
