"""The local runtime with real processes: gangs, failures, placement, adoption after a crash, shutdown."""

import sys
import textwrap
from pathlib import Path

import pytest

from shipyard.compiler import compile_resource
from shipyard.controllers.manager import ObjectKey
from shipyard.controllers.trainingjob import TrainingJobController
from shipyard.runtime.local import processes
from shipyard.runtime.local.capacity import Capacity
from shipyard.runtime.local.runtime import LocalRuntime
from shipyard.resources import TrainingJob
from shipyard.store.sqlite import SQLiteStore
from tests.conftest import wait_for

from decimal import Decimal


def make_runtime(home: Path, cpu: int = 4) -> LocalRuntime:
    rt = LocalRuntime(home / "runtime", home / "volumes", home / "logs",
                      capacity=Capacity(cpu=Decimal(cpu), memory=Decimal(8 << 30)))
    rt.start()
    return rt


def submit(rt: LocalRuntime, script: str, replicas: int = 2, name: str = "t", **spec) -> None:
    tj = TrainingJob.model_validate({
        "metadata": {"name": name, "uid": f"uid-{name}"},
        "spec": {"replicas": replicas, "command": [sys.executable, "-c", textwrap.dedent(script)],
                 "terminationGracePeriodSeconds": 5, **spec}})
    for obj in compile_resource(tj, admitted=True):
        rt.apply(obj)


def job_condition(rt, name="t"):
    job = rt.get("Job", "default", name)
    return {c["type"] for c in job["status"].get("conditions", [])} if job else set()


def finished(rt, name="t"):
    return wait_for(lambda: job_condition(rt, name) & {"Complete", "Failed"} and job_condition(rt, name),
                    message="job finished")


def pods(rt, name="t"):
    return sorted(rt.list("Pod", "default", {"shipyard.dev/name": name}),
                  key=lambda p: p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"])


def log_of(rt, pod):
    return b"".join(rt.read_log("default", pod["metadata"]["name"])).decode()


@pytest.fixture
def home(tmp_path):
    return tmp_path


@pytest.fixture
def runtime(home):
    rt = make_runtime(home)
    yield rt
    rt.stop(stop_pods=True, timeout=20)


def test_gang_runs_with_rendezvous_env_and_volume(runtime, home):
    submit(runtime, """
        import os, socket
        rank = int(os.environ["RANK"])
        if rank == 0:
            s = socket.socket(); s.bind((os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]))); s.listen()
            conn, _ = s.accept(); print("got", conn.recv(10).decode())
            open(os.environ["OUT"] + "/done", "w").write("ok")
        else:
            import time
            for _ in range(200):
                try:
                    c = socket.create_connection((os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])))
                    break
                except OSError:
                    time.sleep(0.05)
            c.sendall(b"hello")
        print("rank", rank, "world", os.environ["WORLD_SIZE"], "restart", os.environ["SHIPYARD_RESTART_COUNT"])
    """, env=[{"name": "OUT", "value": "/data"}], volumes=[{"name": "data", "mountPath": "/data"}])
    assert "Complete" in finished(runtime)
    p0, p1 = pods(runtime)
    assert "got hello" in log_of(runtime, p0)
    assert "rank 1 world 2 restart 0" in log_of(runtime, p1)
    assert (home / "volumes" / "default" / "data" / "done").read_text() == "ok"


def test_one_failed_replica_fails_the_gang_and_stops_the_other(runtime):
    submit(runtime, """
        import os, sys, time
        if os.environ["RANK"] == "1":
            sys.exit(3)
        time.sleep(600)
    """)
    assert "Failed" in finished(runtime)
    job = runtime.get("Job", "default", "t")
    failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PodFailurePolicy" and "exit code 3" in failed["message"]
    # The surviving replica is stopped and removed; the failed one stays for its logs.
    wait_for(lambda: [p["status"]["phase"] for p in pods(runtime)] == ["Failed"], message="survivor removed")
    uid = pods(runtime)[0]["metadata"]["uid"]
    assert processes.pod_processes(uid) == []


def test_gang_that_does_not_fit_stays_pending_with_reason(runtime):
    submit(runtime, "print('never')", resources={"cpu": "3"})
    wait_for(lambda: pods(runtime) and all(
        any(c.get("reason") == "Unschedulable" for c in p["status"].get("conditions", [])) for p in pods(runtime)),
        message="unschedulable")
    message = pods(runtime)[0]["status"]["conditions"][0]["message"]
    assert "6 cpu requested, 4 of 4 free" in message
    assert all(p["status"]["phase"] == "Pending" for p in pods(runtime))


def test_escaped_descendants_are_killed_with_the_pod(runtime):
    submit(runtime, """
        import subprocess, sys, time
        # Like torchrun's workers: a child in a new session, outside the pod's process group.
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
        time.sleep(600)
    """, replicas=1)
    wait_for(lambda: pods(runtime) and len(processes.pod_processes(pods(runtime)[0]["metadata"]["uid"])) >= 2,
             message="pod processes started")
    uid = pods(runtime)[0]["metadata"]["uid"]
    runtime.delete("Job", "default", "t")
    wait_for(lambda: runtime.get("Job", "default", "t") is None, message="job deleted")
    assert processes.pod_processes(uid) == []


def test_restarted_runtime_adopts_running_pods(home):
    flag = home / "go"
    first = make_runtime(home)
    submit(first, f"""
        import os, time
        while not os.path.exists({str(flag)!r}):
            time.sleep(0.05)
        print("finished")
    """)
    wait_for(lambda: len(pods(first)) == 2 and all(p["status"]["phase"] == "Running" for p in pods(first)),
             message="running")
    before = {p["metadata"]["uid"]: p["status"]["pid"] for p in pods(first)}
    workloads = {uid: wait_for(lambda uid=uid: processes.pod_processes(uid), message="workload started")
                 for uid in before}
    first.stop(stop_pods=False)  # as if the daemon died: the pods' shims keep running
    second = make_runtime(home)
    try:
        after = {p["metadata"]["uid"]: p["status"]["pid"] for p in pods(second)}
        assert after == before  # same pods, same shims: adopted, not restarted
        assert {uid: processes.pod_processes(uid) for uid in after} == workloads  # no duplicate workload
        flag.write_text("")
        assert "Complete" in finished(second)
        assert all("finished" in log_of(second, p) for p in pods(second))
    finally:
        second.stop(stop_pods=True, timeout=20)


def test_shutdown_disrupts_pods_and_the_next_start_recreates_the_gang_uncounted(home):
    # `shipyard down` then `up`: the runtime fails the Job by its disruption rule, and the TrainingJob
    # controller recreates the whole gang as the next attempt without counting a restart (maxRestarts 0 would
    # fail the job on a counted one).
    store = SQLiteStore(home / "db")
    store.apply([TrainingJob.model_validate({"metadata": {"name": "t"}, "spec": {
        "replicas": 2, "maxRestarts": 0, "terminationGracePeriodSeconds": 5,
        "command": [sys.executable, "-c", "import os, time; print('attempt', os.environ['SHIPYARD_RESTART_COUNT'])"
                                          "; time.sleep(600)"]}})])
    key = ObjectKey("TrainingJob", "default", "t")

    def status(controller):
        controller.reconcile(key)
        return store.get("TrainingJob", "default", "t").status

    first = make_runtime(home)
    ctl = TrainingJobController(store, first)
    wait_for(lambda: status(ctl).phase == "Running", message="running")
    old = {p["metadata"]["name"] for p in pods(first)}
    first.stop(stop_pods=True, timeout=20)
    assert all(p["status"]["phase"] == "Failed" and any(c["type"] == "DisruptionTarget"
                                                        for c in p["status"]["conditions"]) for p in pods(first))
    second = make_runtime(home)
    try:
        ctl = TrainingJobController(store, second)
        wait_for(lambda: status(ctl).disruptions == 1 and status(ctl).phase == "Running", message="gang recreated")
        final = store.get("TrainingJob", "default", "t").status
        assert final.restarts == 0 and final.attempt == 1
        assert final.condition("Running").reason == "AllReplicasRunning"
        fresh = [p for p in pods(second) if p["metadata"]["name"] not in old]
        assert len(fresh) == 2 and all(p["metadata"]["labels"]["shipyard.dev/restart"] == "1" for p in fresh)
        wait_for(lambda: all("attempt 1" in log_of(second, p) for p in fresh), message="told to resume")
    finally:
        second.stop(stop_pods=True, timeout=20)
        store.close()


def test_command_that_cannot_start_fails_with_reason(runtime):
    tj = TrainingJob.model_validate({"metadata": {"name": "t", "uid": "u"},
                                     "spec": {"replicas": 1, "command": ["no-such-binary-xyz"]}})
    for obj in compile_resource(tj, admitted=True):
        runtime.apply(obj)
    assert "Failed" in finished(runtime)
    [pod] = pods(runtime)
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 127 and "no-such-binary-xyz" in term["message"]


def test_workloads_start_with_default_signal_dispositions(runtime):
    # A container starts with no signal ignored; the shim must not pass its own SIGINT/SIGHUP handling on.
    submit(runtime, """
        import signal
        print("SIGINT", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        print("SIGHUP", signal.getsignal(signal.SIGHUP) is signal.SIG_DFL)
    """, replicas=1)
    assert "Complete" in finished(runtime)
    text = log_of(runtime, pods(runtime)[0])
    assert "SIGINT True" in text and "SIGHUP True" in text, text
