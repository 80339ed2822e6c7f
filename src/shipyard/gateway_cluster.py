"""The gateway on a cluster: `python -m shipyard.gateway --kubeconfig FILE | --in-cluster`, the chart's
`shipyard-gateway` Deployment.

Why a process apart from the operator: only the operator's Lease holder reconciles, and a gateway inside it
went dark with every hand-over and could not scale out. This gateway needs no operator to serve: it fills its
own route table and key table from the API, with watches, exactly as the operator's controllers would
(`routable_upstreams` is the same function), so any number of replicas serve the same routes, and keep
serving while the operator's leader, or an API server replica, changes. What it needs of the operator goes
the other way: its traffic (requests held for a route scaled to zero included) is written as a report the
operator reads (gateway_reports).

What a route is made of, from the API:
- the Endpoint, App or Workspace: kind, `public`, whether it scales from zero (`scaleToZero`, or a
  Workspace's `idleTimeout` when not suspended by hand), `keep_prefix` (Jupyter);
- its pods (labels shipyard.dev/kind and shipyard.dev/name): ready ones, or the panic fallback, as upstreams.
A route exists while its resource does and is not being deleted. Watches start with every object as ADDED
but say nothing of what was deleted while disconnected, so the whole state is relisted every RESYNC_SECONDS.

It must never write anything but its own traffic report: routes come from what others wrote.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Iterable

from pydantic import ValidationError

from shipyard.cluster.api import KubeApi, KubeError
from shipyard.compiler.common import KIND_LABEL, NAME_LABEL
from shipyard.controllers.serving import RouteTarget
from shipyard.controllers.serving.pods import Routed, routable_upstreams, serving_route
from shipyard.controllers.workspace.controller import ide_route
from shipyard.gateway_wiring import GatewayTraffic
from shipyard.resources import kind_class
from shipyard.runtime.pods import is_ready

log = logging.getLogger("shipyard.gateway")

ROUTED_KINDS = ("Endpoint", "App", "Workspace")
RESYNC_SECONDS = 30.0

Key = tuple[str, str, str]  # (kind, namespace, name)


def route_target(kind: str, resource: dict[str, Any], pods: Iterable[dict[str, Any]],
                 routed_before: Routed) -> tuple[RouteTarget | None, Routed]:
    """The route the controller of `kind` publishes for this resource and these pods (None: no route), with
    the controllers' own functions."""
    meta = resource.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return None, {}
    try:
        parsed: Any = kind_class(kind).model_validate({
            "kind": kind, "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "spec": resource.get("spec") or {}})
    except (ValidationError, KeyError):
        return None, {}  # the operator reports an invalid object on itself and runs nothing for it
    pods = list(pods)
    if kind == "Workspace":
        return ide_route(parsed, [p for p in pods if is_ready(p)]), {}
    upstreams, routed, _ = routable_upstreams(pods, routed_before)
    return serving_route(parsed, upstreams), routed


class ClusterRoutes:
    """Keeps a gateway's route table equal to what the API says (see the module docstring)."""

    def __init__(self, api: KubeApi, traffic: GatewayTraffic, namespaces: list[str] | None = None):
        self._api, self._traffic = api, traffic
        self._scopes: list[str | None] = list(namespaces) if namespaces else [None]
        self._lock = threading.Lock()
        self._resources: dict[Key, dict[str, Any]] = {}
        self._pods: dict[Key, dict[str, dict[str, Any]]] = {}
        self._routed: dict[Key, Routed] = {}
        self._published: set[Key] = set()
        # What a watch changed since the current relist began: the watch's state is at least as new as the
        # list's there, so the relist leaves it alone (a pod that became ready meanwhile stays routed).
        self._touched: set[Key] = set()
        self._touched_pods: dict[Key, set[str]] = {}
        self._stop = threading.Event()
        self.synced = threading.Event()

    def start(self) -> None:
        self.resync()  # before serving: a replica starts Ready with every route it should have
        for scope in self._scopes:
            for kind in ROUTED_KINDS:
                self._thread(f"watch-{kind.lower()}s", self._watch_resources, kind, scope)
                self._thread(f"watch-{kind.lower()}-pods", self._watch_pods, kind, scope)
        self._thread("resync-routes", self._resync_loop)

    def stop(self) -> None:
        self._stop.set()

    def _thread(self, name: str, target: Any, *args: Any) -> None:
        threading.Thread(target=target, args=args, name=name, daemon=True).start()

    # --- the API's side -------------------------------------------------------------------------------

    def resync(self) -> None:
        """Bring the whole state to a fresh list (what a watch cannot tell: deletions while away)."""
        with self._lock:
            self._touched, self._touched_pods = set(), {}
        resources: dict[Key, dict[str, Any]] = {}
        pods: dict[Key, dict[str, dict[str, Any]]] = {}
        for scope in self._scopes:
            for kind in ROUTED_KINDS:
                for obj in self._api.list(kind, scope):
                    resources[_key(kind, obj)] = obj
                for pod in self._api.list("Pod", scope, {KIND_LABEL: kind.lower()}):
                    if (key := _pod_key(kind, pod)) is not None:
                        pods.setdefault(key, {})[pod["metadata"]["name"]] = pod
        with self._lock:
            for key in (set(self._resources) | set(resources)) - self._touched:
                if key in resources:
                    self._resources[key] = resources[key]
                else:
                    self._resources.pop(key, None)
            for key in set(self._pods) | set(pods):
                current, listed = self._pods.setdefault(key, {}), pods.get(key, {})
                for name in (set(current) | set(listed)) - self._touched_pods.get(key, set()):
                    if name in listed:
                        current[name] = listed[name]
                    else:
                        current.pop(name, None)
                if not current:
                    del self._pods[key]
            keys = set(self._resources) | set(self._published)
        for key in keys:
            self._publish(key)
        self.synced.set()

    def _resync_loop(self) -> None:
        while not self._stop.wait(RESYNC_SECONDS):
            try:
                self.resync()
            except KubeError as exc:
                log.warning("cannot relist routes: %s", exc)

    def _watch_resources(self, kind: str, scope: str | None) -> None:
        for type_, obj in self._api.watch(kind, scope, None, self._stop):
            self.observe_resource(kind, type_, obj)

    def _watch_pods(self, kind: str, scope: str | None) -> None:
        for type_, pod in self._api.watch("Pod", scope, {KIND_LABEL: kind.lower()}, self._stop):
            self.observe_pod(kind, type_, pod)

    def observe_resource(self, kind: str, type_: str, obj: dict[str, Any]) -> None:
        """One watch event of an Endpoint, App or Workspace."""
        key = _key(kind, obj)
        with self._lock:
            self._touched.add(key)
            if type_ == "DELETED":
                self._resources.pop(key, None)
            else:
                self._resources[key] = obj
        self._publish(key)

    def observe_pod(self, kind: str, type_: str, pod: dict[str, Any]) -> None:
        """One watch event of a pod labelled with a routed kind."""
        key = _pod_key(kind, pod)
        if key is None:
            return
        with self._lock:
            self._touched_pods.setdefault(key, set()).add(pod["metadata"]["name"])
            pods = self._pods.setdefault(key, {})
            if type_ == "DELETED":
                pods.pop(pod["metadata"]["name"], None)
            else:
                pods[pod["metadata"]["name"]] = pod
        self._publish(key)

    # --- the table's side -----------------------------------------------------------------------------

    def _publish(self, key: Key) -> None:
        kind, namespace, name = key
        with self._lock:  # one writer at a time per table: a route never goes back to an older state
            resource = self._resources.get(key)
            route, routed = (None, {}) if resource is None else route_target(
                kind, resource, self._pods.get(key, {}).values(), self._routed.get(key, {}))
            self._routed[key] = routed
            if route is not None:
                self._traffic.set_route(route)
                self._published.add(key)
            elif key in self._published:
                self._traffic.remove_route(namespace, name)
                self._published.discard(key)
                self._routed.pop(key, None)


def _key(kind: str, obj: dict[str, Any]) -> Key:
    return kind, obj["metadata"]["namespace"], obj["metadata"]["name"]


def _pod_key(kind: str, pod: dict[str, Any]) -> Key | None:
    name = (pod["metadata"].get("labels") or {}).get(NAME_LABEL)
    return (kind, pod["metadata"]["namespace"], name) if name else None


def serve(args: Any) -> int:
    """Cluster mode of `python -m shipyard.gateway` (arguments parsed there): serve until SIGTERM or SIGINT."""
    import signal

    from shipyard.cluster.api import load_config
    from shipyard.gateway import GatewayServer, RouteTable, create_gateway_app
    from shipyard.gateway_reports import FIELD_MANAGER, TrafficReporter
    from shipyard.gateway_wiring import StoreKeys
    from shipyard.store.kubernetes import register_kinds
    from shipyard.store import StoreError
    from shipyard.store.kubernetes_apikeys import KubernetesApiKeys

    try:
        api = KubeApi(load_config(args.kubeconfig, args.context), field_manager=FIELD_MANAGER)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    register_kinds(api)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call would drown the access log
    namespaces = [n.strip() for n in args.watch_namespaces.split(",") if n.strip()] or None
    table = RouteTable()
    keys = KubernetesApiKeys(api, args.namespace)
    routes = ClusterRoutes(api, GatewayTraffic(table, ""), namespaces)
    reporter = TrafficReporter(api, table, args.namespace, args.identity)
    stop, draining = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        keys.sync()  # before the first request: a valid key is never refused for want of a watch event
        keys.start()
        routes.start()
    except (KubeError, StoreError) as exc:
        raise SystemExit(f"error: cannot read routes and keys from the API: {exc}") from None
    reporter.start()
    server = GatewayServer(create_gateway_app(table, StoreKeys(keys), reporter.activate, domain=args.domain,
                                              ready=lambda: routes.synced.is_set() and not draining.is_set()),
                           args.host, args.port)
    server.start()
    log.warning("gateway %s: listening on %s, routes of %s, keys and reports in %s", args.identity, server.url,
                ", ".join(namespaces) if namespaces else "all namespaces", args.namespace)
    print(f"gateway: listening on {server.url}", flush=True)
    try:
        stop.wait()
        # Not Ready first, serving still: Services stop sending new connections before the listener closes.
        draining.set()
        stop.clear()
        stop.wait(args.drain_seconds)
    finally:
        server.stop()
        reporter.stop()
        routes.stop()
        keys.stop()
        api.close()
    return 0
