"""cgroups.py against a fake cgroup root in a temporary directory: what v1 and v2 write, how the version in
force is chosen, cleanup of one daemon's cgroups only; and the shim's OOMKilled report (no root needed)."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shipyard.runtime.local import cgroups
from shipyard.runtime.local.cgroups import Limits, daemon_id, detect, limits_of

RUNTIME = Path("/srv/shipyard-home/runtime")  # only hashed into the daemon id
ID = daemon_id(RUNTIME)
LIMITS = Limits(memory=128 << 20, cpu_millis=500, cpu_request_millis=250, pids=100)


@pytest.fixture(autouse=True)
def fake_rmdir(monkeypatch):
    # A real cgroup directory goes with its interface files; a fake one needs them removed.
    monkeypatch.setattr(cgroups, "_rmdir", shutil.rmtree)


def v1_root(tmp_path: Path, comounted: bool = False) -> Path:
    root = tmp_path / "cgroup"
    names = ["memory", "pids"] + (["cpu,cpuacct"] if comounted else ["cpu", "cpuacct"])
    for name in names:
        (root / name).mkdir(parents=True)
        (root / name / "cgroup.procs").write_text("")
    if comounted:
        (root / "cpu").symlink_to("cpu,cpuacct")
        (root / "cpuacct").symlink_to("cpu,cpuacct")
    return root


def v2_root(tmp_path: Path, controllers: str = "cpuset cpu io memory pids") -> Path:
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("")
    (root / "cgroup.procs").write_text("")
    return root


def read(path: Path) -> str:
    return path.read_text().strip()


def test_v1_writes_memory_without_swap_cpu_quota_and_shares_and_pids(tmp_path):
    root = v1_root(tmp_path)
    found = detect(RUNTIME, root, mode="auto")
    assert found.version == "v1" and found.describe() == "cgroup v1 (memory, cpu, cpuacct, pids)"
    assert not (root / "memory" / "shipyard" / ID).exists()  # made on first use, not by detection alone
    spec = found.create("pod-a", LIMITS)
    memory = root / "memory" / "shipyard" / ID / "pod-a"
    assert read(memory / "memory.limit_in_bytes") == str(128 << 20)
    assert read(memory / "memory.memsw.limit_in_bytes") == str(128 << 20)
    assert read(memory / "memory.swappiness") == "0"
    cpu = root / "cpu" / "shipyard" / ID / "pod-a"
    assert read(cpu / "cpu.cfs_period_us") == "100000" and read(cpu / "cpu.cfs_quota_us") == "50000"
    assert read(cpu / "cpu.shares") == "256"
    assert read(root / "pids" / "shipyard" / ID / "pod-a" / "pids.max") == "100"
    assert spec == {"version": "v1", "procs": [str(root / c / "shipyard" / ID / "pod-a" / "cgroup.procs")
                                               for c in ("memory", "cpu", "cpuacct", "pids")],
                    "oomEvents": str(memory / "memory.oom_control"), "memoryLimit": 128 << 20,
                    "limits": "memory 128Mi, cpu 500m, pids 100"}


def test_v1_unlimited_and_comounted_cpu_cpuacct(tmp_path):
    root = v1_root(tmp_path, comounted=True)
    found = detect(RUNTIME, root, mode="auto")
    spec = found.create("pod-a", Limits())
    assert read(root / "memory" / "shipyard" / ID / "pod-a" / "memory.limit_in_bytes") == "-1"
    assert read(root / "cpu,cpuacct" / "shipyard" / ID / "pod-a" / "cpu.cfs_quota_us") == "-1"
    assert read(root / "pids" / "shipyard" / ID / "pod-a" / "pids.max") == "max"
    # One directory serves both controllers: the workload enters it once.
    assert len(spec["procs"]) == 3
    (root / "cpu,cpuacct" / "shipyard" / ID / "pod-a" / "cpuacct.usage").write_text("1234\n")
    assert found.cpu_usage_ns("pod-a") == 1234


def test_v2_enables_controllers_down_to_the_pod_and_writes_its_limits(tmp_path):
    root = v2_root(tmp_path)
    found = detect(RUNTIME, root, mode="auto")
    assert found.version == "v2" and found.describe() == "cgroup v2 (memory, cpu, pids)"
    spec = found.create("pod-a", LIMITS)
    for parent in (root, root / "shipyard", root / "shipyard" / ID):
        assert set(read(parent / "cgroup.subtree_control").replace("+", "").split()) == {"memory", "cpu", "pids"}
    pod = root / "shipyard" / ID / "pod-a"
    assert read(pod / "memory.max") == str(128 << 20) and read(pod / "memory.swap.max") == "0"
    assert read(pod / "memory.oom.group") == "1"
    assert read(pod / "cpu.max") == "50000 100000"
    assert read(pod / "cpu.weight") == str(1 + (256 - 2) * 9999 // 262142)
    assert read(pod / "pids.max") == "100"
    assert spec["procs"] == [str(pod / "cgroup.procs")] and spec["oomEvents"] == str(pod / "memory.events")
    (pod / "cpu.stat").write_text("usage_usec 250\nuser_usec 200\n")
    assert found.cpu_usage_ns("pod-a") == 250_000


def test_v2_without_memory_controller_falls_back_to_v1_then_none(tmp_path):
    root = v2_root(tmp_path, controllers="")  # this machine's unified hierarchy: no controllers
    found = detect(RUNTIME, root, mode="auto")
    assert found.version == "none"
    assert "cgroup v2 has no memory controller" in found.describe()
    assert found.create("pod-a", LIMITS) is None
    # A hybrid machine: v1 controllers beside an empty v2.
    for name in ("memory", "cpu", "cpuacct", "pids"):
        (root / name).mkdir()
        (root / name / "cgroup.procs").write_text("")
    assert detect(RUNTIME, root, mode="auto").version == "v1"


def test_none_says_why(tmp_path):
    assert detect(RUNTIME, tmp_path / "missing", mode="auto").describe() == (
        f"none: resource limits are not enforced (no cgroup hierarchy at {tmp_path / 'missing'})")
    assert detect(RUNTIME, v1_root(tmp_path), mode="off").describe() == (
        "none: resource limits are not enforced (SHIPYARD_LOCAL_CGROUPS=off)")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write a read-only directory")
def test_not_writable_is_none(tmp_path):
    root = v1_root(tmp_path)
    (root / "memory").chmod(0o555)
    try:
        found = detect(RUNTIME, root, mode="auto")
    finally:
        (root / "memory").chmod(0o755)
    assert found.version == "none" and "cgroup v1 is not writable" in found.describe()


def test_remove_and_stale_cleanup_touch_only_this_daemons_cgroups(tmp_path):
    root = v1_root(tmp_path)
    mine, other = detect(RUNTIME, root, mode="auto"), detect(Path("/elsewhere/runtime"), root, mode="auto")
    for uid in ("keep", "stale", "gone"):
        mine.create(uid, LIMITS)
    other.create("stale", LIMITS)
    mine.remove("gone")
    mine.remove_stale({"keep"})
    for controller in ("memory", "cpu", "cpuacct", "pids"):
        assert sorted(p.name for p in (root / controller / "shipyard" / ID).iterdir()) == ["keep"]
        assert (root / controller / "shipyard" / daemon_id(Path("/elsewhere/runtime")) / "stale").exists()
    mine.close()
    assert (root / "memory" / "shipyard" / ID).exists()  # a pod's cgroup is still in it
    mine.remove("keep")
    mine.close()
    assert not (root / "memory" / "shipyard" / ID).exists()
    assert (root / "memory" / "shipyard").exists()  # shared with other daemons


def test_remove_kills_what_is_left_in_the_cgroup(tmp_path):
    root = v1_root(tmp_path)
    found = detect(RUNTIME, root, mode="auto")
    found.create("pod-a", LIMITS)
    leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    (root / "memory" / "shipyard" / ID / "pod-a" / "cgroup.procs").write_text(f"{leftover.pid}\n")
    found.remove("pod-a")
    assert leftover.wait(timeout=10) == -signal.SIGKILL


def test_limits_of_a_container_default_to_its_requests(monkeypatch):
    monkeypatch.delenv(cgroups.PIDS_ENV, raising=False)
    assert limits_of({"resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}) == Limits(
        memory=64 << 20, cpu_millis=250, cpu_request_millis=250, pids=cgroups.DEFAULT_PIDS)
    assert limits_of({"resources": {"requests": {"cpu": "250m", "memory": "64Mi"},
                                    "limits": {"cpu": "2", "memory": "1Gi"}}}, pids=0) == Limits(
        memory=1 << 30, cpu_millis=2000, cpu_request_millis=250, pids=None)
    monkeypatch.setenv(cgroups.PIDS_ENV, "512")
    assert limits_of({}) == Limits(pids=512)


def test_oom_kill_counters_of_both_versions(tmp_path):
    v1 = tmp_path / "memory.oom_control"
    v1.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    v2 = tmp_path / "memory.events"
    v2.write_text("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n")
    assert cgroups.oom_kills({"oomEvents": str(v1)}) == 2
    assert cgroups.oom_kills({"oomEvents": str(v2)}) == 1
    assert cgroups.oom_kills({"oomEvents": str(tmp_path / "missing")}) == 0
    assert cgroups.oom_kills(None) == 0


def _run_shim(tmp_path: Path, script: str, spec: dict | None) -> dict:
    pod_dir = tmp_path / "pod"
    pod_dir.mkdir()
    (pod_dir / "launch.json").write_text(json.dumps({
        "argv": [sys.executable, "-c", script], "env": {"PATH": os.environ.get("PATH", "")}, "cwd": str(tmp_path),
        "logPath": str(tmp_path / "pod.log"), "gracePeriodSeconds": 5}))
    cgroups.write_spec(pod_dir, spec)
    subprocess.run([sys.executable, "-m", "shipyard.runtime.local.shim", str(pod_dir)], check=True, timeout=60)
    return json.loads((pod_dir / "exit.json").read_text())


def test_shim_places_the_workload_and_reports_an_oom_kill(tmp_path):
    # The fake "kernel": the workload finds itself in cgroup.procs, counts an OOM kill and dies by SIGKILL.
    procs, events = tmp_path / "cgroup.procs", tmp_path / "memory.events"
    events.write_text("oom 0\noom_kill 0\n")
    script = (f"import os, signal; assert open({str(procs)!r}).read() == str(os.getpid()); "
              f"open({str(events)!r}, 'w').write('oom 1\\noom_kill 1\\n'); os.kill(os.getpid(), signal.SIGKILL)")
    spec = {"version": "v2", "procs": [str(procs)], "oomEvents": str(events), "memoryLimit": 64 << 20}
    result = _run_shim(tmp_path, script, spec)
    assert result["exitCode"] == 137 and result["reason"] == "OOMKilled", result
    assert "memory limit of 64Mi" in result["message"]


def test_shim_without_an_oom_kill_reports_the_signal(tmp_path):
    events = tmp_path / "memory.events"
    events.write_text("oom_kill 3\n")  # kills of an earlier run of the same pod do not count
    spec = {"version": "v2", "procs": [str(tmp_path / "cgroup.procs")], "oomEvents": str(events)}
    result = _run_shim(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)", spec)
    assert result["exitCode"] == 137 and result["reason"] == "Signaled"


def test_shim_that_cannot_place_the_workload_fails_it_at_start(tmp_path):
    spec = {"version": "v1", "procs": [str(tmp_path / "no-such-dir" / "cgroup.procs")],
            "oomEvents": str(tmp_path / "x")}
    result = _run_shim(tmp_path, "print('never')", spec)
    assert result["reason"] == "StartError" and "cgroup" in result["message"]


def test_serving_tells_oom_kills_of_replicas():
    from shipyard.controllers.serving.controller import _oom_kills, _waiting_message

    oom = {"exitCode": 137, "reason": "OOMKilled", "message": "the out-of-memory killer stopped 1 process(es)",
           "finishedAt": "2026-01-01T00:00:00+00:00"}
    pod = {"metadata": {"name": "e-abc-x"}, "status": {"containerStatuses": [{
        "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": oom}}]}}
    assert _oom_kills([pod]) == [("e-abc-x", oom["finishedAt"], 137, oom["message"])]

    class Pods:
        def list(self, kind, namespace, labels):
            return [pod]
    assert "code 137, OOMKilled, 2 restart(s)" in _waiting_message(Pods(), "default", "e", "Endpoint")
