"""The local runtime's StatefulSets with real processes: a one-replica server with a stable name, suspended by
scaling to 0 and resumed by scaling to 1 with its volume intact, and deleted with its pods."""

import sys
import textwrap
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest

from shipyard.runtime.local import processes
from shipyard.runtime.local.capacity import Capacity
from shipyard.runtime.local.runtime import LocalRuntime
from shipyard.runtime.local.statefulsets import REVISION_LABEL
from shipyard.runtime.pods import is_ready, pod_address
from shipyard.runtime.protocol import OwnerKey
from tests.conftest import wait_for

OWNER = OwnerKey("Workspace", "default", "ws")

# A tiny HTTP server on $PORT keeping a note in $DATA (GET reads it, POST writes it), which records in
# $DATA/events when it starts and when it gets SIGTERM, with its pod's uid.
SERVER = textwrap.dedent("""
    import http.server, os, signal, sys
    data, uid = os.environ["DATA"], os.environ["SHIPYARD_POD_UID"]
    def event(what):
        with open(os.path.join(data, "events"), "a") as fh:
            fh.write(f"{what} {uid}\\n")
    def on_term(*_):
        event("stop")
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    event("start")
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            path = os.path.join(data, "note")
            self.reply(open(path, "rb").read() if os.path.exists(path) else b"")
        def do_POST(self):
            with open(os.path.join(data, "note"), "wb") as fh:
                fh.write(self.rfile.read(int(self.headers["Content-Length"])))
            self.reply(b"ok")
        def reply(self, body):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
""")


def claim() -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "ws-home", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}


def statefulset(replicas: int, prestop: int | None = None) -> dict:
    container = {
        "name": "server", "image": "ignored", "command": [sys.executable, "-c", SERVER],
        "env": [{"name": "DATA", "value": "/home/jovyan"}],
        "ports": [{"name": "http", "containerPort": 8888, "protocol": "TCP"}],
        "volumeMounts": [{"name": "home", "mountPath": "/home/jovyan"}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "initialDelaySeconds": 0,
                           "periodSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 1},
    }
    if prestop is not None:
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": prestop}}}
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "ws", "namespace": "default", "labels": {"app": "ws"},
                         "ownerReferences": [{"apiVersion": "shipyard.dev/v1alpha1", "kind": "Workspace",
                                              "name": "ws", "uid": "uid-ws", "controller": True}]},
            "spec": {"replicas": replicas, "serviceName": "ws", "selector": {"matchLabels": {"app": "ws"}},
                     "template": {"metadata": {"labels": {"app": "ws"}},
                                  "spec": {"containers": [container], "terminationGracePeriodSeconds": 5,
                                           "volumes": [{"name": "home",
                                                        "persistentVolumeClaim": {"claimName": "ws-home"}}]}}}}


def make_runtime(home: Path) -> LocalRuntime:
    rt = LocalRuntime(home / "runtime", home / "volumes", home / "logs",
                      capacity=Capacity(cpu=Decimal(4), memory=Decimal(8 << 30)))
    rt.start()
    return rt


@pytest.fixture
def runtime(tmp_path):
    rt = make_runtime(tmp_path)
    rt.apply(claim())
    yield rt
    rt.stop(stop_pods=True, timeout=20)


def pods(rt):
    return rt.list("Pod", "default", {"app": "ws"})


def status(rt):
    return rt.get("StatefulSet", "default", "ws")["status"]


def running(rt):
    """ws-0 ready and the only pod, as the StatefulSet's status says too; the pod, or None."""
    current, s = pods(rt), status(rt)
    if len(current) != 1 or not is_ready(current[0]) or current[0]["metadata"].get("deletionTimestamp"):
        return None
    return current[0] if s.get("readyReplicas") == s.get("replicas") == s.get("updatedReplicas") == 1 else None


def suspended(rt, uid):
    return not pods(rt) and status(rt).get("replicas") == 0 and not processes.pod_processes(uid)


def call(pod, body: bytes | None = None) -> str:
    host, port = pod_address(pod)
    with urllib.request.urlopen(f"http://{host}:{port}/", data=body, timeout=5) as response:
        return response.read().decode()


def events(tmp_path: Path) -> list[str]:
    return (tmp_path / "volumes" / "default" / "ws-home" / "events").read_text().split("\n")[:-1]


def test_suspend_and_resume_keep_the_name_and_the_volume(runtime, tmp_path):
    notified = []
    runtime.subscribe(notified.append)
    runtime.apply(statefulset(1))
    first = wait_for(lambda: running(runtime), message="ws-0 ready")
    assert first["metadata"]["name"] == "ws-0" and first["spec"]["hostname"] == "ws-0"
    assert first["spec"]["subdomain"] == "ws" and first["spec"]["restartPolicy"] == "Always"
    labels = first["metadata"]["labels"]
    assert labels[REVISION_LABEL] == status(runtime)["updateRevision"] == status(runtime)["currentRevision"]
    assert labels["statefulset.kubernetes.io/pod-name"] == "ws-0" and labels["app"] == "ws"
    assert OWNER in notified  # changes reach the Shipyard resource through the StatefulSet
    assert call(first, b"hello from the first pod") == "ok"

    runtime.apply(statefulset(0))
    wait_for(lambda: suspended(runtime, first["metadata"]["uid"]), message="ws-0 stopped")

    runtime.apply(statefulset(1))
    second = wait_for(lambda: running(runtime), message="ws-0 ready again")
    assert second["metadata"]["name"] == "ws-0" and second["metadata"]["uid"] != first["metadata"]["uid"]
    assert call(second) == "hello from the first pod"
    assert events(tmp_path) == [f"start {first['metadata']['uid']}", f"stop {first['metadata']['uid']}",
                                f"start {second['metadata']['uid']}"]


def test_resuming_while_suspending_waits_for_the_old_pod_to_stop(runtime, tmp_path):
    runtime.apply(statefulset(1, prestop=1))
    first = wait_for(lambda: running(runtime), message="ws-0 ready")
    runtime.apply(statefulset(0, prestop=1))
    wait_for(lambda: pods(runtime)[0]["metadata"].get("deletionTimestamp"), message="ws-0 terminating")
    runtime.apply(statefulset(1, prestop=1))  # while ws-0 still runs out its preStop second
    assert pods(runtime)[0]["metadata"]["uid"] == first["metadata"]["uid"]
    second = wait_for(lambda: (p := running(runtime)) and p["metadata"]["uid"] != first["metadata"]["uid"] and p,
                      message="a new ws-0 ready")
    # Never two ws-0 at once: the new one started only after the old one had stopped.
    assert events(tmp_path) == [f"start {first['metadata']['uid']}", f"stop {first['metadata']['uid']}",
                                f"start {second['metadata']['uid']}"]


def test_deleting_the_statefulset_stops_and_removes_its_pods(runtime):
    runtime.apply(statefulset(1))
    pod = wait_for(lambda: running(runtime), message="ws-0 ready")
    runtime.delete("StatefulSet", "default", "ws")
    assert runtime.get("StatefulSet", "default", "ws")["metadata"]["deletionTimestamp"]
    with pytest.raises(ValueError, match="being deleted"):
        runtime.apply(statefulset(1))
    wait_for(lambda: runtime.get("StatefulSet", "default", "ws") is None and not pods(runtime)
             and not processes.pod_processes(pod["metadata"]["uid"]), message="StatefulSet and pod gone")


def test_shutdown_stops_the_pod_and_the_next_start_recreates_it_under_its_name(tmp_path):
    first = make_runtime(tmp_path)
    first.apply(claim())
    first.apply(statefulset(1))
    old = wait_for(lambda: running(first), message="ws-0 ready")
    first.stop(stop_pods=True, timeout=20)
    assert processes.pod_processes(old["metadata"]["uid"]) == []
    second = make_runtime(tmp_path)
    try:
        new = wait_for(lambda: (p := running(second)) and p["metadata"]["uid"] != old["metadata"]["uid"] and p,
                       message="ws-0 recreated and ready")
        assert new["metadata"]["name"] == "ws-0"
    finally:
        second.stop(stop_pods=True, timeout=20)


def test_volume_claim_templates_are_refused(runtime):
    sts = statefulset(1)
    sts["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "home"}, "spec": claim()["spec"]}]
    with pytest.raises(ValueError, match="volumeClaimTemplates"):
        runtime.apply(sts)
