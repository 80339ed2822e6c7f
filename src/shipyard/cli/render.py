"""`shipyard render`: the native Kubernetes objects a manifest compiles to, exactly what a runtime would run.

Local first: no control plane needed. The local-workdir annotation is not added, so the output is the same on
every machine (it only matters to the local runtime). Directories are read recursively, so `render -f
examples/` shows a whole tree.

Every valid manifest renders (exit 0); what only exists once the platform runs is rendered the way it will be:
- a Sweep as its trials' TrainingJobs, from the sweep controller's own trial generation (the same
  `assignment` and `trial_job` it runs, so render cannot drift from what runs): every point of a grid, the
  first `parallelism` draws of a random search (`--trials N` for another count);
- an Endpoint serving a registry model (`models:/NAME@alias`) with the version the running control plane's
  registry resolves it to; when none answers, with a placeholder volume and the reference left visible in the
  model path, and a warning on stderr.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from . import printers
from .common import CliError, ProjectOption, make_client, project_of, read_manifests

if TYPE_CHECKING:
    from shipyard.compiler import RegistryModel
    from shipyard.resources import Endpoint, Resource, Sweep

# The stand-in volume for a registry model nobody could resolve: a valid name that says what it is.
UNRESOLVED_VOLUME = "unresolved-registry-model"


def render(
    ctx: typer.Context,
    filenames: Annotated[list[str] | None, typer.Option("--filename", "-f",
                                                        help="Manifest file, directory (recursive) or -.")] = None,
    trials: Annotated[Optional[int], typer.Option(
        "--trials", min=1, help="Sweeps: render this many trials (default: all of a grid, the first "
                                "`parallelism` of a random search).")] = None,
    project: ProjectOption = None,
) -> None:
    """Print the native objects (Job, Service, PVCs...) that resources compile to, as YAML."""
    from shipyard.compiler import compile_resource
    from shipyard.resources import Endpoint, Sweep, validate_document

    if not filenames:
        raise CliError("nothing to render: give -f FILE (the platform itself is the Helm chart charts/shipyard)")
    # Each document on its own: two files of a tree may define the same name (two variants of an example),
    # which only an apply, storing both, has to refuse.
    resources = [validate_document(doc) for doc in read_manifests(filenames, project_of(ctx, project),
                                                                    local_workdir=False, recursive=True)]
    registry = _Registry()
    objects: list[dict[str, Any]] = []
    for resource in resources:
        try:
            if isinstance(resource, Sweep):
                for job in sweep_trials(resource, trials):
                    objects.extend(compile_resource(job))
            elif isinstance(resource, Endpoint) and resource.spec.model.startswith("models:/"):
                objects.extend(compile_resource(resource, model=registry.resolve(resource)))
            else:
                objects.extend(compile_resource(resource))
        except (TypeError, ValueError) as exc:
            raise CliError(f"{resource.ref}: {exc}") from None
    typer.echo(printers.dump_documents(objects), nl=False)


def sweep_trials(sweep: Sweep, count: int | None = None) -> list[Resource]:
    """The TrainingJobs a Sweep's controller would create, trial 0 first."""
    from shipyard.controllers.sweep.searchspace import assignment
    from shipyard.controllers.sweep.substitute import trial_job

    total = sweep.spec.max_trials or sweep.spec.grid_size()
    if count is None:
        count = total if sweep.spec.algorithm.type == "grid" else sweep.spec.parallelism
    return [trial_job(sweep, i, assignment(sweep.spec, i)) for i in range(min(count, total))]


class _Registry:
    """Registry references resolved through the control plane, asked at most once per render."""

    def __init__(self) -> None:
        self._versions: list[dict[str, Any]] | None = None
        self._why = ""

    def _listed(self) -> list[dict[str, Any]]:
        if self._versions is None:
            from shipyard.client import ShipyardError

            try:
                with make_client() as client:
                    self._versions = client.list_models()
            except ShipyardError as exc:
                self._versions, self._why = [], str(exc)
        return self._versions

    def resolve(self, endpoint: Endpoint) -> RegistryModel:
        from shipyard.compiler import RegistryModel
        from shipyard.resources.endpoint import parse_model_uri

        ref = parse_model_uri(endpoint.spec.model)
        assert ref is not None
        wanted = ref.version_or_alias
        for mv in self._listed():
            if mv.get("name") == ref.name and (str(mv.get("version")) == wanted or wanted in (mv.get("aliases") or [])):
                if mv.get("volume") and str(mv.get("path", "")).startswith("/"):
                    return RegistryModel(mv["volume"], mv["path"], int(mv["version"]))
        why = self._why or f"the registry has no usable version {wanted!r} of {ref.name!r}"
        typer.echo(f"warning: {endpoint.ref}: {endpoint.spec.model} not resolved ({why}); rendered with volume "
                   f"{UNRESOLVED_VOLUME} standing in for the model's", err=True)
        return RegistryModel(UNRESOLVED_VOLUME, f"/{ref.name}/{wanted}", 0)
