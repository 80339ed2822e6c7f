"""The Workspace controller: one IDE pod (a StatefulSet of 0 or 1), its token, its route, idle culling.

Reconcile order, as for every kind: read; finalizer; make sure the token Secret exists; observe the pod and
the activity (the gateway's traffic, and the IDE's own: a busy kernel, an editor heartbeat); decide whether
the IDE runs (spec.suspend, else the idle policy Endpoints use for scale to zero, fed with the IDE's activity
too); apply the compiled objects (drift corrected on every pass; volumes only created); publish the route;
write status once, only if it changed.

A workspace suspended for idleness wakes when a request arrives at the gateway (held meanwhile), as an
Endpoint does; one suspended by hand (`spec.suspend`) stays down until the user resumes it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from shipyard.compiler import compile_resource
from shipyard.compiler.common import KIND_LABEL, NAME_LABEL, object_meta
from shipyard.compiler.workspace import TOKEN_SECRET_KEY, base_path, token_secret_name
from shipyard.resources import Condition, Workspace, set_condition
from shipyard.runtime.pods import is_ready, pod_address, secret_value
from shipyard.runtime.protocol import Runtime
from shipyard.store.protocol import Store
from shipyard.tokens import new_admin_token

from ..clock import Clock, SystemClock
from ..finalizers import reconcile_lifecycle, release
from ..manager import ObjectKey, Result
from ..serving import scale_to_zero
from ..serving.traffic import RouteTarget, Traffic, Upstream
from .activity import IdeActivity

CHILD_KINDS = ("StatefulSet", "Service", "NetworkPolicy", "Ingress", "Secret")
ACTIVE_RESYNC = 2.0
SETTLING_RESYNC = 0.5
ACTIVITY_PROBE_SECONDS = 5.0  # how often the IDE is asked about kernel/editor activity


class WorkspaceController:
    kind = "Workspace"

    def __init__(self, store: Store, runtime: Runtime, traffic: Traffic, activity: IdeActivity | None = None,
                 clock: Clock | None = None):
        self._store = store
        self._runtime = runtime
        self._traffic = traffic
        self._activity = activity
        self._clock = clock or SystemClock()
        self._probed: dict[tuple[str, str], datetime] = {}

    def reconcile(self, key: ObjectKey) -> Result:
        return reconcile_lifecycle(self._store, self.kind, key, gone=self._gone, finalize=self._finalize,
                                   live=self._live)

    # --- steps ---------------------------------------------------------------------------------------

    def _live(self, ws: Workspace) -> Result:
        now = self._clock.now()
        ns, name = ws.metadata.namespace, ws.metadata.name
        status = ws.status.model_copy(deep=True)
        status.observed_generation = ws.metadata.generation
        if status.last_activity_time is None:
            status.last_activity_time = now  # a new workspace gets a full idleTimeout to be used
        token = self._token(ws)
        pods = [p for p in self._runtime.list("Pod", ns, {KIND_LABEL: "workspace", NAME_LABEL: name})
                if not p["metadata"].get("deletionTimestamp")]
        ready = [p for p in pods if is_ready(p)]
        self._probe_activity(ws, status, ready, token, now)

        stats = self._traffic.stats(ns, name)
        if stats is not None and stats.last_request_at is not None:
            last_request = datetime.fromtimestamp(stats.last_request_at, now.tzinfo)
            status.last_activity_time = max(filter(None, (status.last_activity_time, last_request)))
        if ws.spec.suspend:
            running, reason = False, "Manual"
        else:
            idle_suspended = status.phase == "Suspended" and status.suspend_reason == "Idle"
            decision = scale_to_zero.decide(ws.spec.idle_timeout, idle_suspended, stats,
                                            self._active_since(ws, status), status.last_activity_time, now)
            running, reason = not decision.idle, "Idle"
        was_running = status.phase != "Suspended"
        if running != was_running:
            self._store.record_event(ws, "Normal", "Resumed" if running else "Suspended",
                                     "resumed" if running else
                                     ("suspended by spec.suspend" if reason == "Manual" else
                                      f"suspended after {ws.spec.idle_timeout}s without activity"))
            status.suspended_time = None if running else now
            status.suspend_reason = None if running else reason
            if running:
                status.last_activity_time = now  # a resumed workspace gets a full idleTimeout to be used

        self._apply_children(ws, running)
        route = ide_route(ws, ready)
        upstreams = route.upstreams
        self._traffic.set_route(route)

        status.url = self._traffic.url(ns, name)
        status.ready = bool(running and upstreams)
        if not running:
            status.phase = "Suspended"
        elif upstreams:
            status.phase = "Running"
        else:
            status.phase = "Pending"
        status.conditions = set_condition(status.conditions, Condition(
            type="Ready", status="True" if status.ready else "False",
            reason="IdeServing" if status.ready else ("Suspended" if not running else "Starting"),
            message=f"{ws.spec.ide} at {status.url}" if status.ready else
            ("suspended: its volumes are kept" if not running else "waiting for the IDE to answer")), now)
        self._write_status(ws, status)
        settling = running != bool(upstreams)
        return Result(requeue_after=SETTLING_RESYNC if settling else ACTIVE_RESYNC)

    @staticmethod
    def _active_since(ws: Workspace, status: Any) -> datetime | None:
        return status.suspended_time

    def _probe_activity(self, ws: Workspace, status: Any, ready: list[dict[str, Any]], token: str | None,
                        now: datetime) -> None:
        key = (ws.metadata.namespace, ws.metadata.name)
        if self._activity is None or not ready or token is None:
            return
        last = self._probed.get(key)
        if last is not None and now - last < timedelta(seconds=ACTIVITY_PROBE_SECONDS):
            return
        self._probed[key] = now
        address = pod_address(ready[0], "http")
        if address is None:
            return
        seen = self._activity.last_activity(ws.spec.ide, address[0], address[1], base_path(ws), token)
        if seen is not None:
            status.last_activity_time = max(filter(None, (status.last_activity_time, min(seen, now))))


    def _token(self, ws: Workspace) -> str | None:
        """The workspace's token, from its Secret; made (and the Secret created) the first time."""
        ns, secret_name = ws.metadata.namespace, token_secret_name(ws)
        current = self._runtime.get("Secret", ns, secret_name)
        if current is not None and not current["metadata"].get("deletionTimestamp"):
            return secret_value(current, TOKEN_SECRET_KEY)
        token = new_admin_token()
        self._runtime.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                             "metadata": object_meta(ws, secret_name), "stringData": {TOKEN_SECRET_KEY: token}})
        self._store.record_event(ws, "Normal", "TokenCreated", f"access token in Secret {secret_name}")
        return token

    def _apply_children(self, ws: Workspace, running: bool) -> None:
        ns = ws.metadata.namespace
        wanted = set()
        for obj in compile_resource(ws, running=running):
            wanted.add((obj["kind"], obj["metadata"]["name"]))
            if obj["kind"] == "PersistentVolumeClaim":
                if self._runtime.get(obj["kind"], ns, obj["metadata"]["name"]) is None:
                    self._runtime.apply(obj)
            else:
                self._runtime.apply(obj)
        if ("Ingress", ws.metadata.name) not in wanted and self._runtime.get("Ingress", ns, ws.metadata.name):
            self._runtime.delete("Ingress", ns, ws.metadata.name)  # removed from the spec

    def _gone(self, namespace: str, name: str) -> None:
        self._traffic.remove_route(namespace, name)
        self._delete_children(namespace, name)

    def _finalize(self, ws: Workspace) -> Result:
        ns, name = ws.metadata.namespace, ws.metadata.name
        self._traffic.remove_route(ns, name)
        self._probed.pop((ns, name), None)
        if not self._delete_children(ns, name):
            return Result(requeue_after=SETTLING_RESYNC)
        return release(self._store, ws)

    def _delete_children(self, namespace: str, name: str) -> bool:
        """Everything but the volumes (notebooks outlive the workspace). True once the pod is gone."""
        names = {"Secret": f"{name}-token"}
        for kind in CHILD_KINDS:
            child = names.get(kind, name)
            if self._runtime.get(kind, namespace, child) is not None:
                self._runtime.delete(kind, namespace, child)
        return self._runtime.get("StatefulSet", namespace, name) is None

    def _write_status(self, ws: Workspace, status: Any) -> None:
        if status.to_wire() != ws.status.to_wire():
            self._store.update_status(ws.model_copy(update={"status": status}))


def ide_route(ws: Workspace, ready: list[dict[str, Any]]) -> RouteTarget:
    """The gateway's route of a Workspace (its ready IDE pod): one definition for this controller and for the
    gateway replicas that build their routes from the API on a cluster (shipyard.gateway_cluster)."""
    upstreams = []
    for pod in sorted(ready, key=lambda p: p["metadata"]["name"]):
        address = pod_address(pod, "http")
        if address is not None:
            upstreams.append(Upstream(pod["metadata"]["name"], address[0], address[1]))
    return RouteTarget(
        project=ws.metadata.namespace, name=ws.metadata.name, kind=ws.kind, public=True, upstreams=tuple(upstreams),
        # Woken by a request only when it went to sleep by itself; a manual suspension is the user's call.
        scalable_from_zero=ws.spec.idle_timeout is not None and not ws.spec.suspend,
        keep_prefix=ws.spec.ide == "jupyterlab")
