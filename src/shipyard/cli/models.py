"""`shipyard models`: the model registry's versions (what an Endpoint's `model: models:/NAME@alias` serves)."""

from __future__ import annotations

import typer

from .common import make_client
from .printers import format_rows


def models() -> None:
    """List registered models and their versions, newest first."""
    with make_client() as client:
        versions = client.list_models()
    if not versions:
        typer.echo("No registered models.")
        return
    rows = [["NAME", "VERSION", "ALIASES", "RUN", "PATH"]] + [
        [v["name"], str(v["version"]), ",".join(v.get("aliases") or []) or "-", v.get("runId") or "-",
         f"{v['volume']}:{v['path']}" if v.get("volume") else v.get("path") or "-"] for v in versions]
    for line in format_rows(rows):
        typer.echo(line)
