"""Objects that wait (a gang that does not fit, a job queued for Kueue) cost nothing while they wait: no
reconcile on a timer; the event that can end the wait wakes them; a slow resync remains as a safety net.

Reconciles are counted through the manager with a fake clock: advancing it by an hour must not reconcile a
waiting job again; the runtime's change must."""

from __future__ import annotations

import time
from collections import Counter
from decimal import Decimal

import pytest

from shipyard.compiler import compile_resource
from shipyard.controllers.clock import FakeClock
from shipyard.controllers.manager import RESYNC_SECONDS, Manager, ObjectKey
from shipyard.controllers.trainingjob import TrainingJobController
from shipyard.runtime.fake import FakeRuntime
from shipyard.runtime.local import runtime as local_runtime
from shipyard.runtime.local.capacity import Capacity
from shipyard.runtime.local.runtime import LocalRuntime
from shipyard.runtime.protocol import OwnerKey
from shipyard.store.sqlite import SQLiteStore
from tests.unit.test_trainingjob_controller import KEY, current, make_job

UNSCHEDULABLE = ("Unschedulable", "2 pod(s) do not fit on this machine: 1 GPU requested, 0 of 0 free")


class Counting:
    """The TrainingJob controller, counting its reconciles."""

    kind = "TrainingJob"

    def __init__(self, inner: TrainingJobController):
        self.inner = inner
        self.count: Counter[ObjectKey] = Counter()

    def reconcile(self, key: ObjectKey):
        self.count[key] += 1
        return self.inner.reconcile(key)


@pytest.fixture
def world(tmp_path):
    store = SQLiteStore(tmp_path / "db")
    runtime = FakeRuntime()
    clock = FakeClock()
    controller = Counting(TrainingJobController(store, runtime, clock))
    manager = Manager(store, runtime, [controller], clock=clock)
    yield store, runtime, clock, controller, manager
    store.close()


def drain(manager: Manager) -> None:
    while manager.process_one(timeout=0):
        pass


def settle(manager: Manager, clock: FakeClock) -> None:
    """Run every reconcile now due, and the short requeues that follow, until only long waits are left."""
    for _ in range(20):
        drain(manager)
        clock.advance(1)
    drain(manager)


def test_a_gang_that_does_not_fit_is_woken_by_its_pods_being_placed_not_by_a_timer(world):
    store, runtime, clock, controller, manager = world
    store.apply([make_job()])
    drain(manager)
    runtime.add_pods("default", "llm", reason={0: UNSCHEDULABLE, 1: UNSCHEDULABLE})
    runtime.notify(OwnerKey("TrainingJob", "default", "llm"))
    settle(manager, clock)
    assert current(store).status.condition("Scheduled").reason == "Unschedulable"
    waited = controller.count[KEY]
    clock.advance(3600)  # an hour of waiting: nothing is due
    drain(manager)
    assert controller.count[KEY] == waited and manager.queue.pending() == 0
    # Capacity freed: the runtime places the gang and says so; that wakes the job.
    for key in [k for k in runtime.objects if k[0] == "Pod"]:
        del runtime.objects[key]
    runtime.add_pods("default", "llm", "Running")
    runtime.notify(OwnerKey("TrainingJob", "default", "llm"))
    drain(manager)
    assert controller.count[KEY] > waited  # (and its own status write wakes it once more, to no effect)
    assert current(store).status.phase == "Running"


def test_a_job_queued_for_kueue_is_woken_by_its_admission_not_by_a_timer(world):
    store, runtime, clock, controller, manager = world
    queued = make_job()
    queued.metadata.labels["kueue.x-k8s.io/queue-name"] = "gpus"
    store.apply([queued])
    settle(manager, clock)
    assert current(store).status.condition("Admitted").reason == "Queued"
    waited = controller.count[KEY]
    clock.advance(3600)
    drain(manager)
    assert controller.count[KEY] == waited and manager.queue.pending() == 0
    native = runtime.get("Job", "default", "llm")
    native["spec"]["suspend"] = False  # Kueue admits it: a change of the Job, which the runtime reports
    runtime.apply(native)
    runtime.add_pods("default", "llm", "Running")
    runtime.notify(OwnerKey("TrainingJob", "default", "llm"))
    drain(manager)
    assert controller.count[KEY] > waited  # (and its own status write wakes it once more, to no effect)
    assert current(store).status.condition("Admitted").status == "True"


def test_an_edit_wakes_a_waiting_job(world):
    store, runtime, clock, controller, manager = world
    queued = make_job()
    queued.metadata.labels["kueue.x-k8s.io/queue-name"] = "gpus"
    store.apply([queued])
    settle(manager, clock)
    waited = controller.count[KEY]
    queued.metadata.labels["team"] = "vision"
    store.apply([queued])
    drain(manager)
    assert controller.count[KEY] > waited


def test_the_safety_resync_still_reconciles_waiting_jobs(world):
    store, runtime, clock, controller, _ = world
    assert 60 <= RESYNC_SECONDS < float("inf")  # slow, but there
    manager = Manager(store, runtime, [controller], clock=clock, resync_seconds=0.05)
    queued = make_job()
    queued.metadata.labels["kueue.x-k8s.io/queue-name"] = "gpus"
    store.apply([queued])
    manager.start()
    try:
        deadline = time.monotonic() + 30
        while controller.count[KEY] < 6 and time.monotonic() < deadline:
            time.sleep(0.02)  # awaiting resyncs: nothing else wakes the job (its clock never moves)
        assert controller.count[KEY] >= 6
    finally:
        manager.stop()


# --- the local runtime: what waits is neither re-placed nor re-synced every tick ----------------------------

def test_the_local_runtime_places_pending_pods_again_only_when_capacity_changes(tmp_path, monkeypatch):
    rt = LocalRuntime(tmp_path / "rt", tmp_path / "vol", tmp_path / "logs",
                      capacity=Capacity(cpu=Decimal(1), memory=Decimal(1 << 30)))
    heard: list[OwnerKey] = []
    rt.subscribe(heard.append)
    placements, job_syncs = [], []
    real_schedule, real_sync_job = rt._schedule, local_runtime.sync_job
    monkeypatch.setattr(rt, "_schedule", lambda **kw: placements.append(1) or real_schedule(**kw))
    monkeypatch.setattr(local_runtime, "sync_job", lambda *a: job_syncs.append(1) or real_sync_job(*a))
    big = make_job(replicas=2, resources={"cpu": "4"}, volumes=[])
    big.metadata.uid = "uid-big"
    for obj in compile_resource(big, admitted=True):
        rt.apply(obj)
    for _ in range(3):
        rt.sync_once()
    [pod, _] = rt.list("Pod", "default", {"shipyard.dev/name": "llm"})
    assert pod["status"]["conditions"][0]["reason"] == "Unschedulable"
    assert OwnerKey("TrainingJob", "default", "llm") in heard
    placed, synced = len(placements), len(job_syncs)
    for _ in range(20):
        rt.sync_once()  # nothing changed: a waiting gang costs no placement and no Job sync
    assert (len(placements), len(job_syncs)) == (placed, synced)
    rt.delete("Pod", "default", pod["metadata"]["name"])  # what is pending changed: try placing again
    rt.sync_once()
    assert len(placements) > placed
    rt.stop()
