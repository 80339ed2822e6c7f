"""`shipyard scale endpoint/NAME --replicas N`: pin a serving resource to N replicas, as `kubectl scale`.

What scale means here: an Endpoint or App has a replica *range* (`spec.replicas.min..max`), and scale pins it
(`min = max = N`). It writes the resource's spec, not the Deployment's, so the controller keeps it (kubectl's
scale of a Deployment is undone by the next apply of its owner; here the next `apply` of the old manifest
undoes it, exactly like any other spec edit).

Refused, in one line, where it means nothing or would be silently overridden:
- a kind without interchangeable replicas (TrainingJob: a gang of fixed size; Sweep; Workspace);
- a resource with `spec.autoscaling`: the autoscaler owns the count inside min..max (on Kubernetes an HPA
  likewise overrides `kubectl scale` of its target); change min/max in the manifest instead;
- `--replicas 0`: a resource with `scaleToZero` already goes to zero when idle, and one without it would
  never serve.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import CliError, ProjectOption, make_client, project_of, split_ref

SCALABLE = ("Endpoint", "App")


def scale(
    ctx: typer.Context,
    what: Annotated[str, typer.Argument(metavar="KIND/NAME", help="e.g. endpoint/chat, app/playground")],
    name: Annotated[Optional[str], typer.Argument(metavar="[NAME]")] = None,
    replicas: Annotated[Optional[int], typer.Option("--replicas", min=0,
                                                    help="The replica count to pin (min = max).")] = None,
    project: ProjectOption = None,
) -> None:
    """Pin an Endpoint's or App's replica count (spec.replicas min = max = N)."""
    cls, name = split_ref(what, name)
    if replicas is None:
        raise CliError("scale needs --replicas N")
    if cls.KIND not in SCALABLE:
        raise CliError(f"{cls.KIND.lower()}s cannot be scaled: only Endpoints and Apps have interchangeable "
                       "replicas (a TrainingJob's replicas are one gang of fixed size)")
    if not name:
        raise CliError(f"scale needs a name: shipyard scale {cls.KIND.lower()}/NAME --replicas N")
    if replicas == 0:
        raise CliError("--replicas 0: give the resource spec.scaleToZero to let it drop to none when idle; "
                       "a resource pinned to zero would never serve")
    namespace = project_of(ctx, project)
    with make_client() as client:
        wire = client.get_wire(cls.KIND, name, namespace)
        spec = dict(wire.get("spec") or {})
        if spec.get("autoscaling"):
            raise CliError(f"{cls.KIND.lower()}/{name} autoscales (spec.autoscaling) between replicas.min and "
                           "replicas.max: change those in its manifest, or remove autoscaling to pin a count")
        spec["replicas"] = {"min": replicas, "max": replicas}
        meta = wire.get("metadata") or {}
        body = {"apiVersion": wire.get("apiVersion"), "kind": cls.KIND, "spec": spec,
                "metadata": {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta}}
        [result] = client.apply([(f"{cls.KIND.lower()}/{name}", 1, body)])
    action = "scaled" if result.get("action") != "unchanged" else "unchanged"
    typer.echo(f"{cls.KIND.lower()}/{name} {action}")
