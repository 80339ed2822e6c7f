"""Enforced limits on this machine's real cgroups: a job past its memory limit ends OOMKilled (pod state, the
TrainingJob's status and events, a counted restart) while everything else keeps running; a CPU-limited busy
loop uses what its limit allows. Skipped, with the reason, where cgroups are not writable (not root)."""

import os
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path

import pytest

from shipyard.controllers.manager import ObjectKey
from shipyard.controllers.trainingjob import TrainingJobController
from shipyard.resources import TrainingJob
from shipyard.runtime.local import cgroups
from shipyard.runtime.local.capacity import Capacity
from shipyard.runtime.local.runtime import LocalRuntime
from shipyard.store.sqlite import SQLiteStore
from tests.conftest import wait_for

_PROBE = cgroups.detect(Path("/nonexistent/probe-runtime"))
pytestmark = pytest.mark.skipif(_PROBE.version == "none", reason=f"cgroups: {_PROBE.describe()}")

HOG = """
    import sys
    chunks = []
    for i in range(256):  # 4 GiB at most, 16 MiB a step, every page written
        chunks.append(b"x" * (16 << 20))
        print("allocated", (i + 1) * 16, "MiB", flush=True)
    sys.exit(3)  # never reached under a limit
"""


@pytest.fixture
def runtime(tmp_path):
    rt = LocalRuntime(tmp_path / "runtime", tmp_path / "volumes", tmp_path / "logs",
                      capacity=Capacity(cpu=Decimal(4), memory=Decimal(8 << 30)))
    rt.start()
    yield rt
    rt.stop(stop_pods=True, timeout=20)


def job(name: str, script: str, **spec) -> TrainingJob:
    return TrainingJob.model_validate({"metadata": {"name": name}, "spec": {
        "replicas": 1, "terminationGracePeriodSeconds": 5,
        "command": [sys.executable, "-c", textwrap.dedent(script)], **spec}})


def pod_of(rt: LocalRuntime, name: str) -> dict:
    pods = sorted(rt.list("Pod", "default", {"shipyard.dev/name": name}),
                  key=lambda p: p["metadata"]["creationTimestamp"])
    return pods[-1] if pods else {}


def test_memory_hog_ends_oomkilled_counted_as_a_failure_while_the_rest_keeps_running(runtime, tmp_path):
    store = SQLiteStore(tmp_path / "db")
    store.apply([job("hog", HOG, maxRestarts=1, backoffSeconds=0.2, resources={"cpu": "1", "memory": "96Mi"}),
                 job("bystander", "import time; print('up', flush=True); time.sleep(600)")])
    ctl = TrainingJobController(store, runtime)

    def status(name):
        ctl.reconcile(ObjectKey("TrainingJob", "default", name))
        return store.get("TrainingJob", "default", name).status

    try:
        wait_for(lambda: status("hog").phase == "Failed" and status("bystander").phase == "Running",
                 timeout=120, interval=0.2, message="the hog failed")
        final = status("hog")
        assert final.restarts == 1  # the first OOM kill counted and was retried; the second one ended the job
        failed = final.condition("Failed")
        assert failed.reason == "RestartLimitExceeded"
        assert "exited with code 137 (OOMKilled" in failed.message and "96Mi" in failed.message, failed.message
        events = [(e.reason, e.message) for e in store.list_events("TrainingJob", "default", "hog")]
        assert any(r == "Restarting" and "OOMKilled" in m for r, m in events), events
        assert any(r == "Failed" and "OOMKilled" in m for r, m in events), events

        pod = pod_of(runtime, "hog")
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert terminated["reason"] == "OOMKilled" and terminated["exitCode"] == 137
        log = b"".join(runtime.read_log("default", pod["metadata"]["name"])).decode()
        assert "allocated 16 MiB" in log and "allocated 256 MiB" not in log
        assert not runtime.cgroups.path(pod["metadata"]["uid"]).exists()  # removed with the container

        # Everything outside the hog's cgroup is untouched: the other job, and this process (the control plane).
        bystander = pod_of(runtime, "bystander")
        assert bystander["status"]["phase"] == "Running"
        procs = runtime.cgroups.path(bystander["metadata"]["uid"]) / "cgroup.procs"
        members = wait_for(lambda: procs.read_text().split(), message="the bystander's workload in its cgroup")
        assert str(bystander["status"]["pid"]) not in members  # the workload is in, its shim is not
        wait_for(lambda: "up" in b"".join(runtime.read_log("default", bystander["metadata"]["name"])).decode(),
                 message="the bystander's output")
    finally:
        store.close()


def _idle_seconds() -> float:
    """The machine's idle CPU time so far, in CPU-seconds (/proc/stat: idle + iowait)."""
    with open("/proc/stat") as fh:
        fields = fh.readline().split()
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


def test_cpu_limited_busy_loop_uses_its_limit(runtime, tmp_path):
    # Two busy processes ask for two CPUs; the 500m limit must hold the pod to half of one.
    store = SQLiteStore(tmp_path / "db")
    store.apply([job("busy", """
        import multiprocessing, os
        def spin():
            while True:
                pass
        multiprocessing.Process(target=spin, daemon=True).start()
        print("spinning", flush=True)
        spin()
    """, resources={"cpu": "500m"})])
    ctl = TrainingJobController(store, runtime)
    try:
        wait_for(lambda: ctl.reconcile(ObjectKey("TrainingJob", "default", "busy")) is not None and
                 "spinning" in b"".join(runtime.read_log("default", pod_of(runtime, "busy")["metadata"]["name"]))
                 .decode(), timeout=60, message="spinning")
        uid = pod_of(runtime, "busy")["metadata"]["uid"]
        windows = []
        for _ in range(3):
            # The ratio measured over a window: the kernel's own accounting, not the loop's speed. The limit is
            # a ceiling, so every window must stay under it. Reaching it needs a CPU to spare: other load on the
            # machine (a CI run on 2 cores) can hold the pod below it, but only while no CPU is idle.
            used, idle, began = runtime.cgroups.cpu_usage_ns(uid), _idle_seconds(), time.monotonic()
            time.sleep(3)
            window = time.monotonic() - began
            ratio = (runtime.cgroups.cpu_usage_ns(uid) - used) / (window * 1e9)
            windows.append((round(ratio, 3), round((_idle_seconds() - idle) / window, 2)))
            assert ratio <= 0.55, windows
            if ratio >= 0.45:
                break
        assert any(ratio >= 0.45 or idle_cpus < 0.1 for ratio, idle_cpus in windows), windows
    finally:
        store.close()
