"""Traffic reports: how gateway replicas running apart from the operator tell it about traffic, on a cluster.

The serving and workspace controllers decide scale to zero and back from the gateway's traffic (requests in
flight, requests held, the last request's time). In one process (the embedded daemon) they read the route
table itself; on a cluster the gateway is a Deployment of its own, with several replicas, and the operator's
leader may change at any time. So each gateway replica writes a **report**: one ConfigMap of its own
(`shipyard-gateway-report-IDENTITY` in Shipyard's namespace, label `shipyard.dev/gateway-report`), holding per
route its in-flight and held counts, its request rate and the time of its last request. The operator watches
those ConfigMaps and sums them (last request: the latest), which is the `Traffic` its controllers read.

Why this channel and not another:
- **Wake from zero**: a replica that holds the first request of a burst writes its report at once (held ≥ 1);
  the operator's watch sees it and enqueues that Endpoint, App or Workspace, whose reconcile scales it up.
  The request stays in the replica that holds it and is served by that replica as soon as its own watch of
  the pods sees one ready: nothing is handed between processes.
- **Several gateway replicas**: each writes only its own object, so writers never conflict and no counter is
  lost to a race; the sum is taken by the reader.
- **Operator fail-over**: the state lives in the API, not in a process. A new leader's watch starts with every
  current report, so a request held during the hand-over still wakes its Endpoint; while it is held its
  report is rewritten every HEARTBEAT_SECONDS, so it never looks stale.
- **A dead gateway**: a report not rewritten for STALE_SECONDS no longer counts as traffic in flight (its last
  request time still counts: it is history). The replica removes its report when it stops; one that died is
  deleted by the operator after FORGET_SECONDS.
- **Least privilege**: a gateway writes ConfigMaps in Shipyard's own namespace only; it never writes an
  Endpoint, an App or a Deployment.

A report is written when its content changed, at most every REPORT_SECONDS (a wake at once), and otherwise
every HEARTBEAT_SECONDS. So the operator learns of a request within REPORT_SECONDS (plus the watch's delay):
an `idleSeconds` shorter than a few seconds could scale an Endpoint to zero under a trickle of requests.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable

from shipyard.cluster.api import KubeApi, KubeError
from shipyard.controllers.serving import RouteTarget, TrafficStats
from shipyard.gateway.routes import RouteTable

log = logging.getLogger(__name__)

REPORT_LABEL = "shipyard.dev/gateway-report"
REPORT_KEY = "report.json"
FIELD_MANAGER = "shipyard-gateway"
REPORT_SECONDS = 1.0
HEARTBEAT_SECONDS = 10.0
STALE_SECONDS = 30.0
FORGET_SECONDS = 600.0


def report_name(identity: str) -> str:
    return f"shipyard-gateway-report-{identity}"[:253]


class TrafficReporter:
    """A gateway replica's side: its route table's traffic, written to its own ConfigMap."""

    def __init__(self, api: KubeApi, table: RouteTable, namespace: str, identity: str,
                 clock: Callable[[], float] = time.time):
        self._api, self._table, self._namespace, self._identity = api, table, namespace, identity
        self._clock = clock
        self._lock = threading.Lock()
        self._written: dict[str, Any] | None = None
        self._written_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def snapshot(self) -> dict[str, Any]:
        """Per route with any traffic so far: kind, inFlight, queued, rps, lastRequestAt (epoch seconds)."""
        out: dict[str, Any] = {}
        for route in self._table.routes():
            s = self._table.stats(route.project, route.name)
            if s.last_request_at is None and not s.in_flight and not s.queued:
                continue
            out[f"{route.project}/{route.name}"] = {
                "kind": route.kind, "inFlight": s.in_flight, "queued": s.queued,
                "rps": round(s.requests_per_second, 1), "lastRequestAt": s.last_request_at}
        return out

    def activate(self, project: str, name: str) -> None:
        """The gateway's activate(): a request is held, so say so now (the operator wakes the route)."""
        self.report(force=True)

    def report(self, force: bool = False) -> bool:
        """Write the report if it changed (or `force`, or a heartbeat is due). True if written."""
        with self._lock:
            routes, now = self.snapshot(), self._clock()
            if not force and routes == self._written and now - self._written_at < HEARTBEAT_SECONDS:
                return False
            body = {"gateway": self._identity, "reportedAt": now, "routes": routes}
            self._api.apply({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": report_name(self._identity), "namespace": self._namespace,
                             "labels": {REPORT_LABEL: "true"}},
                "data": {REPORT_KEY: json.dumps(body, sort_keys=True)}}, field_manager=FIELD_MANAGER)
            self._written, self._written_at = routes, now
            return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="traffic-report", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(REPORT_SECONDS):
            try:
                self.report()
            except KubeError as exc:
                log.warning("cannot write the traffic report: %s", exc)

    def stop(self) -> None:
        """Stop reporting and remove the report: a gateway that is gone has nothing in flight."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self._api.delete("ConfigMap", self._namespace, report_name(self._identity))
        except KubeError as exc:
            log.warning("cannot remove the traffic report: %s", exc)


class ReportedTraffic:
    """The operator's side: controllers.serving.Traffic summed over the gateway replicas' reports.

    Routes are not published here: every gateway replica builds its own from the API (gateway_cluster), so
    set_route and remove_route have nothing to do. `on_demand(kind, namespace, name)` is called for every
    route a fresh report holds requests for: the operator enqueues it at once instead of at its next resync.
    """

    def __init__(self, api: KubeApi, namespace: str, base_url: str,
                 on_demand: Callable[[str, str, str], None] | None = None, clock: Callable[[], float] = time.time):
        self._api, self._namespace, self._base_url = api, namespace, base_url.rstrip("/")
        self.on_demand = on_demand
        self._clock = clock
        self._lock = threading.Lock()
        self._reports: dict[str, dict[str, Any]] = {}  # ConfigMap name → its report
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._watch, name="watch-gateway-reports", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        for type_, obj in self._api.watch("ConfigMap", self._namespace, {REPORT_LABEL: "true"}, self._stop):
            self.observe(type_, obj)

    def observe(self, type_: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        report: dict[str, Any] | None = None
        if type_ != "DELETED":
            try:
                report = json.loads((obj.get("data") or {})[REPORT_KEY])
                float(report["reportedAt"]), dict(report["routes"])
            except (KeyError, TypeError, ValueError):
                log.warning("ignoring the malformed gateway report %s", name)
        with self._lock:
            if report is None:
                self._reports.pop(name, None)
            else:
                self._reports[name] = report
        if report is not None and self.on_demand is not None and self._fresh(report):
            for key, route in report["routes"].items():
                if route.get("queued"):
                    namespace, _, route_name = key.partition("/")
                    self.on_demand(route.get("kind", ""), namespace, route_name)
        self._forget_dead()

    def _fresh(self, report: dict[str, Any]) -> bool:
        return self._clock() - float(report["reportedAt"]) < STALE_SECONDS

    def _forget_dead(self) -> None:
        with self._lock:
            dead = [n for n, r in self._reports.items() if self._clock() - float(r["reportedAt"]) > FORGET_SECONDS]
        for name in dead:
            try:
                self._api.delete("ConfigMap", self._namespace, name)
            except KubeError as exc:
                log.warning("cannot delete the dead gateway's report %s: %s", name, exc)

    # --- controllers.serving.Traffic ----------------------------------------------------------------------

    def set_route(self, route: RouteTarget) -> None:
        pass

    def remove_route(self, project: str, name: str) -> None:
        pass

    def stats(self, project: str, name: str) -> TrafficStats | None:
        key = f"{project}/{name}"
        with self._lock:
            reports = list(self._reports.values())
        seen = [(r, r["routes"][key]) for r in reports if key in r["routes"]]
        if not seen:
            return None
        live = [route for r, route in seen if self._fresh(r)]
        last = [float(route["lastRequestAt"]) for _, route in seen if route.get("lastRequestAt") is not None]
        return TrafficStats(in_flight=sum(int(r.get("inFlight", 0)) for r in live),
                            queued=sum(int(r.get("queued", 0)) for r in live),
                            requests_per_second=sum(float(r.get("rps", 0.0)) for r in live),
                            last_request_at=max(last) if last else None)

    def url(self, project: str, name: str) -> str:
        return f"{self._base_url}/{project}/{name}/"
