"""`shipyard apply`: validate every document locally, then send them all in one atomic request.

All-or-nothing on purpose: applying a directory where document 7 is wrong must not leave documents 1 to 6
running. `--wait` then follows the applied jobs to completion, and Endpoints and Apps until they serve.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import CliError, ProjectOption, make_client, project_of, read_manifests


def apply(
    ctx: typer.Context,
    filenames: Annotated[list[str], typer.Option(
        "--filename", "-f", help="A manifest file, a directory of *.yaml files, or - for stdin.")],
    wait: Annotated[bool, typer.Option("--wait", help="Follow applied jobs until they finish.")] = False,
    timeout: Annotated[Optional[float], typer.Option("--timeout", min=0, help="Give up waiting after SECONDS.",
                                                     metavar="SECONDS")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate on the server; change nothing.")] = False,
    project: ProjectOption = None,
) -> None:
    """Create or update resources from manifests (all documents, all files, in one atomic step)."""
    from shipyard.resources import KINDS, load_resources

    documents = read_manifests(filenames, project_of(ctx, project), local_workdir=True)
    load_resources(documents)  # refuse here, naming file/document/field, before anything is sent
    with make_client() as client:
        results = client.apply([(d.source, d.index, d.body) for d in documents], dry_run=dry_run)
        suffix = " (dry run)" if dry_run else ""
        for item in results:
            typer.echo(f"{item['kind'].lower()}/{item['name']} {item['action']}{suffix}")
        if not wait or dry_run:
            return
        # rich only for following: a plain apply must not pay for importing it.
        from rich.console import Console

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
