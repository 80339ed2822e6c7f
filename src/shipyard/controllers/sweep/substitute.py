"""A Sweep's trial i as a TrainingJob: the template with its placeholders filled in, owned by the Sweep.

The trial is named SWEEP-INDEX and labelled with both, so a restarted controller finds its trials by listing,
and reapplying the same trial is a no-op (the assignment is a pure function of the index). The owner
reference carries the Sweep's uid: a trial left over from an earlier Sweep of the same name is told apart
and removed rather than adopted.
"""

from __future__ import annotations

import json

from shipyard.compiler.common import LOCAL_WORKDIR_ANNOTATION
from shipyard.resources import API_VERSION, ObjectMeta, OwnerReference, Sweep, TrainingJob, TrainingJobSpec
from shipyard.resources.searchspace import substitute_trial

SWEEP_LABEL = "shipyard.dev/sweep"
TRIAL_INDEX_LABEL = "shipyard.dev/trial-index"
# The Sweep's MLflow run, for the TrainingJob controller to nest the trial's run under it.
PARENT_RUN_ANNOTATION = "shipyard.dev/mlflow-parent-run-id"
# The trial's parameter values as a JSON object, for tracking and for people reading `describe`.
PARAMETERS_ANNOTATION = "shipyard.dev/sweep-parameters"


def placeholder_values(sweep: Sweep, trial_name: str, parameters: dict[str, str]) -> dict[str, str]:
    return {**parameters, "trial": trial_name, "sweep": sweep.metadata.name}


def trial_spec(sweep: Sweep, trial_name: str, parameters: dict[str, str]) -> TrainingJobSpec:
    values = placeholder_values(sweep, trial_name, parameters)
    return TrainingJobSpec.model_validate(substitute_trial(sweep.spec.trial.to_wire(), values))


def trial_job(sweep: Sweep, index: int, parameters: dict[str, str], parent_run_id: str | None = None) -> TrainingJob:
    name = sweep.trial_name(index)
    labels = {**sweep.metadata.labels, SWEEP_LABEL: sweep.metadata.name, TRIAL_INDEX_LABEL: str(index)}
    annotations = {PARAMETERS_ANNOTATION: json.dumps(parameters, separators=(",", ":"))}
    # The local runtime runs a job in the directory its manifest was applied from; trials run where the Sweep was.
    workdir = sweep.metadata.annotations.get(LOCAL_WORKDIR_ANNOTATION)
    if workdir is not None:
        annotations[LOCAL_WORKDIR_ANNOTATION] = workdir
    if parent_run_id:
        annotations[PARENT_RUN_ANNOTATION] = parent_run_id
    owner = OwnerReference(api_version=API_VERSION, kind=Sweep.KIND, name=sweep.metadata.name,
                           uid=sweep.metadata.uid or "", controller=True, block_owner_deletion=True)
    meta = ObjectMeta(name=name, namespace=sweep.metadata.namespace, labels=labels, annotations=annotations,
                      owner_references=[owner])
    return TrainingJob(metadata=meta, spec=trial_spec(sweep, name, parameters))


def owned_by(job: TrainingJob, sweep: Sweep) -> bool:
    return any(ref.kind == Sweep.KIND and ref.uid == sweep.metadata.uid for ref in job.metadata.owner_references)


def trial_index(job: TrainingJob) -> int | None:
    try:
        return int(job.metadata.labels.get(TRIAL_INDEX_LABEL, ""))
    except ValueError:
        return None
