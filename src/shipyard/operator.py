"""The cluster composition root: `python -m shipyard.operator`, what the Helm chart's Deployment runs.

The same controllers `shipyard up` runs, with the Kubernetes API as their store (Shipyard's custom
resources) and the cluster as their runtime (server-side apply of the compiled objects; Kubernetes' own Job,
Deployment and HorizontalPodAutoscaler controllers run them). Beside them, in the same process, the API
server the CLI talks to (`shipyard --context`) and the gateway in front of every Endpoint and App: the serving
controller hands the gateway its routes in memory, as the embedded daemon does.

Only the Lease holder reconciles (leader election); every replica serves the API. A leader that loses its
Lease exits, to come back as a candidate with fresh state — the usual contract of Kubernetes controllers.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from importlib.metadata import version as package_version
from typing import Iterator

import uvicorn

from shipyard.api.app import create_app
from shipyard.api.auth import hash_token
from shipyard.cluster.api import KubeApi, load_config
from shipyard.cluster.leader import LeaderElector
from shipyard.compiler.common import GATEWAY_SERVICE_URL, KIND_LABEL, NAME_LABEL
from shipyard.controllers.manager import Manager
from shipyard.controllers.serving import ServingController
from shipyard.controllers.sweep import SweepController
from shipyard.controllers.trainingjob import TrainingJobController
from shipyard.controllers.trainingjob.replicas import newest_pods
from shipyard.controllers.workspace import WorkspaceController
from shipyard.controllers.tracking import Tracker
from shipyard.gateway import GatewayServer, RouteTable, create_gateway_app
from shipyard.gateway_wiring import GatewayTraffic, StoreKeys, activator
from shipyard.ide_activity import HttpIdeActivity
from shipyard.pod_access import RuntimePortForward, RuntimeWorkspaceTokens
from shipyard.resources import Resource
from shipyard.runtime.kubernetes import KubernetesRuntime
from shipyard.store import NotFound
from shipyard.store.kubernetes import KubernetesStore

log = logging.getLogger("shipyard.operator")
ADMIN_TOKEN_ENV = "SHIPYARD_ADMIN_TOKEN"


class ClusterLogs:
    """`shipyard logs KIND/NAME --replica N` on a cluster: the pod log API of that replica's newest pod."""

    def __init__(self, runtime: KubernetesRuntime):
        self._runtime = runtime

    def stream(self, resource: Resource, replica: int, follow: bool, tail_lines: int | None) -> Iterator[bytes]:
        ns, name = resource.metadata.namespace, resource.metadata.name
        pods = self._runtime.list("Pod", ns, {KIND_LABEL: resource.kind.lower(), NAME_LABEL: name})
        pod = newest_pods(pods).get(replica)
        if pod is None:
            raise NotFound(f"{resource.ref} has no replica {replica} running or finished yet")
        return self._runtime.read_log_lines(ns, pod["metadata"]["name"], follow=follow, tail_lines=tail_lines)


class Operator:
    """Everything but the HTTP listeners, so tests can run it against an API mock server in-process."""

    def __init__(self, api: KubeApi, namespace: str, identity: str, watch_namespaces: list[str] | None = None,
                 gateway_url: str = GATEWAY_SERVICE_URL, tracker: Tracker | None = None,
                 resync_seconds: float = 30.0, lease_name: str = "shipyard-operator", lease_seconds: int = 15,
                 retry_period: float = 2.0):
        self.api = api
        self.store = KubernetesStore(api, watch_namespaces, system_namespace=namespace)
        self.runtime = KubernetesRuntime(api, watch_namespaces)
        self.routes = RouteTable()
        self.traffic = GatewayTraffic(self.routes, gateway_url)
        # No PodMetrics here: on a cluster the HorizontalPodAutoscaler reads the gateway's metrics through
        # the custom metrics API (prometheus-adapter), not from this process.
        self.manager = Manager(self.store, self.runtime, [
            TrainingJobController(self.store, self.runtime, tracker=tracker),
            ServingController("Endpoint", self.store, self.runtime, self.traffic, keys=self.store.api_keys,
                              tracker=tracker),
            ServingController("App", self.store, self.runtime, self.traffic, keys=self.store.api_keys),
            SweepController(self.store, tracker=tracker),
            WorkspaceController(self.store, self.runtime, self.traffic, HttpIdeActivity()),
        ], resync_seconds=resync_seconds)
        self.activate = activator(self.routes, lambda kind, ns, name: self.manager.enqueue(kind, ns, name))
        self.elector = LeaderElector(api, namespace, lease_name, identity, lease_seconds=lease_seconds,
                                     retry_period=retry_period, renew_deadline=max(retry_period * 3, lease_seconds * 2 / 3))
        self.stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> None:
        """Start watching at once (every replica keeps its routes' keys and the API's watches current) and
        reconciling once elected."""
        self.store.start()
        self.runtime.start()
        self._thread = threading.Thread(target=self._lead, name="leader-election", daemon=True)
        self._thread.start()

    def _lead(self) -> None:
        self.elector.run(on_started=self.manager.start, on_stopped=self._lost)

    def _lost(self) -> None:
        self.manager.stop()
        self.stopped.set()

    def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.elector.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.manager.stop()
        self.elector.release()
        self.runtime.stop()
        self.store.close()
        self.api.close()
        self.stopped.set()


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise SystemExit(f"error: cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    return sock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shipyard-operator", description="Shipyard's controllers on a cluster")
    parser.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", "shipyard-system"),
                        help="where the operator runs: its Lease, admin token and API keys live here")
    parser.add_argument("--watch-namespaces", default="",
                        help="comma-separated namespaces (projects) to reconcile; empty: all")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--api-port", type=int, default=7433)
    parser.add_argument("--gateway-port", type=int, default=7480)
    parser.add_argument("--gateway-url", default=os.environ.get("SHIPYARD_GATEWAY_URL", GATEWAY_SERVICE_URL),
                        help="the gateway's address as users reach it (an Ingress host), shown in status.url")
    parser.add_argument("--gateway-domain", default=os.environ.get("SHIPYARD_GATEWAY_DOMAIN") or None,
                        help="also route by Host: NAME.PROJECT.DOMAIN")
    parser.add_argument("--tracking-uri", default=os.environ.get("SHIPYARD_MLFLOW_TRACKING_URI") or None,
                        help="the MLflow tracking server (the chart's, or an external one); none: no tracking")
    parser.add_argument("--kubeconfig", default=None, help="outside a cluster: a kubeconfig file")
    parser.add_argument("--context", default=None, help="outside a cluster: a kubeconfig context")
    parser.add_argument("--identity", default=os.environ.get("POD_NAME") or socket.gethostname())
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    token = os.environ.get(ADMIN_TOKEN_ENV, "").strip()
    if not token:
        raise SystemExit(f"error: {ADMIN_TOKEN_ENV} is not set (the chart sets it from the shipyard-admin-token "
                         "Secret)")
    try:
        api = KubeApi(load_config(args.kubeconfig, args.context))
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    tracker = None
    if args.tracking_uri:
        from shipyard.tracking import MlflowTracker

        tracker = MlflowTracker(args.tracking_uri.rstrip("/"))
    namespaces = [n.strip() for n in args.watch_namespaces.split(",") if n.strip()] or None
    operator = Operator(api, args.namespace, args.identity, namespaces, gateway_url=args.gateway_url,
                        tracker=tracker)
    gateway = GatewayServer(create_gateway_app(operator.routes, StoreKeys(operator.store.api_keys), operator.activate,
                                               domain=args.gateway_domain, ready=operator.elector.leading.is_set),
                            args.host, args.gateway_port)
    gateway.start()
    app = create_app(operator.store, ClusterLogs(operator.runtime), hash_token(token), package_version("shipyard"),
                     port_forward=RuntimePortForward(operator.runtime), models=tracker,
                     workspace_tokens=RuntimeWorkspaceTokens(operator.runtime))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5))
    operator.start()
    # Leadership lost: stop serving too, so the pod restarts as a fresh candidate.
    threading.Thread(target=lambda: (operator.stopped.wait(), setattr(server, "should_exit", True)),
                     daemon=True).start()
    log.info("Shipyard operator %s: API on %s:%d, gateway on %s:%d, namespace %s, watching %s",
             package_version("shipyard"), args.host, args.api_port, args.host, args.gateway_port, args.namespace,
             ", ".join(namespaces) if namespaces else "all namespaces")
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    lost = False
    try:
        server.run(sockets=[_listen(args.host, args.api_port)])
    finally:
        lost = operator.stopped.is_set()
        operator.stop()
        gateway.stop()
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
