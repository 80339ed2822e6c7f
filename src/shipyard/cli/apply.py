"""`shipyard apply`: read every document, then send them all in one atomic request, validated by the server.

All-or-nothing on purpose: applying a directory where document 7 is wrong must not leave documents 1 to 6
running. `--wait` then follows the applied jobs to completion, and Endpoints and Apps until they serve.
"""

from __future__ import annotations

from typing import Annotated, Optional

from . import _typer as typer  # typer only when typer reads the signature (cli/_typer.py)
from . import common
from .common import CliError, echo, make_client, project_of, read_manifests


def apply(
    ctx: typer.Context,
    filenames: Annotated[list[str], typer.Option(
        "--filename", "-f", help="A manifest file, a directory of *.yaml files, or - for stdin.")],
    wait: Annotated[bool, typer.Option("--wait", help="Follow applied jobs until they finish.")] = False,
    timeout: Annotated[Optional[float], typer.Option("--timeout", min=0, help="Give up waiting after SECONDS.",
                                                     metavar="SECONDS")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate on the server; change nothing.")] = False,
    project: common.ProjectOption = None,
) -> None:
    """Create or update resources from manifests (all documents, all files, in one atomic step)."""
    documents = read_manifests(filenames, project_of(ctx, project), local_workdir=True)
    # The control plane validates every document with the same models and refuses the whole set with the
    # same one-line `FILE: document N: FIELD: problem` errors before storing any; validating here as well
    # would only cost every apply the import of those models (most of its CPU).
    with make_client() as client:
        results = client.apply([(d.source, d.index, d.body) for d in documents], dry_run=dry_run)
        suffix = " (dry run)" if dry_run else ""
        for item in results:
            echo(f"{item['kind'].lower()}/{item['name']} {item['action']}{suffix}")
        if not wait or dry_run:
            return
        # rich and the kinds only for following: a plain apply must not pay for importing them.
        from rich.console import Console

        from shipyard.resources import KINDS

        from . import progress

        console = Console(highlight=False, soft_wrap=True)
        by_kind: dict[str, list[tuple[str, str]]] = {}
        serving: dict[str, list[tuple[str, str]]] = {}
        for item in results:
            # Jobs are followed to completion, Endpoints and Apps until they serve; nothing else is waited for.
            cls = KINDS.get(item["kind"])
            target = by_kind if hasattr(cls, "finished") else serving if hasattr(cls, "serves") else None
            if target is not None:
                target.setdefault(item["kind"], []).append((item["namespace"], item["name"]))
        if not by_kind and not serving:
            raise CliError("--wait: none of the applied objects runs to completion or serves")
        for kind, keys in by_kind.items():
            progress.follow(client, kind, keys, timeout, console)
        for kind, keys in serving.items():
            progress.follow_serving(client, kind, keys, timeout, console)
