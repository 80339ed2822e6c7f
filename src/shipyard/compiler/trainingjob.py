"""TrainingJob → PVCs + a headless Service + a NetworkPolicy + an Indexed Job.

Why an Indexed Job with a pod failure policy: every replica gets a stable index (its node rank) and a stable
DNS name (`NAME-INDEX.NAME`), and the first failed pod fails the whole Job. Kubernetes then stops the other
pods and the TrainingJob controller restarts the gang as one — partial restarts of a DDP gang only hang.
A pod terminated by a disruption (preemption, node drain, eviction, node loss, `shipyard down`: the
`DisruptionTarget` condition) fails the Job too, by a rule of its own (index 0), rather than being ignored and
replaced alone: a lone replacement cannot join its peers' collective, which would hang until it timed out and
then fail as a counted restart. The controller tells the two rules apart and restarts a disrupted gang
without counting it.

Why a NetworkPolicy: the rendezvous port and the collectives' (gloo/NCCL pick their ports at random) need only
the gang's own pods; nothing else in the namespace should reach a training process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from shipyard.resources import TrainingJob
from shipyard.resources.quantity import parse_quantity

from .common import (
    COMPLETION_INDEX_ANNOTATION,
    LOCAL_WORKDIR_ANNOTATION,
    RESTART_LABEL,
    SCRATCH_HOME,
    automount_service_account_token,
    container_security_context,
    env_var,
    field_env,
    object_labels,
    object_meta,
    pod_security_context,
    selector_labels,
    user_env,
    persistent_claims,
    pod_volume,
    scratch_volumes,
    volume_mount,
)

RENDEZVOUS_PORT = 29500
# The failure policy's rules, by index: Kubernetes names the matching index in the Job's Failed condition.
DISRUPTION_RULE = 0
DISRUPTION_RULE_MESSAGE = f"has condition DisruptionTarget matching FailJob rule at index {DISRUPTION_RULE}"
# How long a replica stays bound to a node that stopped reporting (NotReady / unreachable) before the node
# lifecycle controller evicts it; Kubernetes' default is 300 s. A gang missing one replica makes no progress
# while every other replica holds its accelerators, and a disruption restart is free (it resumes from the last
# checkpoint and is not counted), so waiting five minutes for the node to come back costs more than it saves.
NODE_LOSS_TOLERATION_SECONDS = 60
CONTAINER_NAME = "trainer"
SHM_VOLUME = "dshm"


@dataclass(frozen=True)
class TrainingJobContext:
    """What the controller adds to the spec: which attempt this gang is, and whether it was admitted.

    A Job is created suspended and released on admission (Kueue's contract): Shipyard admits it at once, unless
    the TrainingJob names a Kueue LocalQueue (label `kueue.x-k8s.io/queue-name`, copied to the Job), in which
    case Kueue admits it when its quota allows."""

    restart: int = 0  # the gang's attempt: counted restarts plus disruption restarts (status.attempt)
    admitted: bool = False


def master_address(job: TrainingJob) -> str:
    # Pod 0's hostname under the headless Service; resolvable before pods are ready (publishNotReadyAddresses).
    return f"{job.metadata.name}-0.{job.metadata.name}"


def _env(job: TrainingJob, ctx: TrainingJobContext) -> list[dict[str, Any]]:
    spec = job.spec
    index_ref = f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"
    platform = [
        # torchrun reads PET_* by itself, so `torchrun train.py` needs no flags (as Kubeflow Trainer does).
        env_var("PET_NNODES", str(spec.replicas)),
        env_var("PET_NPROC_PER_NODE", str(spec.procs_per_replica)),
        field_env("PET_NODE_RANK", index_ref),
        env_var("PET_MASTER_ADDR", master_address(job)),
        env_var("PET_MASTER_PORT", str(RENDEZVOUS_PORT)),
        # For a plain `python train.py` entrypoint (one process per replica); torchrun overrides these.
        env_var("MASTER_ADDR", master_address(job)),
        env_var("MASTER_PORT", str(RENDEZVOUS_PORT)),
        env_var("WORLD_SIZE", str(job.world_size)),
        field_env("RANK", index_ref),
        env_var("LOCAL_RANK", "0"),
        env_var("SHIPYARD_JOB_NAME", job.metadata.name),
        env_var("SHIPYARD_NAMESPACE", job.metadata.namespace),
        field_env("SHIPYARD_REPLICA_INDEX", index_ref),
        env_var("SHIPYARD_RESTART_COUNT", str(ctx.restart)),
        # Logs (and progress lines) must reach the runtime as they are printed, not when a buffer fills.
        env_var("PYTHONUNBUFFERED", "1"),
        # The root filesystem is read-only: caches go to the pod's writable home (common.scratch_volumes).
        env_var("HOME", SCRATCH_HOME),
    ]
    if spec.resources.cpu is not None:
        # One BLAS thread pool per core the replica was given, split among its processes: oversubscribed
        # threads cost DDP on CPU several times its speed.
        threads = max(1, math.floor(parse_quantity(spec.resources.cpu) / spec.procs_per_replica))
        platform.append(env_var("OMP_NUM_THREADS", str(threads)))
    user_names = {e.name for e in spec.env}
    merged = [e for e in platform if e["name"] not in user_names]
    merged += [user_env(e) for e in spec.env]
    return merged


def _resources(job: TrainingJob) -> dict[str, Any]:
    amounts = job.spec.resources.as_dict()
    if not amounts:
        return {}
    return {"limits": dict(sorted(amounts.items())), "requests": dict(sorted(amounts.items()))}


def headless_service(job: TrainingJob) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(job, job.metadata.name),
        "spec": {
            "clusterIP": "None",
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "protocol": "TCP",
                       "targetPort": RENDEZVOUS_PORT}],
            "publishNotReadyAddresses": True,
            "selector": selector_labels(job),
        },
    }


def gang_network_policy(job: TrainingJob) -> dict[str, Any]:
    """Ingress to the gang's pods only from the gang's pods, on every port (collectives pick theirs at random).

    The selector is the job's own labels, not the attempt's, so a policy applied once covers every attempt.
    Logs, port-forward and exec go through the kubelet, not the pod network, so they need no rule."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(job, job.metadata.name),
        "spec": {"ingress": [{"from": [{"podSelector": {"matchLabels": selector_labels(job)}}]}],
                 "podSelector": {"matchLabels": selector_labels(job)}, "policyTypes": ["Ingress"]},
    }


def indexed_job(job: TrainingJob, ctx: TrainingJobContext) -> dict[str, Any]:
    spec = job.spec
    pod_labels = {**object_labels(job), RESTART_LABEL: str(ctx.restart)}
    pod_annotations = {}
    if LOCAL_WORKDIR_ANNOTATION in job.metadata.annotations:
        pod_annotations[LOCAL_WORKDIR_ANNOTATION] = job.metadata.annotations[LOCAL_WORKDIR_ANNOTATION]
    scratch, scratch_mounts = scratch_volumes(spec.volumes)
    container: dict[str, Any] = {
        "args": list(spec.args),
        "command": list(spec.command),
        "env": _env(job, ctx),
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "name": CONTAINER_NAME,
        "ports": [{"containerPort": RENDEZVOUS_PORT, "name": "rendezvous", "protocol": "TCP"}],
        # A training script reads its image and writes its volumes (checkpoints, outputs), HOME and /tmp.
        "securityContext": container_security_context(read_only_root=True),
        "volumeMounts": [volume_mount(v) for v in spec.volumes]
        + [{"mountPath": "/dev/shm", "name": SHM_VOLUME}] + scratch_mounts,
    }
    if not container["args"]:
        del container["args"]
    resources = _resources(job)
    if resources:
        container["resources"] = resources
    if spec.working_dir:
        container["workingDir"] = spec.working_dir
    pod_meta: dict[str, Any] = {"labels": dict(sorted(pod_labels.items()))}
    if pod_annotations:
        pod_meta["annotations"] = pod_annotations
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "completionMode": "Indexed",
        "completions": spec.replicas,
        "parallelism": spec.replicas,
        "suspend": not ctx.admitted,
        "podFailurePolicy": {"rules": [
            # Index 0 (DISRUPTION_RULE): a disrupted replica fails the Job at once, so its peers stop now
            # instead of in a collective's timeout; the controller recreates the gang without counting it.
            {"action": "FailJob", "onPodConditions": [{"status": "True", "type": "DisruptionTarget"}]},
            {"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [0]}},
        ]},
        "template": {
            "metadata": pod_meta,
            "spec": {
                "automountServiceAccountToken": automount_service_account_token(),
                "containers": [container],
                "restartPolicy": "Never",
                "securityContext": pod_security_context(),
                "subdomain": job.metadata.name,
                "terminationGracePeriodSeconds": spec.termination_grace_period_seconds,
                "tolerations": [{"effect": "NoExecute", "key": key, "operator": "Exists",
                                 "tolerationSeconds": NODE_LOSS_TOLERATION_SECONDS}
                                for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")],
                "volumes": [pod_volume(v) for v in spec.volumes]
                + [{"emptyDir": {"medium": "Memory"}, "name": SHM_VOLUME}] + scratch,
            },
        },
    }
    if spec.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": object_meta(job, job.metadata.name, labels={**object_labels(job), RESTART_LABEL: str(ctx.restart)}),
        "spec": job_spec,
    }


def compile_trainingjob(job: TrainingJob, ctx: TrainingJobContext | None = None) -> list[dict[str, Any]]:
    ctx = ctx or TrainingJobContext()
    claims = persistent_claims(job, job.spec.volumes)
    return [*claims, headless_service(job), gang_network_policy(job), indexed_job(job, ctx)]
