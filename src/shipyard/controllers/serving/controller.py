"""The controller of Endpoints and Apps: a Deployment (+ Service, HPA, PDB, NetworkPolicy, Ingress) per resource,
its ready replicas published to the gateway as a route, scale to zero and back, status from what runs.

Ordered like the TrainingJob controller: read; finalizer; decide idle or active (scale_to_zero policy, fed by
the gateway's traffic); apply the compiled objects and delete the ones no longer wanted (the HPA while idle,
an Ingress removed from the spec) — drift is corrected on every pass; publish the route; write status once,
only if it changed. Replica counts between 1 and max belong to the HPA (the Deployment is applied without
`replicas` then); this controller only sets them when going to zero and when waking up.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from shipyard.compiler import compile_resource
from shipyard.compiler.common import KIND_LABEL, NAME_LABEL, object_meta
from shipyard.compiler.serving import GATEWAY_KEY_SECRET_KEY, gateway_key_secret_name
from shipyard.resources import Condition, Resource, set_condition
from shipyard.runtime.protocol import Runtime
from shipyard.store.protocol import ApiKeyStore, NotFound, Store
from shipyard.tokens import HINT_CHARS, hash_token, new_api_key

from ..clock import Clock, SystemClock
from ..finalizers import FINALIZER, reconcile_lifecycle, release  # noqa: F401 (FINALIZER re-exported)
from ..manager import ObjectKey, Result
from ..tracking import Tracker
from . import scale_to_zero
from .models import CONDITION as MODEL_CONDITION
from .models import ModelResolver, registry_ref
from .pods import Routed, routable_upstreams, serving_route
from .traffic import Traffic, TrafficStats

MANAGED_KINDS = ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
                 "Ingress", "Secret")
ACTIVE_RESYNC = 1.0  # idle detection and the traffic figures in status are this fresh
SETTLING_RESYNC = 0.25  # while replicas start or stop
METRICS_WRITE_SECONDS = 2.0  # traffic figures change on every request: write them at most this often
KEY_CREATOR = "system:shipyard:serving-controller"  # `createdBy` of the keys it makes (`shipyard apikey list`)


class ServingController:
    def __init__(self, kind: str, store: Store, runtime: Runtime, traffic: Traffic, clock: Clock | None = None,
                 keys: ApiKeyStore | None = None, tracker: Tracker | None = None):
        """`tracker`: the model registry that Endpoints' `models:/` references are resolved through."""
        self.kind = kind
        self._models = ModelResolver(tracker)
        self._store = store
        self._keys = keys
        self._runtime = runtime
        self._traffic = traffic
        self._clock = clock or SystemClock()
        self._metrics_written: dict[tuple[str, str], datetime] = {}
        self._routed: dict[tuple[str, str], Routed] = {}  # what each route sent traffic to last time
        self._panicking: set[tuple[str, str]] = set()
        self._oom_told: set[tuple[str, str]] = set()  # (pod, finishedAt) of OOM kills told in an event

    # --- entry point ---------------------------------------------------------------------------------

    def reconcile(self, key: ObjectKey) -> Result:
        return reconcile_lifecycle(self._store, self.kind, key, gone=self._gone, finalize=self._finalize,
                                   live=self._reconcile_live)

    def _gone(self, namespace: str, name: str) -> None:
        self._traffic.remove_route(namespace, name)
        self._delete_children(namespace, name, keep=set())

    # --- steps ---------------------------------------------------------------------------------------

    def _reconcile_live(self, resource: Any) -> Result:
        now = self._clock.now()
        ns, name = resource.metadata.namespace, resource.metadata.name
        spec, status = resource.spec, resource.status.model_copy(deep=True)
        status.observed_generation = resource.metadata.generation
        stats = self._traffic.stats(ns, name)
        if stats is not None and stats.last_request_at is not None:
            status.last_request_time = datetime.fromtimestamp(stats.last_request_at, timezone.utc)

        idle_seconds = spec.scale_to_zero.idle_seconds if spec.scale_to_zero else None
        # The idle clock starts when replicas were asked for or, later, when they became ready: a replica that
        # spends longer loading its model than idleSeconds must still get a chance to serve.
        became_ready = next((c.last_transition_time for c in status.conditions
                             if c.type == "Available" and c.status == "True"), None)
        active_since = max((t for t in (status.last_scale_time or resource.metadata.creation_timestamp,
                                        became_ready) if t is not None), default=None)
        decision = scale_to_zero.decide(idle_seconds, status.phase == "Idle", stats, active_since,
                                        status.last_request_time, now)
        deployment = self._runtime.get("Deployment", ns, name)
        current = deployment["spec"].get("replicas") if deployment else None
        wants_hpa = spec.autoscaling is not None and spec.replicas.max > max(spec.replicas.min, 1)
        if decision.idle:
            replicas, autoscale = 0, False
        elif wants_hpa and current:
            replicas, autoscale = None, True  # the HPA owns the count: apply without it
        else:
            replicas, autoscale = max(spec.replicas.min, 1), wants_hpa  # first start or waking from zero
        if decision.idle != (status.phase == "Idle"):
            status.last_scale_time = now
            self._event(resource, "Normal", decision.reason, decision.message)

        resolved, unresolved = self._resolve_model(resource, status, now)
        if unresolved is None:
            self._apply_children(resource, replicas, autoscale, resolved)
        # else nothing can be compiled: what runs is left alone (an earlier model may still serve) until it can.

        deployment = self._runtime.get("Deployment", ns, name) or {}
        pods = self._runtime.list("Pod", ns, {KIND_LABEL: self.kind.lower(), NAME_LABEL: name})
        for pod_name, finished, code, message in _oom_kills(pods):
            if (pod_name, finished) not in self._oom_told:
                self._oom_told.add((pod_name, finished))
                self._event(resource, "Warning", "OOMKilled",
                            f"replica {pod_name} was OOMKilled (exit code {code}): {message}")
        upstreams, self._routed[(ns, name)], panic = routable_upstreams(pods, self._routed.get((ns, name), {}))
        self._traffic.set_route(serving_route(resource, upstreams))
        if panic and (ns, name) not in self._panicking:
            self._event(resource, "Warning", "AllReplicasUnready",
                        f"every replica fails its readiness probe while running; still routing to "
                        f"{len(upstreams)} that served before (overloaded, not dead?)")
        if panic:
            self._panicking.add((ns, name))
        else:
            self._panicking.discard((ns, name))
        upstreams = () if panic else upstreams  # what status counts as ready
        self._observe(resource, status, deployment, upstreams, stats, decision, now)
        if unresolved is not None and not upstreams and not decision.idle:
            status.conditions = set_condition(status.conditions, Condition(
                type="Available", status="False", reason="ModelNotResolved", message=unresolved), now)
        self._write_status(resource, status)
        settling = status.ready_replicas != status.desired_replicas or status.replicas != status.desired_replicas
        return Result(requeue_after=SETTLING_RESYNC if settling else ACTIVE_RESYNC)

    def _apply_children(self, resource: Any, replicas: int | None, autoscale: bool, model: Any) -> None:
        ns, name = resource.metadata.namespace, resource.metadata.name
        desired = compile_resource(resource, replicas=replicas, autoscale=autoscale, model=model)
        key_secret = self._gateway_key_secret(resource)
        if key_secret is not None:
            desired.insert(0, key_secret)  # before the Deployment: its pods read the key at start
        for obj in desired:
            if obj["kind"] == "Secret":
                continue  # created once by _gateway_key_secret; re-applying would need the token again
            if obj["kind"] == "PersistentVolumeClaim":
                # Project volumes are shared with jobs and workspaces: create when missing, never "correct".
                if self._runtime.get(obj["kind"], ns, obj["metadata"]["name"]) is None:
                    self._runtime.apply(obj)
            else:
                self._runtime.apply(obj)
        self._delete_children(ns, name, keep={(o["kind"], o["metadata"]["name"]) for o in desired})

    def _resolve_model(self, resource: Any, status: Any, now: datetime) -> tuple[Any, str | None]:
        """(what to compile an Endpoint's registry model with, None or why it cannot be compiled yet)."""
        if not hasattr(status, "resolved_model"):
            return None, None  # an App
        if not registry_ref(resource):
            status.resolved_model = None
            status.conditions = [c for c in status.conditions if c.type != MODEL_CONDITION]
            return None, None
        resolution = self._models.resolve(resource, status.resolved_model, now)
        status.conditions = set_condition(status.conditions, resolution.condition, now)
        record = resolution.record
        # Failures are in the condition only: right after `shipyard up` every reference fails for a few seconds
        # while the tracking server starts, and an event for each would be noise.
        if record is not None and record != status.resolved_model:
            self._event(resource, "Normal", "ModelResolved", resolution.condition.message)
        status.resolved_model = record
        if resolution.model is None:
            return None, resolution.condition.message
        return resolution.model, None

    def _observe(self, resource: Any, status: Any, deployment: dict[str, Any], upstreams: tuple, stats:
                 TrafficStats | None, decision: scale_to_zero.Decision, now: datetime) -> None:
        ns, name = resource.metadata.namespace, resource.metadata.name
        observed = deployment.get("status", {})
        status.url = self._traffic.url(ns, name)
        status.replicas = int(observed.get("replicas", 0))
        status.updated_replicas = int(observed.get("updatedReplicas", 0))
        status.ready_replicas = len(upstreams)
        status.desired_replicas = int(deployment.get("spec", {}).get("replicas", 0) or 0)
        key = (ns, name)
        last = self._metrics_written.get(key)
        if stats is not None and (last is None or (now - last).total_seconds() >= METRICS_WRITE_SECONDS):
            status.in_flight = float(stats.in_flight)
            status.requests_per_second = round(stats.requests_per_second, 2)
            self._metrics_written[key] = now
        if decision.idle:
            status.phase = "Idle"
            available = Condition(type="Available", status="False", reason=decision.reason,
                                  message=decision.message)
        elif upstreams:
            status.phase = "Ready"
            available = Condition(type="Available", status="True", reason="ReplicasReady",
                                  message=f"{len(upstreams)} replica(s) ready")
        else:
            status.phase = "Pending"
            available = Condition(type="Available", status="False", reason="NoReadyReplicas",
                                  message=_waiting_message(self._runtime, ns, name, self.kind))
        status.conditions = set_condition(status.conditions, available, now)

    def _key_name(self, name: str) -> str:
        return f"{self.kind.lower()}-{name}"

    def _gateway_key_secret(self, resource: Any) -> dict[str, Any] | None:
        """The Secret holding this resource's own project key, created (with the key) when first wanted.

        The token exists only in that Secret: the store keeps its hash. If the Secret is lost, the old key
        is revoked and a new one made. Without spec.gatewayKey the key is revoked (its Secret is pruned)."""
        ns, name = resource.metadata.namespace, resource.metadata.name
        key_name = self._key_name(name)
        secret_name = gateway_key_secret_name(resource)
        current = self._runtime.get("Secret", ns, secret_name)
        if resource.spec.gateway_key is None or self._keys is None:
            if current is not None:
                self._revoke_key(ns, key_name)  # and the Secret is pruned with the objects no longer wanted
            return None
        if current is not None and not current["metadata"].get("deletionTimestamp"):
            return current
        self._revoke_key(ns, key_name)
        token = new_api_key()
        self._keys.add_api_key(ns, key_name, hash_token(token), token[:HINT_CHARS], created_by=KEY_CREATOR)
        secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                  "metadata": object_meta(resource, secret_name), "stringData": {GATEWAY_KEY_SECRET_KEY: token}}
        self._runtime.apply(secret)
        self._event(resource, "Normal", "GatewayKeyCreated",
                    f"project API key {key_name} created for the replicas (env {resource.spec.gateway_key.env})")
        return secret

    def _revoke_key(self, namespace: str, key_name: str) -> None:
        if self._keys is None:
            return
        try:
            self._keys.revoke_api_key(namespace, key_name)
        except NotFound:
            pass

    def _finalize(self, resource: Resource) -> Result:
        ns, name = resource.metadata.namespace, resource.metadata.name
        self._revoke_key(ns, self._key_name(name))
        self._traffic.remove_route(ns, name)
        self._metrics_written.pop((ns, name), None)
        self._routed.pop((ns, name), None)
        self._panicking.discard((ns, name))
        self._models.forget(ns, name)
        if not self._delete_children(ns, name, keep=set()):
            return Result(requeue_after=SETTLING_RESYNC)
        return release(self._store, resource)

    def _delete_children(self, namespace: str, name: str, keep: set[tuple[str, str]]) -> bool:
        """Delete this resource's objects not in `keep` (never volumes). True once none of them is left."""
        labels = {KIND_LABEL: self.kind.lower(), NAME_LABEL: name}
        for kind in MANAGED_KINDS:
            for obj in self._runtime.list(kind, namespace, labels):
                if (kind, obj["metadata"]["name"]) not in keep and not obj["metadata"].get("deletionTimestamp"):
                    self._runtime.delete(kind, namespace, obj["metadata"]["name"])
        if keep:
            return True
        # Graceful deletions take a while (pods drain): done only when nothing of it is left.
        return not any(self._runtime.list(kind, namespace, labels) for kind in (*MANAGED_KINDS, "Pod"))

    # --- writing -------------------------------------------------------------------------------------

    def _write_status(self, resource: Any, status: Any) -> None:
        if status.to_wire() == resource.status.to_wire():
            return
        self._store.update_status(resource.model_copy(update={"status": status}))

    def _event(self, resource: Any, type_: str, reason: str, message: str) -> None:
        self._store.record_event(resource, type_, reason, message)  # type: ignore[arg-type]


def _waiting_message(runtime: Runtime, namespace: str, name: str, kind: str) -> str:
    """Why no replica is ready, from the pods: unschedulable, crash-looping, or still starting."""
    pods = runtime.list("Pod", namespace, {KIND_LABEL: kind.lower(), NAME_LABEL: name})
    for pod in pods:
        for cond in pod.get("status", {}).get("conditions", []):
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                return f"unschedulable: {cond.get('message', '')}"
        for cs in pod.get("status", {}).get("containerStatuses", []):
            waiting = cs.get("state", {}).get("waiting")
            if waiting and waiting.get("reason") == "CrashLoopBackOff":
                last = cs.get("lastState", {}).get("terminated", {})
                why = f", {last['reason']}" if last.get("reason") not in (None, "", "Error") else ""
                return (f"replica {pod['metadata']['name']} keeps exiting (code {last.get('exitCode', '?')}{why}, "
                        f"{cs.get('restartCount', 0)} restart(s)); see `shipyard logs`")
    return "replicas starting" if pods else "no replicas yet"


def _oom_kills(pods: list[dict[str, Any]]) -> list[tuple[str, str, Any, str]]:
    """(pod, finishedAt, exit code, message) of every container run the out-of-memory killer ended, current or last."""
    out = []
    for pod in pods:
        for cs in pod.get("status", {}).get("containerStatuses", []):
            for state in (cs.get("state", {}), cs.get("lastState", {})):
                terminated = state.get("terminated") or {}
                if terminated.get("reason") == "OOMKilled":
                    out.append((pod["metadata"]["name"], str(terminated.get("finishedAt")),
                                terminated.get("exitCode"), terminated.get("message", "")))
    return out
