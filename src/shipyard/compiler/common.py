"""Pieces every compiled object shares: labels, owner references, the restricted security context.

Pure functions only. Output must be deterministic (same resource in, byte-identical objects out) so that
re-applying changes nothing and golden files stay stable.
"""

from __future__ import annotations

from typing import Any

from shipyard.resources import Resource
from shipyard.resources.documents import LOCAL_WORKDIR_ANNOTATION  # noqa: F401 - re-exported

MANAGED_BY = "app.kubernetes.io/managed-by"
KIND_LABEL = "shipyard.dev/kind"
NAME_LABEL = "shipyard.dev/name"
RESTART_LABEL = "shipyard.dev/restart"
# A TrainingJob carrying Kueue's queue label is admitted by Kueue, not by Shipyard.
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
VOLUME_LABEL = "shipyard.dev/volume"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"

# The non-root identity pods run as on a cluster; images are built to work as this user.
# Where pods reach the gateway on a cluster (the Helm chart's Service); the local runtime maps it to its own
# gateway, so an App calling an Endpoint "through the gateway" works unchanged in both places.
GATEWAY_SERVICE_URL = "http://shipyard-gateway.shipyard-system.svc"
# Who may reach serving and workspace pods: the gateway's pods in Shipyard's own namespace (the Helm chart's
# labels; the admin labels the namespace) …
SYSTEM_NAMESPACE_LABEL = "shipyard.dev/system"
GATEWAY_POD_LABELS = {"app.kubernetes.io/component": "gateway", "app.kubernetes.io/name": "shipyard"}
# … the operator's pods, only where the operator itself calls the pod (a Workspace's IDE, asked about activity;
# the gateway is a Deployment of its own) …
OPERATOR_POD_LABELS = {"app.kubernetes.io/component": "operator", "app.kubernetes.io/name": "shipyard"}
# … and, for resources with an Ingress, the ingress controller's namespace, which the cluster admin labels.
INGRESS_NAMESPACE_LABEL = "shipyard.dev/ingress-controller"
RUN_AS_USER = 1000


def selector_labels(resource: Resource) -> dict[str, str]:
    return {KIND_LABEL: resource.kind.lower(), NAME_LABEL: resource.metadata.name}


def object_labels(resource: Resource) -> dict[str, str]:
    labels = dict(resource.metadata.labels)
    labels.update({MANAGED_BY: "shipyard", **selector_labels(resource)})
    return dict(sorted(labels.items()))


def owner_references(resource: Resource) -> list[dict[str, Any]]:
    # Before the store assigns a uid (e.g. `shipyard render` of a file) there is no owner to point at.
    if not resource.metadata.uid:
        return []
    return [{
        "apiVersion": resource.api_version,
        "blockOwnerDeletion": True,
        "controller": True,
        "kind": resource.kind,
        "name": resource.metadata.name,
        "uid": resource.metadata.uid,
    }]


def object_meta(resource: Resource, name: str, labels: dict[str, str] | None = None,
                annotations: dict[str, str] | None = None, owned: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "labels": dict(sorted((labels or object_labels(resource)).items())),
        "name": name,
        "namespace": resource.metadata.namespace,
    }
    if annotations:
        meta["annotations"] = dict(sorted(annotations.items()))
    refs = owner_references(resource) if owned else []
    if refs:
        meta["ownerReferences"] = refs
    return meta


def pod_security_context() -> dict[str, Any]:
    """Pod Security Standard "restricted": non-root, default seccomp; fsGroup makes volumes writable."""
    return {
        "fsGroup": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(read_only_root: bool = False) -> dict[str, Any]:
    """Restricted, and with `read_only_root` a read-only root filesystem: the image cannot be changed from
    inside (no dropped binaries, no edited code in a long-running server); what the workload may write is its
    volumes and the scratch of `scratch_volumes` (HOME, /tmp)."""
    context: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if read_only_root:
        context["readOnlyRootFilesystem"] = True
    return dict(sorted(context.items()))


# A workload pod talks to no Kubernetes API, so it gets no service account token: a token in the pod is a
# credential anything running there could use (and read from /var/run/secrets). No workload spec names a
# service account today; one that does (a `serviceAccountName` field, say) is where this turns on for it:
# `automount_service_account_token(spec.service_account_name is not None)`.
def automount_service_account_token(service_account: str | None = None) -> bool:
    return service_account is not None


# The writable scratch of a pod whose root filesystem is read-only: emptyDirs (the pod's own, gone with it) for
# /tmp and for HOME, where every cache a workload writes lands by default (~/.cache: HF_HOME, TORCH_HOME,
# XDG_CACHE_HOME and pip's cache; ~/.triton, ~/.config, ~/.nv). HOME is the workload image's own home
# (docker/Dockerfile.workloads: uid 1000's /home/shipyard) and the pod's env says so, so an image without that
# user still gets a writable home. Locally the same volumes are per-pod directories (runtime/local/volumes.py);
# /tmp there is the machine's own, as /dev/shm is.
SCRATCH_HOME = "/home/shipyard"
SCRATCH_TMP = "/tmp"
SCRATCH_VOLUMES = {"shipyard-home": SCRATCH_HOME, "shipyard-tmp": SCRATCH_TMP}


def scratch_volumes(volumes: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pod volumes, container mounts) of the scratch emptyDirs a spec's own `volumes` do not already cover
    (a volume of its own at /tmp is written there instead)."""
    taken = {v.mount_path for v in volumes}
    chosen = {name: path for name, path in SCRATCH_VOLUMES.items() if path not in taken}
    return ([{"emptyDir": {}, "name": name} for name in chosen],
            [{"mountPath": path, "name": name} for name, path in chosen.items()])


def env_var(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def user_env(var: Any) -> dict[str, Any]:
    """A spec's env entry: its value, or its reference to a Secret's key (the value stays in the Secret, so
    the compiled pod template holds no credential either)."""
    if var.value_from is not None:
        ref = var.value_from.secret_key_ref
        return {"name": var.name, "valueFrom": {"secretKeyRef": {"key": ref.key, "name": ref.name}}}
    return env_var(var.name, var.value or "")


def field_env(name: str, field_path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": field_path}}}


def volume_claim(resource: Resource, volume: Any) -> dict[str, Any]:
    """A project-scoped claim named after the volume. It has no owner: data outlives the jobs using it."""
    labels = {MANAGED_BY: "shipyard", VOLUME_LABEL: volume.name}
    spec: dict[str, Any] = {
        "accessModes": [volume.access_mode],
        "resources": {"requests": {"storage": volume.size}},
    }
    if volume.storage_class_name:
        spec["storageClassName"] = volume.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": object_meta(resource, volume.name, labels=labels, owned=False),
        "spec": spec,
    }


def persistent_claims(resource: Resource, volumes: list[Any]) -> list[dict[str, Any]]:
    """The claims of a spec's persistent volumes, by name (a secret volume has none: nothing is stored)."""
    return [volume_claim(resource, v) for v in sorted(volumes, key=lambda v: v.name) if v.secret is None]


def pod_volume(volume: Any) -> dict[str, Any]:
    """A spec's volume in a pod: its claim, or the Secret whose keys it shows as files (values stay there)."""
    if volume.secret is None:
        return {"name": volume.name, "persistentVolumeClaim": {"claimName": volume.name}}
    source: dict[str, Any] = {"defaultMode": volume.secret.default_mode}
    if volume.secret.items:
        source["items"] = [{"key": i.key, "path": i.path, **({"mode": i.mode} if i.mode is not None else {})}
                           for i in volume.secret.items]
    source["secretName"] = volume.secret.secret_name
    return {"name": volume.name, "secret": source}


def volume_mount(volume: Any) -> dict[str, Any]:
    """A spec's volume in a container; a secret volume is read-only, as the kubelet mounts it anyway."""
    mount: dict[str, Any] = {"mountPath": volume.mount_path, "name": volume.name}
    if volume.secret is not None:
        mount["readOnly"] = True
    return mount


def gateway_only_network_policy(resource: Resource, port_name: str, from_ingress: bool,
                                from_operator: bool = False) -> dict[str, Any]:
    """Admit only the Shipyard gateway (and, with an Ingress, the ingress controller; with `from_operator`,
    the operator) to the named port."""
    peers: list[dict[str, Any]] = [{
        "namespaceSelector": {"matchLabels": {SYSTEM_NAMESPACE_LABEL: "true"}},
        "podSelector": {"matchLabels": dict(labels)},
    } for labels in ([GATEWAY_POD_LABELS, OPERATOR_POD_LABELS] if from_operator else [GATEWAY_POD_LABELS])]
    if from_ingress:
        peers.append({"namespaceSelector": {"matchLabels": {INGRESS_NAMESPACE_LABEL: "true"}}})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(resource, resource.metadata.name),
        "spec": {
            "ingress": [{"from": peers, "ports": [{"port": port_name, "protocol": "TCP"}]}],
            "podSelector": {"matchLabels": selector_labels(resource)},
            "policyTypes": ["Ingress"],
        },
    }
