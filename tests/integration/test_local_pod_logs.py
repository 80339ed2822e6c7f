"""Pod logs on the local runtime with real processes: the size cap, the previous attempt, retention with the
owner, and `shipyard logs`' pod choice (server.RuntimeLogs) over Jobs, Deployments and StatefulSets."""

import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from shipyard.api.logs import LogOptions
from shipyard.compiler import compile_resource
from shipyard.resources import TrainingJob
from shipyard.runtime.local.capacity import Capacity
from shipyard.runtime.local.lifecycle import Backoff
from shipyard.runtime.local.runtime import LocalRuntime
from shipyard.server import RuntimeLogs
from shipyard.store import NotFound
from tests.conftest import wait_for

MiB = 1 << 20


@pytest.fixture
def home(tmp_path):
    return tmp_path


def make_runtime(home: Path, **kwargs) -> LocalRuntime:
    rt = LocalRuntime(home / "runtime", home / "volumes", home / "logs",
                      capacity=Capacity(cpu=Decimal(4), memory=Decimal(8 << 30)),
                      restart_backoff=Backoff(initial=0.2, cap=0.2), **kwargs)
    rt.start()
    return rt


def job(name: str, script: str, replicas: int = 1) -> TrainingJob:
    return TrainingJob.model_validate({
        "metadata": {"name": name, "uid": f"uid-{name}"},
        "spec": {"replicas": replicas, "command": [sys.executable, "-c", textwrap.dedent(script)],
                 "terminationGracePeriodSeconds": 5}})


def submit(rt: LocalRuntime, tj: TrainingJob) -> None:
    for obj in compile_resource(tj, admitted=True):
        rt.apply(obj)


def job_done(rt, name):
    job = rt.get("Job", "default", name)
    return job and {c["type"] for c in job["status"].get("conditions", [])} & {"Complete", "Failed"}


def log_files(home: Path, pod: str) -> list[Path]:
    return [f for f in (home / "logs" / "default").iterdir() if f.name.startswith(pod + ".")]


def text(source, resource, **options) -> str:
    return b"".join(source.stream(resource, LogOptions(**options))).decode()


def text_once_there(source, resource, **options) -> str:
    """`text`, or "" while the pods are not created yet."""
    try:
        return text(source, resource, **options)
    except NotFound:
        return ""


def test_a_chatty_pod_keeps_at_most_the_cap_on_disk(home):
    rt = make_runtime(home, log_limits=(MiB, 2))
    try:
        tj = job("chatty", """
            import sys
            line = b"x" * 1023 + b"\\n"
            block = line * 1024
            for _ in range(200):  # 200 MiB
                sys.stdout.buffer.write(block)
            sys.stdout.buffer.write(b"the end\\n")
        """)
        submit(rt, tj)
        wait_for(lambda: job_done(rt, "chatty"), timeout=180, message="the chatty job finished")
        pod = rt.list("Pod", "default", {"shipyard.dev/name": "chatty"})[0]["metadata"]["name"]
        files = log_files(home, pod)
        assert sum(f.stat().st_size for f in files) <= 2 * MiB + 64 * 1024, [(f.name, f.stat().st_size) for f in files]
        # What is kept is the newest output, read back whole, and its offsets count everything written.
        assert text(RuntimeLogs(rt), tj, tail_lines=1) == "the end\n"
        assert b"".join(rt.read_log("default", pod, tail_bytes=8)) == b"the end\n"
        assert rt.read_log_range("default", pod, 200 * MiB, 100) == b"the end\n"
    finally:
        rt.stop(stop_pods=True, timeout=20)


def test_a_job_s_logs_outlive_its_pods_until_the_owner_goes(home):
    rt = make_runtime(home)
    try:
        tj = job("t", "print('attempt one', flush=True)", replicas=2)
        submit(rt, tj)
        wait_for(lambda: job_done(rt, "t"), message="first attempt finished")
        first = {p["metadata"]["name"] for p in rt.list("Pod", "default", {"shipyard.dev/name": "t"})}
        source = RuntimeLogs(rt)
        assert text(source, tj, all_pods=True).count("attempt one") == 2
        # A TrainingJob restart deletes the Job (its pods go) and creates the next: logs stay, the Service
        # still being the TrainingJob's.
        rt.delete("Job", "default", "t")
        wait_for(lambda: rt.get("Job", "default", "t") is None, message="the first Job gone")
        assert {p["name"] for p in rt.departed_pods("default")} == first
        assert text(source, tj) == "attempt one\n"
        submit(rt, job("t", "print('attempt two', flush=True)", replicas=2))
        wait_for(lambda: job_done(rt, "t") and len(rt.list("Pod", "default", {"shipyard.dev/name": "t"})) == 2,
                 message="second attempt finished")
        wait_for(lambda: text(source, tj) == "attempt two\n", message="the newest attempt shown")
        assert text(source, tj, previous=True) == "attempt one\n"
        assert text(source, tj, previous=True, replica=1) == "attempt one\n"
        # The owner goes (every object of it, as its controller deletes them): every log of it goes too.
        rt.delete("Job", "default", "t")
        rt.delete("Service", "default", "t")
        assert rt.departed_pods("default")
        rt.delete("NetworkPolicy", "default", "t")
        wait_for(lambda: not list((home / "logs" / "default").iterdir()), timeout=20,
                 message=f"the logs removed: {sorted(f.name for f in (home / 'logs' / 'default').iterdir())}")
    finally:
        rt.stop(stop_pods=True, timeout=20)


def owned(kind: str, name: str, spec: dict) -> dict:
    return {"apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": name, "namespace": "default",
                         "ownerReferences": [{"apiVersion": "shipyard.dev/v1alpha1", "kind": "App", "name": name,
                                              "uid": f"uid-{name}", "controller": True}]},
            "spec": spec}


def template(name: str, script: str) -> dict:
    labels = {"shipyard.dev/kind": "app", "shipyard.dev/name": name}
    return {"selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                         "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
                             "name": "main", "image": "ignored",
                             "command": [sys.executable, "-c", textwrap.dedent(script)]}]}}}


class App:
    kind, ref = "App", "app/web"

    class metadata:
        namespace, name = "default", "web"


# Each run prints which run it is, counted in a file; the first run exits (so the container restarts in
# place), the later ones stay up.
RESTARTING = """
    import os, pathlib, sys, time
    counter = pathlib.Path(os.environ["COUNTER_DIR"]) / os.environ["HOSTNAME"]
    runs = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(runs))
    print(f"{os.environ['HOSTNAME']} run {runs}", flush=True)
    if runs == 1:
        sys.exit(3)
    time.sleep(600)
"""


def test_a_deployment_s_pods_their_restarts_and_all_of_them(home, tmp_path):
    rt = make_runtime(home)
    try:
        spec = {"replicas": 2, **template("web", RESTARTING)}
        spec["template"]["spec"]["containers"][0]["env"] = [{"name": "COUNTER_DIR", "value": str(tmp_path)}]
        rt.apply(owned("Deployment", "web", spec))
        source = RuntimeLogs(rt)

        def restarted():
            pods = rt.list("Pod", "default", {"shipyard.dev/name": "web"})
            return len(pods) == 2 and all(
                p["status"].get("containerStatuses", [{}])[0].get("restartCount") == 1
                and p["status"]["containerStatuses"][0].get("ready") for p in pods) and pods

        pods = sorted(wait_for(restarted, message="both pods restarted once"),
                      key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"]))
        names = [p["metadata"]["name"] for p in pods]
        expected = sorted(f"[pod/{n}] {n} run 2" for n in names)
        wait_for(lambda: sorted(text(source, App, all_pods=True).splitlines()) == expected,
                 message=f"both second runs' lines, prefixed: {expected}")
        # Following every pod: their lines arrive interleaved and prefixed, and the stream stays open.
        stream, seen = source.stream(App, LogOptions(all_pods=True, follow=True)), b""
        for chunk in stream:
            seen += chunk
            if all(f"[pod/{n}] {n} run 2\n".encode() in seen for n in names):
                break
        stream.close()
        assert text(source, App, pod=names[0], previous=True) == f"{names[0]} run 1\n"
        assert text(source, App, replica=1) == f"{names[1]} run 2\n"
        with pytest.raises(ValueError, match="below 2"):
            text(source, App, replica=2)
        # Deleting the Deployment (the App's only object here) takes the logs with it.
        rt.delete("Deployment", "default", "web")
        wait_for(lambda: not any((home / "logs" / "default").iterdir()), timeout=30, message="logs removed")
    finally:
        rt.stop(stop_pods=True, timeout=20)


def test_a_statefulset_pod_recreated_under_its_name_keeps_the_previous_log(home, tmp_path):
    rt = make_runtime(home)
    try:
        spec = {"replicas": 1, "serviceName": "web", **template("web", RESTARTING)}
        spec["template"]["spec"]["containers"][0]["env"] = [{"name": "COUNTER_DIR", "value": str(tmp_path)}]
        rt.apply(owned("StatefulSet", "web", spec))
        source = RuntimeLogs(rt)
        wait_for(lambda: text_once_there(source, App) == "web-0 run 2\n", message="the second run")
        # Scale to 0 and back (a workspace suspended and resumed): the pod is recreated under its name.
        rt.apply(owned("StatefulSet", "web", {**spec, "replicas": 0}))
        wait_for(lambda: not rt.list("Pod", "default", {"shipyard.dev/name": "web"}), message="scaled to 0")
        assert text(source, App) == "web-0 run 2\n"  # a suspended workspace still shows its last log
        rt.apply(owned("StatefulSet", "web", spec))
        wait_for(lambda: text(source, App, replica=0) == "web-0 run 3\n", message="the third run")
        assert text(source, App, previous=True) == "web-0 run 2\n"
    finally:
        rt.stop(stop_pods=True, timeout=20)
