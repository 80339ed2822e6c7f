"""The local runtime's Deployments and HPAs with real processes: readiness, restarts, scaling, rollouts,
graceful deletion and autoscaling on pod metrics."""

import os
import signal
import sys
import textwrap
import threading
import time
import urllib.request
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from shipyard.runtime.local import processes
from shipyard.runtime.local.capacity import Capacity
from shipyard.runtime.local.deployments import TEMPLATE_HASH
from shipyard.runtime.local.runtime import LocalRuntime
from shipyard.runtime.pods import is_ready, pod_address
from shipyard.runtime.protocol import IN_FLIGHT_METRIC, OwnerKey
from tests.conftest import wait_for

OWNER = OwnerKey("Endpoint", "default", "web")

# A tiny HTTP server on $PORT that answers with $VERSION; it can wait before listening (DELAY), answer 503
# while a file exists (SICK), record the moment it gets SIGTERM (MARKER) or ignore SIGTERM (IGNORE_TERM).
SERVER = textwrap.dedent("""
    import http.server, os, signal, sys, time
    marker = os.environ.get("MARKER")
    def on_term(*_):
        if marker:
            with open(marker, "a") as fh:
                fh.write(f"{time.time()}\\n")
        if not os.environ.get("IGNORE_TERM"):
            sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    time.sleep(float(os.environ.get("DELAY", "0")))
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = os.environ.get("VERSION", "v1").encode()
            self.send_response(503 if os.path.exists(os.environ.get("SICK", "/nonexistent")) else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
""")


def deployment(replicas: int | None = 2, version: str = "v1", prestop: int | None = None, grace: int = 5,
               **env: str) -> dict:
    container = {
        "name": "server", "image": "ignored", "command": [sys.executable, "-c", SERVER],
        "env": [{"name": "VERSION", "value": version}] + [{"name": k, "value": v} for k, v in env.items()],
        "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "initialDelaySeconds": 0,
                           "periodSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 1},
    }
    if prestop is not None:
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": prestop}}}
    spec = {"selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [container], "terminationGracePeriodSeconds": grace}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
                         "ownerReferences": [{"apiVersion": "shipyard.dev/v1alpha1", "kind": "Endpoint",
                                              "name": "web", "uid": "uid-web", "controller": True}]},
            "spec": spec}


def make_runtime(home: Path, **kwargs) -> LocalRuntime:
    rt = LocalRuntime(home / "runtime", home / "volumes", home / "logs",
                      capacity=Capacity(cpu=Decimal(4), memory=Decimal(8 << 30)), **kwargs)
    rt.start()
    return rt


@pytest.fixture
def runtime(tmp_path):
    rt = make_runtime(tmp_path)
    yield rt
    rt.stop(stop_pods=True, timeout=20)


def pods(rt):
    return sorted(rt.list("Pod", "default", {"app": "web"}), key=lambda p: p["metadata"]["creationTimestamp"])


def ready_pods(rt):
    return [p for p in pods(rt) if is_ready(p)]


def status(rt):
    return rt.get("Deployment", "default", "web")["status"]


def settled(rt, replicas):
    """Exactly `replicas` pods, all ready, all of the current template, none terminating."""
    s, current = status(rt), pods(rt)
    return (len(current) == replicas and len(ready_pods(rt)) == replicas and s.get("updatedReplicas") == replicas
            and s.get("availableReplicas") == replicas and s.get("replicas") == replicas)


def get(address) -> str:
    with urllib.request.urlopen(f"http://{address[0]}:{address[1]}/", timeout=5) as response:
        return response.read().decode()


def container_status(pod):
    return pod["status"]["containerStatuses"][0]


def condition(obj, type_):
    return next((c for c in obj["status"].get("conditions", []) if c["type"] == type_), None)


def test_replicas_become_ready_only_once_the_probe_passes(runtime):
    notified = []
    runtime.subscribe(notified.append)
    runtime.apply(deployment(replicas=2, DELAY="1"))
    wait_for(lambda: settled(runtime, 2), message="2/2 ready")
    for pod in pods(runtime):
        started = datetime.fromisoformat(container_status(pod)["state"]["running"]["startedAt"])
        became_ready = datetime.fromisoformat(condition(pod, "Ready")["lastTransitionTime"])
        assert (became_ready - started).total_seconds() >= 1.0  # the server listened only after 1 s
        assert pod["metadata"]["labels"][TEMPLATE_HASH] in pod["metadata"]["name"]
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
        assert pod["spec"]["restartPolicy"] == "Always"
        assert get(pod_address(pod)) == "v1"
    s = status(runtime)
    assert s["observedGeneration"] == 1 and s["unavailableReplicas"] == 0
    assert condition({"status": s}, "Available")["reason"] == "MinimumReplicasAvailable"
    assert condition({"status": s}, "Progressing")["reason"] == "NewReplicaSetAvailable"
    assert OWNER in notified  # changes reach the Shipyard resource through the Deployment


def test_killed_container_restarts_in_place_on_the_same_port(runtime):
    waiting_reasons = []

    def watch(_key):
        for pod in pods(runtime):
            reason = container_status(pod).get("state", {}).get("waiting", {}).get("reason") \
                if pod["status"].get("containerStatuses") else None
            if reason:
                waiting_reasons.append(reason)

    runtime.subscribe(watch)
    runtime.apply(deployment(replicas=2))
    wait_for(lambda: settled(runtime, 2), message="2/2 ready")
    victim = pods(runtime)[0]
    name, uid, address = victim["metadata"]["name"], victim["metadata"]["uid"], pod_address(victim)
    [workload] = processes.pod_processes(uid)
    os.kill(workload, signal.SIGKILL)
    restarted = wait_for(lambda: (p := runtime.get("Pod", "default", name)) and container_status(p)["restartCount"] == 1
                         and is_ready(p) and p, message="restarted and ready")
    assert "CrashLoopBackOff" in waiting_reasons
    assert restarted["metadata"]["uid"] == uid and pod_address(restarted) == address
    assert container_status(restarted)["lastState"]["terminated"]["exitCode"] == 137
    assert get(address) == "v1"
    assert len(pods(runtime)) == 2  # restarted in place, not replaced


def test_crashing_container_backs_off_longer_each_time(runtime):
    crashing = deployment(replicas=1)
    crashing["spec"]["template"]["spec"]["containers"][0]["command"] = [sys.executable, "-c", "raise SystemExit(3)"]
    runtime.apply(crashing)
    crashed = wait_for(lambda: (p := pods(runtime)) and container_status(p[0])["restartCount"] >= 2
                       and "waiting" in container_status(p[0])["state"] and p[0], message="second crash")
    waiting = container_status(crashed)["state"]["waiting"]
    assert waiting["reason"] == "CrashLoopBackOff" and "back-off 4s" in waiting["message"]  # 1 s, 2 s, 4 s
    assert container_status(crashed)["lastState"]["terminated"]["exitCode"] == 3
    assert not is_ready(crashed) and crashed["status"]["phase"] == "Running"
    assert condition({"status": status(runtime)}, "Available")["status"] == "False"


def test_a_failing_probe_makes_a_running_pod_not_ready_and_back(runtime, tmp_path):
    sick = tmp_path / "sick"
    notified = []
    runtime.apply(deployment(replicas=1, SICK=str(sick)))
    wait_for(lambda: settled(runtime, 1), message="ready")
    runtime.subscribe(notified.append)
    sick.write_text("")
    wait_for(lambda: not ready_pods(runtime), message="not ready after failing probes")
    assert OWNER in notified
    [pod] = pods(runtime)
    assert container_status(pod)["restartCount"] == 0 and "running" in container_status(pod)["state"]
    assert status(runtime)["readyReplicas"] == 0
    sick.unlink()
    wait_for(lambda: settled(runtime, 1), message="ready again")


def test_scaling_up_and_down_and_apply_without_replicas_keeps_them(runtime):
    runtime.apply(deployment(replicas=2))
    wait_for(lambda: settled(runtime, 2), message="2 ready")
    runtime.apply(deployment(replicas=3))
    wait_for(lambda: settled(runtime, 3), message="3 ready")
    generation = runtime.get("Deployment", "default", "web")["metadata"]["generation"]
    applied = runtime.apply(deployment(replicas=None))  # as when an HPA owns the count
    assert applied["spec"]["replicas"] == 3 and applied["metadata"]["generation"] == generation
    runtime.apply(deployment(replicas=1))
    wait_for(lambda: settled(runtime, 1), message="scaled down to 1")
    assert status(runtime)["observedGeneration"] == generation + 1


def test_rolling_update_keeps_replicas_ready_and_deletes_old_pods_only_after_new_ones_are_ready(runtime):
    runtime.apply(deployment(replicas=2, version="v1"))
    wait_for(lambda: settled(runtime, 2), message="v1 ready")
    old_hash = pods(runtime)[0]["metadata"]["labels"][TEMPLATE_HASH]
    observed: list[tuple[int, int, int]] = []  # (ready pods, ready new pods, old pods terminating)
    lock = threading.Lock()

    def observe(_key=None):
        current = pods(runtime)
        ready = [p for p in current if is_ready(p)]
        new_ready = [p for p in ready if p["metadata"]["labels"][TEMPLATE_HASH] != old_hash]
        draining = [p for p in current if p["metadata"]["labels"][TEMPLATE_HASH] == old_hash
                    and p["metadata"].get("deletionTimestamp")]
        with lock:
            observed.append((len(ready), len(new_ready), len(draining)))

    runtime.subscribe(observe)
    runtime.apply(deployment(replicas=2, version="v2"))

    def rolled_out():
        observe()  # polling too, between notifications
        return settled(runtime, 2) and all(p["metadata"]["labels"][TEMPLATE_HASH] != old_hash for p in pods(runtime))

    wait_for(rolled_out, message="v2 rolled out")
    with lock:
        assert min(ready for ready, _, _ in observed) >= 2, observed
        # An old pod starts terminating only once as many new pods are ready.
        assert all(new_ready >= draining for _, new_ready, draining in observed), observed
    assert [get(pod_address(p)) for p in pods(runtime)] == ["v2", "v2"]
    s = status(runtime)
    assert s["observedGeneration"] == 2 and s["updatedReplicas"] == 2
    assert condition({"status": s}, "Progressing")["reason"] == "NewReplicaSetAvailable"


def test_deleting_a_pod_stops_routing_then_waits_for_prestop_before_sigterm(runtime, tmp_path):
    marker = tmp_path / "sigterm"
    runtime.apply(deployment(replicas=1, prestop=1, MARKER=str(marker)))
    wait_for(lambda: settled(runtime, 1), message="ready")
    [pod] = pods(runtime)
    notified = []
    runtime.subscribe(notified.append)
    deleted_at = time.time()
    runtime.delete("Pod", "default", pod["metadata"]["name"])
    terminating = runtime.get("Pod", "default", pod["metadata"]["name"])
    assert not is_ready(terminating) and condition(terminating, "Ready")["status"] == "False"
    wait_for(lambda: OWNER in notified, message="owner told the pod is not ready")
    sigterm_at = float(wait_for(lambda: marker.exists() and marker.read_text().split(), message="SIGTERM")[0])
    assert sigterm_at - deleted_at >= 1.0  # the preStop sleep came first
    wait_for(lambda: runtime.get("Pod", "default", pod["metadata"]["name"]) is None, message="pod removed")
    wait_for(lambda: settled(runtime, 1), message="replacement ready")


def test_a_container_ignoring_sigterm_is_killed_after_the_grace_period(runtime, tmp_path):
    marker = tmp_path / "sigterm"
    runtime.apply(deployment(replicas=1, prestop=1, grace=3, MARKER=str(marker), IGNORE_TERM="1"))
    wait_for(lambda: settled(runtime, 1), message="ready")
    [pod] = pods(runtime)
    deleted_at = time.monotonic()
    runtime.delete("Pod", "default", pod["metadata"]["name"])
    wait_for(lambda: not processes.pod_processes(pod["metadata"]["uid"]), message="killed")
    elapsed = time.monotonic() - deleted_at
    assert marker.exists()  # SIGTERM came first, was ignored …
    assert 3.0 <= elapsed < 8.0  # … and SIGKILL followed: 1 s preStop + max(3 - 1, 2) s grace


class FakeMetrics:
    def __init__(self):
        self.value: float | None = 0.0
        self.asked: set[tuple[str, str, str]] = set()

    def pod_metric(self, namespace, pod, metric):
        self.asked.add((namespace, pod, metric))
        return self.value


def hpa(window_down: int = 2) -> dict:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default",
                         "ownerReferences": [{"apiVersion": "shipyard.dev/v1alpha1", "kind": "Endpoint",
                                              "name": "web", "uid": "uid-web", "controller": True}]},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 1, "maxReplicas": 3,
                     "metrics": [{"type": "Pods", "pods": {"metric": {"name": IN_FLIGHT_METRIC},
                                                           "target": {"type": "AverageValue", "averageValue": "1"}}}],
                     "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0},
                                  "scaleDown": {"stabilizationWindowSeconds": window_down}}}}


def test_hpa_scales_up_on_pod_metrics_and_back_down_after_the_window(tmp_path):
    metrics = FakeMetrics()
    rt = make_runtime(tmp_path, metrics=metrics, hpa_sync_seconds=0.2)
    try:
        rt.apply(deployment(replicas=None))  # created with 1: the HPA owns the count
        rt.apply(hpa(window_down=2))
        wait_for(lambda: settled(rt, 1), message="1 ready")
        wait_for(lambda: condition(rt.get("HorizontalPodAutoscaler", "default", "web"), "ScalingActive"),
                 message="HPA synced")
        metrics.value = 3.0  # three requests in flight on the one ready pod, target 1 per pod
        wait_for(lambda: settled(rt, 3), message="scaled to 3")
        # currentReplicas is what the target had when the HPA last synced: the next sync sees the 3.
        scaled = wait_for(lambda: (h := rt.get("HorizontalPodAutoscaler", "default", "web"))
                          and h["status"]["currentReplicas"] == 3 and h, message="HPA status at 3")
        assert scaled["status"]["lastScaleTime"] and scaled["status"]["desiredReplicas"] == 3
        assert condition(scaled, "ScalingActive")["reason"] == "ValidMetricFound"
        assert {pod for _, pod, _ in metrics.asked} >= {p["metadata"]["name"] for p in pods(rt)}
        metrics.value = 0.0
        went_quiet = time.monotonic()
        wait_for(lambda: settled(rt, 1), message="back to 1")
        # Not before the 2 s window has passed since the last high sample, which may predate the flip by up
        # to one sync period (0.2 s) and a tick.
        assert time.monotonic() - went_quiet >= 1.5
        assert rt.get("Deployment", "default", "web")["spec"]["replicas"] == 1
    finally:
        rt.stop(stop_pods=True, timeout=20)


def test_hpa_without_a_metrics_source_reports_it_and_keeps_replicas(runtime):
    runtime.apply(deployment(replicas=None))
    runtime.apply(hpa())
    wait_for(lambda: (c := condition(runtime.get("HorizontalPodAutoscaler", "default", "web"), "ScalingActive"))
             and c["reason"] == "FailedGetPodsMetric", message="HPA reports no metrics")
    assert runtime.get("Deployment", "default", "web")["spec"]["replicas"] == 1


def test_serving_kinds_are_stored_with_generations(tmp_path):
    rt = LocalRuntime(tmp_path / "runtime", tmp_path / "volumes", tmp_path / "logs")  # not started: storage only
    meta = {"name": "web", "namespace": "default"}
    objects = [
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta,
         "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta,
         "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta,
         "spec": {"rules": [{"host": "web.example.com"}]}},
        hpa(),
    ]
    for obj in objects:
        stored = rt.apply(obj)
        assert stored["metadata"]["generation"] == 1 and stored["metadata"]["uid"]
        assert rt.apply(obj)["metadata"]["generation"] == 1  # unchanged spec: same generation
        changed = {**obj, "spec": {**obj["spec"], "extra": True}}
        assert rt.apply(changed)["metadata"]["generation"] == 2
        rt.delete(obj["kind"], "default", "web")
        assert rt.get(obj["kind"], "default", "web") is None
    created = rt.apply(deployment(replicas=None))
    assert created["spec"]["replicas"] == 1
    with pytest.raises(ValueError, match="cannot run ConfigMap"):
        rt.apply({"kind": "ConfigMap", "metadata": meta})


def test_shutdown_stops_deployment_pods_and_the_next_start_replaces_them(tmp_path):
    first = make_runtime(tmp_path)
    first.apply(deployment(replicas=1))
    wait_for(lambda: settled(first, 1), message="ready")
    [old] = pods(first)
    first.stop(stop_pods=True, timeout=20)
    assert processes.pod_processes(old["metadata"]["uid"]) == []
    second = make_runtime(tmp_path)
    try:
        wait_for(lambda: settled(second, 1) and pods(second)[0]["metadata"]["uid"] != old["metadata"]["uid"],
                 message="replacement ready")
    finally:
        second.stop(stop_pods=True, timeout=20)


def test_restarted_runtime_adopts_deployment_pods(tmp_path):
    first = make_runtime(tmp_path)
    first.apply(deployment(replicas=1))
    wait_for(lambda: settled(first, 1), message="ready")
    [before] = pods(first)
    first.stop(stop_pods=False)  # as if the daemon died: the pod keeps running
    second = make_runtime(tmp_path)
    try:
        wait_for(lambda: settled(second, 1), message="adopted and ready")
        [after] = pods(second)
        assert after["metadata"]["uid"] == before["metadata"]["uid"]
        assert after["status"]["pid"] == before["status"]["pid"]
        assert container_status(after)["restartCount"] == 0
        assert get(pod_address(after)) == "v1"
    finally:
        second.stop(stop_pods=True, timeout=20)
