"""Workspace → PVCs + StatefulSet (one replica, or none while suspended) + Service + NetworkPolicy (+ Ingress).

Why a StatefulSet: an IDE is one stateful pod with a stable name (`NAME-0`), never two at once (two Jupyter
servers on one home volume would fight over its files); a Deployment's rolling update would overlap them.
Suspending is scaling it to zero: the pod goes, the volumes stay.

The IDE is served under `/PROJECT/NAME/` (the gateway's path for it), which Jupyter must know (`base_url`);
code-server works under any prefix. Either checks the workspace's own token, which reaches the pod from a
Secret the controller makes (`NAME-token`): the gateway lets everyone through to the IDE's login.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shipyard.resources.workspace import HOME_MOUNT, IDE_PORT, Workspace

from .common import (
    LOCAL_WORKDIR_ANNOTATION,
    MANAGED_BY,
    VOLUME_LABEL,
    automount_service_account_token,
    container_security_context,
    env_var,
    gateway_only_network_policy,
    object_labels,
    object_meta,
    pod_security_context,
    selector_labels,
    user_env,
    persistent_claims,
    pod_volume,
    volume_mount,
)

PORT_NAME = "http"
CONTAINER_NAME = "ide"
HOME_VOLUME = "home"
TOKEN_SECRET_KEY = "token"
# The variable each IDE reads its token (Jupyter) or password (code-server) from.
TOKEN_ENV = {"jupyterlab": "JUPYTER_TOKEN", "vscode": "PASSWORD"}


@dataclass(frozen=True)
class WorkspaceContext:
    """What the controller decides: whether the IDE runs now (suspended or idle: no)."""

    running: bool = True


def token_secret_name(ws: Workspace) -> str:
    return f"{ws.metadata.name}-token"


def base_path(ws: Workspace) -> str:
    return f"/{ws.metadata.namespace}/{ws.metadata.name}/"


def _command(ws: Workspace) -> list[str]:
    if ws.spec.ide == "vscode":
        return ["code-server", "--bind-addr=0.0.0.0:$(PORT)", "--auth=password", "--disable-telemetry",
                "--disable-update-check", f"--user-data-dir={HOME_MOUNT}/.local/share/code-server", HOME_MOUNT]
    return ["python", "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=0.0.0.0", "--ServerApp.port=$(PORT)",
            f"--ServerApp.base_url={base_path(ws)}", f"--ServerApp.root_dir={HOME_MOUNT}",
            "--ServerApp.allow_remote_access=True",
            # Pods run as uid 1000 (restricted); the local runtime runs as its user, which may be root, and
            # Jupyter would refuse to start there. The flag changes nothing for a non-root user.
            "--ServerApp.allow_root=True",
            # The gateway forwards the client's scheme and address; Jupyter should log and redirect with them.
            "--ServerApp.trust_xheaders=True"]


def _readiness_path(ws: Workspace) -> str:
    # Unauthenticated routes that answer once the server serves: Jupyter's API root, code-server's health.
    return "/healthz" if ws.spec.ide == "vscode" else base_path(ws) + "api"


def _container(ws: Workspace) -> dict[str, Any]:
    spec = ws.spec
    platform = [
        env_var("PORT", str(IDE_PORT)),
        env_var("HOME", HOME_MOUNT),
        {"name": TOKEN_ENV[spec.ide], "valueFrom": {"secretKeyRef": {"key": TOKEN_SECRET_KEY,
                                                                      "name": token_secret_name(ws)}}},
        env_var("SHIPYARD_WORKSPACE", ws.metadata.name),
        env_var("SHIPYARD_NAMESPACE", ws.metadata.namespace),
        env_var("PYTHONUNBUFFERED", "1"),
    ]
    mine = {e["name"] for e in platform}
    env = platform + [user_env(e) for e in spec.env if e.name not in mine]
    container: dict[str, Any] = {
        "command": _command(ws),
        "env": env,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "name": CONTAINER_NAME,
        "ports": [{"containerPort": IDE_PORT, "name": PORT_NAME, "protocol": "TCP"}],
        "readinessProbe": {"failureThreshold": 3, "httpGet": {"path": _readiness_path(ws), "port": PORT_NAME},
                           "initialDelaySeconds": 1, "periodSeconds": 2, "timeoutSeconds": 2},
        # The root filesystem stays writable: an IDE is the user's interactive machine, where installing into
        # the image's environment (`%pip install`, `conda install` in images whose environment uid 1000 owns,
        # such as Jupyter's docker-stacks) and tools run from its terminal writing wherever they like are the
        # point. Its state (Jupyter's runtime and config dirs, code-server's user data and extensions) is in
        # HOME, the workspace's volume; what it writes elsewhere is gone with the pod anyway.
        "securityContext": container_security_context(),
        "volumeMounts": [{"mountPath": HOME_MOUNT, "name": HOME_VOLUME}]
        + [volume_mount(v) for v in spec.volumes],
        "workingDir": HOME_MOUNT,
    }
    amounts = spec.resources.as_dict()
    if amounts:
        container["resources"] = {"limits": dict(sorted(amounts.items())), "requests": dict(sorted(amounts.items()))}
    return dict(sorted(container.items()))


def home_claim(ws: Workspace) -> dict[str, Any]:
    """The workspace's own volume: one writer (ReadWriteOnce), no owner (notebooks outlive the Workspace)."""
    labels = {MANAGED_BY: "shipyard", VOLUME_LABEL: ws.home_volume}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": object_meta(ws, ws.home_volume, labels=labels, owned=False),
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": ws.spec.home_size}}},
    }


def stateful_set(ws: Workspace, ctx: WorkspaceContext) -> dict[str, Any]:
    pod_meta: dict[str, Any] = {"labels": object_labels(ws)}
    if LOCAL_WORKDIR_ANNOTATION in ws.metadata.annotations:
        pod_meta["annotations"] = {LOCAL_WORKDIR_ANNOTATION: ws.metadata.annotations[LOCAL_WORKDIR_ANNOTATION]}
    volumes = [{"name": HOME_VOLUME, "persistentVolumeClaim": {"claimName": ws.home_volume}}]
    volumes += [pod_volume(v) for v in ws.spec.volumes]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": object_meta(ws, ws.metadata.name),
        "spec": {
            "podManagementPolicy": "OrderedReady",
            "replicas": 1 if ctx.running else 0,
            "selector": {"matchLabels": selector_labels(ws)},
            "serviceName": ws.metadata.name,
            "template": {
                "metadata": pod_meta,
                "spec": {
                    "automountServiceAccountToken": automount_service_account_token(),
                    "containers": [_container(ws)],
                    "securityContext": pod_security_context(),
                    # Time for Jupyter to shut its kernels down and save state.
                    "terminationGracePeriodSeconds": 30,
                    "volumes": volumes,
                },
            },
            "updateStrategy": {"type": "RollingUpdate"},
        },
    }


def service(ws: Workspace) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(ws, ws.metadata.name),
        "spec": {"ports": [{"name": PORT_NAME, "port": 80, "protocol": "TCP", "targetPort": PORT_NAME}],
                 "selector": selector_labels(ws)},
    }


def ingress(ws: Workspace) -> dict[str, Any]:
    rule = ws.spec.ingress
    assert rule is not None
    spec: dict[str, Any] = {"rules": [{"host": rule.host, "http": {"paths": [{
        "backend": {"service": {"name": ws.metadata.name, "port": {"name": PORT_NAME}}},
        "path": base_path(ws),
        "pathType": "Prefix",
    }]}}]}
    if rule.class_name:
        spec["ingressClassName"] = rule.class_name
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": object_meta(ws, ws.metadata.name),
            "spec": dict(sorted(spec.items()))}


def compile_workspace(ws: Workspace, ctx: WorkspaceContext | None = None) -> list[dict[str, Any]]:
    ctx = ctx or WorkspaceContext(running=not ws.spec.suspend)
    objects = [home_claim(ws)] + persistent_claims(ws, ws.spec.volumes)
    objects += [stateful_set(ws, ctx), service(ws),
                # The operator asks the IDE itself whether it is in use (kernels, editor heartbeat).
                gateway_only_network_policy(ws, PORT_NAME, from_ingress=ws.spec.ingress is not None,
                                            from_operator=True)]
    if ws.spec.ingress is not None:
        objects.append(ingress(ws))
    return objects
