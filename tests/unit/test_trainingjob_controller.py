"""TrainingJob controller over a fake runtime and a fake clock: every step of the gang's life, no processes."""

from datetime import timedelta

import pytest

from shipyard.controllers.clock import FakeClock
from shipyard.controllers.manager import ObjectKey
from shipyard.controllers.trainingjob import FINALIZER, TrainingJobController
from shipyard.resources import TrainingJob
from shipyard.runtime.fake import FakeRuntime
from shipyard.store.sqlite import SQLiteStore

KEY = ObjectKey("TrainingJob", "default", "llm")


def make_job(**spec):
    base = {"replicas": 2, "command": ["torchrun", "train.py"], "maxRestarts": 2, "backoffSeconds": 10,
            "volumes": [{"name": "ckpt", "mountPath": "/ckpt"}]}
    base.update(spec)
    return TrainingJob.model_validate({"metadata": {"name": "llm"}, "spec": base})


@pytest.fixture
def world(tmp_path):
    store = SQLiteStore(tmp_path / "db")
    runtime = FakeRuntime()
    clock = FakeClock()
    controller = TrainingJobController(store, runtime, clock)
    yield store, runtime, clock, controller
    store.close()


def current(store):
    return store.get("TrainingJob", "default", "llm")


def job_env(runtime):
    job = runtime.get("Job", "default", "llm")
    return {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def reasons(store):
    return [e.reason for e in store.list_events("TrainingJob", "default", "llm")]


def test_first_reconcile_creates_children_and_finalizer(world):
    store, runtime, clock, ctl = world
    store.apply([make_job()])
    ctl.reconcile(KEY)
    job = current(store)
    assert FINALIZER in job.metadata.finalizers
    assert {k[0] for k in runtime.objects} == {"Job", "Service", "NetworkPolicy", "PersistentVolumeClaim"}
    assert job.status.phase == "Pending" and job.status.observed_generation == 1
    assert job_env(runtime)["SHIPYARD_RESTART_COUNT"] == "0"
    assert reasons(store) == ["Created"]


def test_running_when_all_replicas_run_and_status_written_once(world):
    store, runtime, clock, ctl = world
    store.apply([make_job()])
    ctl.reconcile(KEY)
    runtime.add_pods("default", "llm", "Running")
    ctl.reconcile(KEY)
    job = current(store)
    assert job.status.phase == "Running" and job.status.start_time == clock.now()
    assert [r.phase for r in job.status.replica_statuses] == ["Running", "Running"]
    version = job.metadata.resource_version
    ctl.reconcile(KEY)  # nothing changed: no write
    assert current(store).metadata.resource_version == version


def test_gang_restart_waits_for_backoff_then_resumes_attempt(world):
    store, runtime, clock, ctl = world
    store.apply([make_job()])
    ctl.reconcile(KEY)
    runtime.add_pods("default", "llm", exit_codes={1: 3})
    runtime.set_job_condition("default", "llm", "Failed", "PodFailurePolicy", "pod failed")
    result = ctl.reconcile(KEY)
    job = current(store)
    assert job.status.phase == "Restarting" and job.status.restarts == 1
    assert "replica 1 exited with code 3" in job.status.condition("Running").message
    assert result.requeue_after == 0
    # The failed attempt is deleted only after the restart was recorded.
    assert runtime.get("Job", "default", "llm") is not None
    ctl.reconcile(KEY)
    assert runtime.get("Job", "default", "llm") is None
    result = ctl.reconcile(KEY)  # inside the backoff: nothing is created
    assert runtime.get("Job", "default", "llm") is None
    assert result.requeue_after == pytest.approx(10.0)
    clock.advance(10)
    ctl.reconcile(KEY)
    assert job_env(runtime)["SHIPYARD_RESTART_COUNT"] == "1"
    runtime.add_pods("default", "llm", "Running")
    ctl.reconcile(KEY)
    assert current(store).status.phase == "Running"
    assert reasons(store) == ["Created", "Restarting", "Created", "Running"]


def test_fails_after_max_restarts_with_reason(world):
    store, runtime, clock, ctl = world
    store.apply([make_job(maxRestarts=1, backoffSeconds=0)])
    for _ in range(2):
        ctl.reconcile(KEY)  # create
        runtime.add_pods("default", "llm", exit_codes={0: 1})
        runtime.set_job_condition("default", "llm", "Failed", "PodFailurePolicy")
        ctl.reconcile(KEY)  # record the failure
        if current(store).status.phase == "Restarting":
            ctl.reconcile(KEY)  # delete the failed gang
    job = current(store)
    assert job.status.phase == "Failed" and job.status.restarts == 1
    failed = job.status.condition("Failed")
    assert failed.reason == "RestartLimitExceeded"
    assert "replica 0 exited with code 1" in failed.message and "maxRestarts=1" in failed.message


def test_succeeded(world):
    store, runtime, clock, ctl = world
    store.apply([make_job()])
    ctl.reconcile(KEY)
    runtime.add_pods("default", "llm", exit_codes={0: 0, 1: 0})
    runtime.set_job_condition("default", "llm", "Complete", "CompletionsReached")
    ctl.reconcile(KEY)
    job = current(store)
    assert job.status.phase == "Succeeded" and job.status.completion_time == clock.now()
    assert job.status.condition("Succeeded").status == "True"


def test_drift_is_corrected(world):
    store, runtime, clock, ctl = world
    store.apply([make_job()])
    ctl.reconcile(KEY)
    runtime.objects.pop(("Service", "default", "llm"))
    runtime.objects.pop(("PersistentVolumeClaim", "default", "ckpt"))
    ctl.reconcile(KEY)
    assert runtime.get("Service", "default", "llm") is not None
    assert runtime.get("PersistentVolumeClaim", "default", "ckpt") is not None
    runtime.objects[("Service", "default", "llm")]["spec"]["ports"] = []
    ctl.reconcile(KEY)
    assert runtime.get("Service", "default", "llm")["spec"]["ports"][0]["port"] == 29500


def test_shared_volume_is_not_resized_by_another_job(world):
    store, runtime, clock, ctl = world
    store.apply([make_job()])
    ctl.reconcile(KEY)
    # Another job created the project's volume with another size first: ours must not fight over it.
    runtime.objects[("PersistentVolumeClaim", "default", "ckpt")]["spec"]["resources"]["requests"]["storage"] = "1Ti"
    ctl.reconcile(KEY)
    assert runtime.get("PersistentVolumeClaim", "default", "ckpt")["spec"]["resources"]["requests"]["storage"] == "1Ti"


def test_lost_job_is_recreated(world):
    store, runtime, clock, ctl = world
    store.apply([make_job()])
    ctl.reconcile(KEY)
    runtime.objects.pop(("Job", "default", "llm"))
    ctl.reconcile(KEY)
    assert runtime.get("Job", "default", "llm") is not None


def test_delete_cleans_children_then_releases_finalizer(world):
    store, runtime, clock, ctl = world
    runtime.graceful_delete = True
    store.apply([make_job()])
    ctl.reconcile(KEY)
    store.delete("TrainingJob", "default", "llm")
    assert current(store).metadata.deletion_timestamp is not None
    ctl.reconcile(KEY)
    assert current(store) is not None  # the Job is still terminating
    runtime.finish_deletions()
    ctl.reconcile(KEY)
    assert current(store) is None
    assert runtime.get("Service", "default", "llm") is None
    assert runtime.get("NetworkPolicy", "default", "llm") is None
    assert runtime.get("PersistentVolumeClaim", "default", "ckpt") is not None  # data outlives the job


def test_progress_from_rank_zero_log(world):
    store, runtime, clock, ctl = world
    store.apply([make_job()])
    ctl.reconcile(KEY)
    runtime.add_pods("default", "llm", "Running")
    pod0 = next(k[2] for k in runtime.objects if k[0] == "Pod" and k[2].startswith("llm-0-"))
    runtime.logs[("default", pod0)] = (
        b'noise\nSHIPYARD_PROGRESS {"step": 5, "total_steps": 50, "loss": 3.5}\n'
        b'SHIPYARD_PROGRESS {"step": 6, "total_steps": 50, "loss": 3.25, "tokens_per_second": 4000, "lr": 0.001}\n'
        b'SHIPYARD_PROGRESS {broken\n')
    ctl.reconcile(KEY)
    progress = current(store).status.progress
    assert (progress.step, progress.total_steps, progress.loss, progress.tokens_per_second) == (6, 50, 3.25, 4000.0)
    assert progress.metrics == {"lr": 0.001}


def test_active_deadline_fails_the_job(world):
    store, runtime, clock, ctl = world
    store.apply([make_job(activeDeadlineSeconds=60)])
    ctl.reconcile(KEY)
    runtime.add_pods("default", "llm", "Running")
    ctl.reconcile(KEY)
    clock.advance(61)
    ctl.reconcile(KEY)
    job = current(store)
    assert job.status.phase == "Failed" and job.status.condition("Failed").reason == "DeadlineExceeded"
    assert ("Job", "default", "llm") in runtime.deleted


def test_unschedulable_sets_condition(world):
    store, runtime, clock, ctl = world
    store.apply([make_job()])
    ctl.reconcile(KEY)
    runtime.add_pods("default", "llm", reason={0: ("Unschedulable", "2 pod(s) do not fit: 64 cpu requested"),
                                               1: ("Unschedulable", "2 pod(s) do not fit: 64 cpu requested")})
    ctl.reconcile(KEY)
    job = current(store)
    assert job.status.phase == "Pending"
    cond = job.status.condition("Scheduled")
    assert cond.status == "False" and cond.reason == "Unschedulable" and "64 cpu" in cond.message


def test_ttl_deletes_finished_job(world):
    store, runtime, clock, ctl = world
    store.apply([make_job(ttlSecondsAfterFinished=30)])
    ctl.reconcile(KEY)
    runtime.set_job_condition("default", "llm", "Complete")
    ctl.reconcile(KEY)
    assert ctl.reconcile(KEY).requeue_after == pytest.approx(30)
    clock.advance(30)
    ctl.reconcile(KEY)
    assert current(store).metadata.deletion_timestamp is not None


def test_job_is_created_suspended_and_released_by_shipyard(world):
    store, runtime, clock, ctl = world
    store.apply([make_job()])
    ctl.reconcile(KEY)
    assert runtime.get("Job", "default", "llm")["spec"]["suspend"] is False
    # A gang whose release was lost (a crash between the two writes) is released on the next pass.
    job = runtime.get("Job", "default", "llm")
    job["spec"]["suspend"] = True
    runtime.apply(job)
    ctl.reconcile(KEY)
    assert runtime.get("Job", "default", "llm")["spec"]["suspend"] is False


def test_a_job_in_a_kueue_queue_waits_for_kueue_to_admit_it(world):
    store, runtime, clock, ctl = world
    queued = make_job()
    queued.metadata.labels["kueue.x-k8s.io/queue-name"] = "gpus"
    store.apply([queued])
    ctl.reconcile(KEY)
    ctl.reconcile(KEY)
    native = runtime.get("Job", "default", "llm")
    assert native["spec"]["suspend"] is True
    assert native["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpus"  # what Kueue selects on
    admitted = current(store).status.condition("Admitted")
    assert admitted.status == "False" and "gpus" in admitted.message
    native["spec"]["suspend"] = False  # Kueue admits it
    runtime.apply(native)
    runtime.add_pods("default", "llm", "Running")
    ctl.reconcile(KEY)
    job = current(store)
    assert job.status.phase == "Running" and job.status.condition("Admitted").status == "True"


# --- disruptions: the platform took a replica away (eviction, drain, preemption, node loss) -------------------

def disrupt(runtime, index, reason="EvictionByEvictionAPI", phase="Failed", deleting=None):
    pod = next(p for (k, _, _), p in runtime.objects.items() if k == "Pod" and p["status"]["phase"] == "Running"
               and p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == str(index))
    pod["status"]["phase"] = phase
    pod["status"]["conditions"].append({"type": "DisruptionTarget", "status": "True", "reason": reason,
                                        "message": "Eviction API: evicting"})
    if deleting is not None:
        pod["metadata"]["deletionTimestamp"] = deleting.isoformat()
    return pod


def pods_of_attempt(runtime, attempt):
    return [p for p in runtime.list("Pod", "default", {"shipyard.dev/restart": str(attempt)})]


@pytest.mark.parametrize("peer_failed_first", [False, True])
def test_disrupted_gang_is_recreated_without_counting_a_restart(world, peer_failed_first):
    store, runtime, clock, ctl = world
    store.apply([make_job(maxRestarts=0)])  # a counted restart would fail this job outright
    ctl.reconcile(KEY)
    runtime.add_pods("default", "llm", "Running")
    ctl.reconcile(KEY)
    disrupt(runtime, 1)
    if peer_failed_first:
        # Its peer lost the collective and exited non-zero, failing the Job by the exit-code rule first.
        runtime.set_job_condition("default", "llm", "Failed", "PodFailurePolicy",
                                  "Container trainer for pod default/llm-0-1 failed with exit code 1 matching "
                                  "FailJob rule at index 1")
    ctl.reconcile(KEY)
    job = current(store)
    assert job.status.restarts == 0 and job.status.disruptions == 1 and job.status.attempt == 1
    assert job.status.phase == "Restarting"
    running = job.status.condition("Running")
    assert running.reason == "Disrupted" and "replica 1" in running.message and "EvictionByEvictionAPI" in running.message
    assert reasons(store)[-1] == "Disrupted"
    ctl.reconcile(KEY)  # the disrupted attempt is deleted (foreground) ...
    assert runtime.get("Job", "default", "llm") is None
    ctl.reconcile(KEY)  # ... and the next one created at once: no back-off for the platform's doing
    assert job_env(runtime)["SHIPYARD_RESTART_COUNT"] == "1"  # non-zero: resume from the checkpoint
    assert runtime.get("Job", "default", "llm")["metadata"]["labels"]["shipyard.dev/restart"] == "1"
    runtime.add_pods("default", "llm", "Running")
    ctl.reconcile(KEY)
    job = current(store)
    assert job.status.phase == "Running" and job.status.restarts == 0
    assert [r.phase for r in job.status.replica_statuses] == ["Running", "Running"]  # the new attempt's pods


def test_job_failed_by_the_disruption_rule_after_the_pod_is_gone(world):
    store, runtime, clock, ctl = world
    store.apply([make_job()])
    ctl.reconcile(KEY)
    runtime.add_pods("default", "llm", "Running")
    ctl.reconcile(KEY)
    gone = disrupt(runtime, 0, reason="DeletionByPodGC")
    runtime.objects.pop(("Pod", "default", gone["metadata"]["name"]))  # evicted pods are deleted
    runtime.set_job_condition("default", "llm", "Failed", "PodFailurePolicy",
                              "Pod default/llm-0-1 has condition DisruptionTarget matching FailJob rule at index 0")
    ctl.reconcile(KEY)
    job = current(store)
    assert (job.status.restarts, job.status.disruptions) == (0, 1)
    assert "matching FailJob rule at index 0" in job.status.condition("Running").message


def test_a_real_failure_still_counts_after_a_disruption(world):
    store, runtime, clock, ctl = world
    store.apply([make_job(backoffSeconds=0)])
    ctl.reconcile(KEY)
    runtime.add_pods("default", "llm", "Running")
    ctl.reconcile(KEY)
    disrupt(runtime, 1)
    for _ in range(3):
        ctl.reconcile(KEY)
    assert current(store).status.attempt == 1
    runtime.add_pods("default", "llm", exit_codes={0: 7})  # the new attempt's replica 0 crashes by itself
    runtime.set_job_condition("default", "llm", "Failed", "PodFailurePolicy", "exit code 7")
    ctl.reconcile(KEY)
    job = current(store)
    assert (job.status.restarts, job.status.disruptions, job.status.attempt) == (1, 1, 2)
    assert job.status.condition("Running").reason == "GangRestart"


def test_disruption_at_the_deadline_is_not_retried(world):
    store, runtime, clock, ctl = world
    store.apply([make_job()])
    ctl.reconcile(KEY)
    runtime.add_pods("default", "llm", "Running")
    ctl.reconcile(KEY)
    disrupt(runtime, 1, reason="DeletionByTaintManager", phase="Running")
    runtime.set_job_condition("default", "llm", "Failed", "DeadlineExceeded", "Job was active longer than specified")
    ctl.reconcile(KEY)
    assert current(store).status.phase == "Failed" and current(store).status.disruptions == 0


class ForceDeletingRuntime(FakeRuntime):
    def __init__(self):
        super().__init__(graceful_delete=True)
        self.forced = []

    def force_delete_pod(self, namespace, name):
        self.forced.append(name)
        self.objects.pop(("Pod", namespace, name))


def test_pod_stuck_on_a_lost_node_is_removed_by_force_so_the_next_attempt_starts(tmp_path):
    store = SQLiteStore(tmp_path / "db")
    runtime, clock = ForceDeletingRuntime(), FakeClock()
    ctl = TrainingJobController(store, runtime, clock)
    try:
        store.apply([make_job()])
        ctl.reconcile(KEY)
        runtime.add_pods("default", "llm", "Running")
        ctl.reconcile(KEY)
        # The node stopped reporting: the node lifecycle controller evicted the replica (DisruptionTarget, a
        # deletion deadline 30 s out), but no kubelet is left to finish it.
        lost = disrupt(runtime, 1, reason="DeletionByTaintManager", phase="Running",
                       deleting=clock.now() + timedelta(seconds=30))
        ctl.reconcile(KEY)  # disruption recorded
        ctl.reconcile(KEY)  # the attempt's Job is deleted (foreground): it stays while its pods do
        for (kind, _, name), obj in list(runtime.objects.items()):
            if kind == "Pod" and name != lost["metadata"]["name"]:
                runtime.objects.pop((kind, "default", name))  # the live node's kubelet finished its pod
        ctl.reconcile(KEY)
        assert runtime.forced == []  # not before its deadline and the margin: a live kubelet may still answer
        clock.advance(59)
        ctl.reconcile(KEY)
        assert runtime.forced == []
        clock.advance(2)
        ctl.reconcile(KEY)
        assert runtime.forced == [lost["metadata"]["name"]]
        assert "LostPodRemoved" in reasons(store)
        assert current(store).status.restarts == 0
    finally:
        store.close()
