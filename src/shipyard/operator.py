"""The cluster composition root: `python -m shipyard.operator`, what the Helm chart's Deployment runs.

The same controllers `shipyard up` runs, with the Kubernetes API as their store (Shipyard's custom
resources) and the cluster as their runtime (server-side apply of the compiled objects; Kubernetes' own Job,
Deployment and HorizontalPodAutoscaler controllers run them). Beside them, in the same process, the API
server the CLI talks to (`shipyard --context`).

The gateway is not here: it is a Deployment of its own (`python -m shipyard.gateway --in-cluster`,
shipyard.gateway_cluster) that builds its routes from the API, so it keeps serving while the leader changes.
The controllers learn its traffic (and requests held for a route scaled to zero) from the reports its
replicas write (shipyard.gateway_reports), which this process watches.

Only the Lease holder reconciles (leader election) and is Ready (/readyz), so the API's Service reaches the
leader. A leader that loses its Lease exits, to come back as a candidate with fresh state — the usual contract
of Kubernetes controllers.
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

import uvicorn
from fastapi import Response
from fastapi.responses import PlainTextResponse

from shipyard.api.app import create_app
from shipyard.api.auth import hash_token
from shipyard.cluster.api import KubeApi, load_config
from shipyard.cluster.authority import ClusterIdentities, ClusterRbac
from shipyard.cluster.leader import LeaderElector
from shipyard.compiler.common import GATEWAY_SERVICE_URL
from shipyard.controllers.manager import RESYNC_SECONDS, Manager
from shipyard.controllers.project import ProjectController
from shipyard.controllers.serving import ServingController
from shipyard.controllers.sweep import SweepController
from shipyard.controllers.trainingjob import TrainingJobController
from shipyard.controllers.workspace import WorkspaceController
from shipyard.controllers.tracking import Tracker
from shipyard.gateway_reports import ReportedTraffic
from shipyard.ide_activity import HttpIdeActivity
from shipyard.pod_access import RuntimePortForward, RuntimeWorkspaceTokens
from shipyard.pod_logs import ClusterPodLogs, PodLogs
from shipyard.runtime.kubernetes import KubernetesRuntime
from shipyard.store.kubernetes import KubernetesStore

log = logging.getLogger("shipyard.operator")
ADMIN_TOKEN_ENV = "SHIPYARD_ADMIN_TOKEN"


class ClusterLogs(PodLogs):
    """`shipyard logs KIND/NAME` on a cluster: the pod log API of the pods pod_logs.choose picks."""

    def __init__(self, runtime: KubernetesRuntime):
        super().__init__(ClusterPodLogs(runtime))


class Operator:
    """Everything but the HTTP listeners, so tests can run it against an API mock server in-process."""

    def __init__(self, api: KubeApi, namespace: str, identity: str, watch_namespaces: list[str] | None = None,
                 gateway_url: str = GATEWAY_SERVICE_URL, tracker: Tracker | None = None,
                 resync_seconds: float = RESYNC_SECONDS, lease_name: str = "shipyard-operator", lease_seconds: int = 15,
                 retry_period: float = 2.0):
        self.api = api
        self.store = KubernetesStore(api, watch_namespaces, system_namespace=namespace)
        self.runtime = KubernetesRuntime(api, watch_namespaces)
        # Held requests wake their route at once (the manager's queue), not at its next resync.
        self.traffic = ReportedTraffic(api, namespace, gateway_url,
                                       on_demand=lambda kind, ns, name: self.manager.enqueue(kind, ns, name))
        # No PodMetrics here: on a cluster the HorizontalPodAutoscaler reads the gateway's metrics through
        # the custom metrics API (prometheus-adapter), not from this process.
        self.manager = Manager(self.store, self.runtime, [
            TrainingJobController(self.store, self.runtime, tracker=tracker),
            ServingController("Endpoint", self.store, self.runtime, self.traffic, keys=self.store.api_keys,
                              tracker=tracker),
            ServingController("App", self.store, self.runtime, self.traffic, keys=self.store.api_keys),
            SweepController(self.store, tracker=tracker),
            WorkspaceController(self.store, self.runtime, self.traffic, HttpIdeActivity()),
            ProjectController(self.store, self.runtime),
        ], resync_seconds=resync_seconds)
        self.elector = LeaderElector(api, namespace, lease_name, identity, lease_seconds=lease_seconds,
                                     retry_period=retry_period, renew_deadline=max(retry_period * 3, lease_seconds * 2 / 3))
        self.stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> None:
        """Start watching at once (every replica keeps the API's watches and the traffic reports current)
        and reconciling once elected."""
        self.store.start()
        self.runtime.start()
        self.traffic.start()
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
        self.traffic.stop()
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
    parser.add_argument("--gateway-url", default=os.environ.get("SHIPYARD_GATEWAY_URL", GATEWAY_SERVICE_URL),
                        help="the gateway's address as users reach it (an Ingress host), shown in status.url")
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
    app = create_app(operator.store, ClusterLogs(operator.runtime), hash_token(token), package_version("shipyard"),
                     port_forward=RuntimePortForward(operator.runtime), models=tracker,
                     workspace_tokens=RuntimeWorkspaceTokens(operator.runtime), audit_log_json=True)
    # Kubernetes authenticates and authorizes every caller but the bootstrap admin (cluster/authority.py); the
    # audit trail goes to this log as JSON lines (Kubernetes' own audit covers the custom resources).
    app.state.identities, app.state.rbac = ClusterIdentities(api), ClusterRbac(api)

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> Response:
        # Only the leader is Ready: the API's watch versions are per process, so its Service must reach one.
        leading = operator.elector.leading.is_set()
        return PlainTextResponse("leading\n" if leading else "standby\n", status_code=200 if leading else 503)

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5))
    operator.start()
    # Leadership lost: stop serving too, so the pod restarts as a fresh candidate.
    threading.Thread(target=lambda: (operator.stopped.wait(), setattr(server, "should_exit", True)),
                     daemon=True).start()
    log.info("Shipyard operator %s: API on %s:%d, namespace %s, watching %s",
             package_version("shipyard"), args.host, args.api_port, args.namespace,
             ", ".join(namespaces) if namespaces else "all namespaces")
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    lost = False
    try:
        server.run(sockets=[_listen(args.host, args.api_port)])
    finally:
        lost = operator.stopped.is_set()
        operator.stop()
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
