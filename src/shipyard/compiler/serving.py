"""Endpoint / App → PVCs + Deployment + Service (+ HPA, PDB) + NetworkPolicy (+ Ingress).

Why these objects, and what keeps a request from failing:
- A Deployment rolls out with maxSurge 1 / maxUnavailable 0: a new replica must pass its readiness probe before
  an old one is stopped. A stopping replica first sleeps `drainSeconds` in preStop, while the gateway and the
  Service's endpoints stop routing to it, and only then gets SIGTERM to finish its in-flight requests.
- Replicas are set by whoever scales. With an HPA and no count from the caller, `spec.replicas` is left out
  so that re-applying the Deployment never fights the HPA (server-side apply: the field stays the HPA's).
  Otherwise the caller's count is written: max(min, 1), 0 while a scale-to-zero resource is idle (the HPA is
  left out then, as it cannot hold a Deployment at zero), or the count to wake up with — even beside an HPA,
  because an HPA leaves a Deployment at zero replicas alone.
- The HPA reads per-pod metrics the gateway exports (through a custom-metrics adapter on a cluster; the
  local runtime's autoscaler reads the gateway directly), because in-flight requests are what a model server
  saturates on; CPU says little about a GPU server.
- The NetworkPolicy admits only the Shipyard gateway (and, for an Ingress, the ingress controller): a
  non-public resource must not be reachable around the gateway's token check. Traffic through an Ingress
  reaches the Service directly, so the gateway's metrics and scale-from-zero holding do not see it.
- An Endpoint whose model is a registry reference (`models:/NAME@alias`) is compiled from the resolution the
  controller passes in (`ServingContext.model`): that version's project volume is mounted read-only at
  REGISTRY_MOUNT and the server is given REGISTRY_MOUNT + the path. The version number is in the pod's env,
  so a new version behind an alias always changes the pod template, which rolls the Deployment out.
Pure and deterministic, like every compiler module; the policy of who scales lives in `default_scaling`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from shipyard.resources import App, Endpoint, ServingResource
from shipyard.resources.endpoint import REGISTRY_MOUNT, parse_model_uri
from shipyard.resources.quantity import parse_quantity

from .common import (
    LOCAL_WORKDIR_ANNOTATION,
    SCRATCH_HOME,
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
    scratch_volumes,
    volume_mount,
)

PORT_NAME = "http"
SERVICE_PORT = 80
CONTAINER_NAMES = {"Endpoint": "server", "App": "app"}
IN_FLIGHT_METRIC = "shipyard_gateway_upstream_in_flight"
RPS_METRIC = "shipyard_gateway_upstream_requests_per_second"
METRICS = {"inFlight": IN_FLIGHT_METRIC, "requestsPerSecond": RPS_METRIC}


@dataclass(frozen=True)
class RegistryModel:
    """A `models:/` reference as the controller resolved it: the project volume holding the files, the path
    inside that volume, and the version number."""

    volume: str
    path: str
    version: int


@dataclass(frozen=True)
class ServingContext:
    """What the controller adds to the spec: whether an HPA scales the Deployment, a replica count to write
    (None: leave it to the HPA when there is one, else max(min, 1)), and a registry model's resolution."""

    replicas: int | None = None
    autoscale: bool = False
    model: RegistryModel | None = None


def served_model(resource: ServingResource, ctx: ServingContext) -> str | None:
    """The model directory as the server sees it: the spec's path, or where the registry model is mounted."""
    if not isinstance(resource, Endpoint):
        return None
    ref = parse_model_uri(resource.spec.model)
    if ref is None:
        return resource.spec.model
    if ctx.model is None:
        raise ValueError(f"model {resource.spec.model} is a model registry reference: the control plane resolves "
                         "it to a volume when it runs the Endpoint, so it cannot be rendered without a registry")
    inner = ctx.model.path.strip("/")
    return f"{REGISTRY_MOUNT}/{inner}" if inner else REGISTRY_MOUNT


def default_scaling(resource: ServingResource) -> ServingContext:
    """An HPA when autoscaling is asked for and there is room to scale; else a fixed count of max(min, 1)."""
    spec = resource.spec
    floor = max(spec.replicas.min, 1)
    if spec.autoscaling is not None and spec.replicas.max > floor:
        return ServingContext(replicas=None, autoscale=True)
    return ServingContext(replicas=floor, autoscale=False)


def quantity(value: float) -> str:
    """A Kubernetes quantity for a positive number: whole numbers plain, fractions in thousandths ('500m')."""
    exact = Decimal(str(value))
    if exact == exact.to_integral_value():
        return str(int(exact))
    return f"{max(1, round(exact * 1000))}m"


def _command(resource: ServingResource, ctx: ServingContext) -> tuple[list[str], list[str]]:
    if isinstance(resource, App):
        return list(resource.spec.command), list(resource.spec.args)
    if not isinstance(resource, Endpoint):
        raise TypeError(f"no serving compiler for kind {resource.kind!r}")
    spec = resource.spec
    if spec.engine == "custom":
        return list(spec.command or []), list(spec.args)
    # $(PORT), not the number: Kubernetes expands it from the container's env, so a runtime that remaps PORT
    # (the local one hands out a free host port) moves the flag with it.
    flags = ["--served-model-name", spec.served_model_name or resource.metadata.name,
             "--host", "0.0.0.0", "--port", "$(PORT)"]
    if spec.max_model_len is not None:
        flags += ["--max-model-len", str(spec.max_model_len)]
    model = served_model(resource, ctx)
    if spec.engine == "vllm":
        return ["vllm", "serve"], [model, *flags, *spec.args]
    return ["python", "-m", "shipyard.workloads.serve"], [model, *flags, *spec.args]


def _env(resource: ServingResource, ctx: ServingContext) -> list[dict[str, Any]]:
    spec = resource.spec
    platform = [
        env_var("PORT", str(spec.port)),
        env_var("SHIPYARD_NAME", resource.metadata.name),
        env_var("SHIPYARD_NAMESPACE", resource.metadata.namespace),
        # Logs must reach the runtime as they are printed, not when a buffer fills.
        env_var("PYTHONUNBUFFERED", "1"),
    ]
    if read_only_root(resource):
        # Caches (vLLM's, Triton's, the Hugging Face hub's) go to the pod's writable home.
        platform.append(env_var("HOME", SCRATCH_HOME))
    if isinstance(resource, Endpoint):
        platform += [env_var("SHIPYARD_MODEL", served_model(resource, ctx) or ""),
                     env_var("SHIPYARD_SERVED_MODEL_NAME", resource.spec.served_model_name or resource.metadata.name)]
        if ctx.model is not None:
            platform += [env_var("SHIPYARD_MODEL_URI", resource.spec.model),
                         env_var("SHIPYARD_MODEL_VERSION", str(ctx.model.version))]
        if spec.resources.cpu is not None:
            cores = math.floor(parse_quantity(spec.resources.cpu))
            # The built-in server keeps one core for its HTTP event loop (as its own default does); without
            # this it would size its pool by the node's cores, not the replica's.
            threads = cores - 1 if resource.spec.engine == "builtin" else cores
            platform.append(env_var("OMP_NUM_THREADS", str(max(1, threads))))
    user_names = {e.name for e in spec.env}
    merged = [e for e in platform if e["name"] not in user_names]
    key = []
    if spec.gateway_key is not None:
        key = [{"name": spec.gateway_key.env, "valueFrom": {"secretKeyRef": {
            "name": gateway_key_secret_name(resource), "key": GATEWAY_KEY_SECRET_KEY}}}]
    return merged + [user_env(e) for e in spec.env] + key


GATEWAY_KEY_SECRET_KEY = "token"


def gateway_key_secret_name(resource: ServingResource) -> str:
    """The Secret the serving controller writes the resource's own project key into (it creates the key)."""
    return f"{resource.metadata.name}-gateway-key"


def read_only_root(resource: ServingResource) -> bool:
    """The built-in server, vLLM and an App's own program write only their volumes, HOME and /tmp, so their
    root filesystem is read-only. A `custom` engine runs someone else's server image, which may write where its
    image says (TGI's hub cache is /data, a VOLUME that Kubernetes does not mount): it stays writable."""
    return not (isinstance(resource, Endpoint) and resource.spec.engine == "custom")


def _registry_model(resource: ServingResource, ctx: ServingContext) -> RegistryModel | None:
    """The resolution, only for an Endpoint that serves a registry model (a context passed for a path is moot)."""
    if isinstance(resource, Endpoint) and parse_model_uri(resource.spec.model) is not None:
        return ctx.model
    return None


def _container(resource: ServingResource, ctx: ServingContext) -> dict[str, Any]:
    spec = resource.spec
    command, args = _command(resource, ctx)
    probe = spec.readiness_probe
    mounts: list[dict[str, Any]] = [volume_mount(v) for v in spec.volumes]
    registry = _registry_model(resource, ctx)
    if registry is not None:
        mounts.append({"mountPath": REGISTRY_MOUNT, "name": registry.volume, "readOnly": True})
    if read_only_root(resource):
        mounts += scratch_volumes(spec.volumes)[1]
    container: dict[str, Any] = {
        "args": args,
        "command": command,
        "env": _env(resource, ctx),
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "name": CONTAINER_NAMES[resource.kind],
        "ports": [{"containerPort": spec.port, "name": PORT_NAME, "protocol": "TCP"}],
        "readinessProbe": {
            "failureThreshold": probe.failure_threshold,
            "httpGet": {"path": probe.path, "port": PORT_NAME},
            "initialDelaySeconds": probe.initial_delay_seconds,
            "periodSeconds": probe.period_seconds,
            "timeoutSeconds": probe.timeout_seconds,
        },
        "securityContext": container_security_context(read_only_root=read_only_root(resource)),
        "volumeMounts": mounts,
    }
    if not args:
        del container["args"]
    if not container["volumeMounts"]:
        del container["volumeMounts"]
    if spec.drain_seconds:
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": spec.drain_seconds}}}
    amounts = spec.resources.as_dict()
    if amounts:
        container["resources"] = {"limits": dict(sorted(amounts.items())), "requests": dict(sorted(amounts.items()))}
    if spec.working_dir:
        container["workingDir"] = spec.working_dir
    return dict(sorted(container.items()))


def deployment(resource: ServingResource, ctx: ServingContext) -> dict[str, Any]:
    spec = resource.spec
    pod_meta: dict[str, Any] = {}
    if LOCAL_WORKDIR_ANNOTATION in resource.metadata.annotations:
        pod_meta["annotations"] = {LOCAL_WORKDIR_ANNOTATION: resource.metadata.annotations[LOCAL_WORKDIR_ANNOTATION]}
    pod_meta["labels"] = object_labels(resource)
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": automount_service_account_token(),
        "containers": [_container(resource, ctx)],
        "securityContext": pod_security_context(),
        "terminationGracePeriodSeconds": spec.termination_grace_period_seconds,
    }
    volumes = [pod_volume(v) for v in spec.volumes]
    registry = _registry_model(resource, ctx)
    if registry is not None and registry.volume not in {v.name for v in spec.volumes}:
        # No claim object is compiled for it: the volume exists (a job wrote the model there) and its size and
        # class are that job's.
        volumes.append({"name": registry.volume, "persistentVolumeClaim": {"claimName": registry.volume}})
    if read_only_root(resource):
        volumes += scratch_volumes(spec.volumes)[0]
    if volumes:
        pod_spec["volumes"] = volumes
    deploy_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(resource)},
        "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}, "type": "RollingUpdate"},
        "template": {"metadata": pod_meta, "spec": pod_spec},
    }
    if ctx.replicas is not None:
        deploy_spec["replicas"] = ctx.replicas
    elif not ctx.autoscale:
        deploy_spec["replicas"] = max(spec.replicas.min, 1)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(resource, resource.metadata.name),
        "spec": dict(sorted(deploy_spec.items())),
    }


def service(resource: ServingResource) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(resource, resource.metadata.name),
        "spec": {
            "ports": [{"name": PORT_NAME, "port": SERVICE_PORT, "protocol": "TCP", "targetPort": PORT_NAME}],
            "selector": selector_labels(resource),
            "type": "ClusterIP",
        },
    }


def horizontal_pod_autoscaler(resource: ServingResource) -> dict[str, Any]:
    spec = resource.spec
    scaling = spec.autoscaling
    if scaling is None or scaling.target is None:
        raise ValueError(f"{resource.ref}: an HPA needs spec.autoscaling (its metric and target)")
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_meta(resource, resource.metadata.name),
        "spec": {
            "behavior": {
                "scaleDown": {"stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds},
                "scaleUp": {"stabilizationWindowSeconds": scaling.scale_up_stabilization_seconds},
            },
            "maxReplicas": spec.replicas.max,
            "metrics": [{"pods": {"metric": {"name": METRICS[scaling.metric]},
                                  "target": {"averageValue": quantity(scaling.target), "type": "AverageValue"}},
                         "type": "Pods"}],
            "minReplicas": max(1, spec.replicas.min),
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": resource.metadata.name},
        },
    }


def pod_disruption_budget(resource: ServingResource) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(resource, resource.metadata.name),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(resource)}},
    }


def network_policy(resource: ServingResource) -> dict[str, Any]:
    return gateway_only_network_policy(resource, PORT_NAME, from_ingress=resource.spec.ingress is not None)


def ingress(resource: ServingResource) -> dict[str, Any]:
    rule = resource.spec.ingress
    if rule is None:
        raise ValueError(f"{resource.ref}: no spec.ingress to compile")
    spec: dict[str, Any] = {"rules": [{"host": rule.host, "http": {"paths": [{
        "backend": {"service": {"name": resource.metadata.name, "port": {"name": PORT_NAME}}},
        "path": "/",
        "pathType": "Prefix",
    }]}}]}
    if rule.class_name:
        spec["ingressClassName"] = rule.class_name
    if rule.tls_secret_name:
        spec["tls"] = [{"hosts": [rule.host], "secretName": rule.tls_secret_name}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": object_meta(resource, resource.metadata.name),
        "spec": dict(sorted(spec.items())),
    }


def compile_serving(resource: ServingResource, ctx: ServingContext | None = None) -> list[dict[str, Any]]:
    ctx = ctx or default_scaling(resource)
    spec = resource.spec
    objects = persistent_claims(resource, spec.volumes)
    objects += [deployment(resource, ctx), service(resource)]
    if ctx.autoscale:
        objects.append(horizontal_pod_autoscaler(resource))
    if spec.replicas.min >= 2:
        objects.append(pod_disruption_budget(resource))
    objects.append(network_policy(resource))
    if spec.ingress is not None:
        objects.append(ingress(resource))
    return objects
