"""`shipyard logs`: print (or follow) one replica's output."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from .common import CliError, ProjectOption, make_client, project_of, split_ref


def logs(
    ctx: typer.Context,
    what: Annotated[str, typer.Argument(metavar="KIND/NAME", help="e.g. tj/my-job")],
    name: Annotated[Optional[str], typer.Argument(metavar="[NAME]")] = None,
    replica: Annotated[int, typer.Option("--replica", "-r", min=0, help="Replica index.")] = 0,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing as the log grows.")] = False,
    tail: Annotated[Optional[int], typer.Option("--tail", min=0, help="Only the last N lines.")] = None,
    project: ProjectOption = None,
) -> None:
    """Print the logs of one replica of a job."""
    cls, name = split_ref(what, name)
    if not name:
        raise CliError(f"logs needs an object: shipyard logs {cls.KIND.lower()}/NAME")
    with make_client() as client:
        for line in client.logs(cls.KIND, name, project_of(ctx, project), replica=replica, follow=follow,
                                tail_lines=tail):
            sys.stdout.write(line + "\n")
            if follow:
                sys.stdout.flush()
