"""The controller manager's start against a store that is not ready yet (an API server answering 503 for a custom
resource whose storage is still initializing, as a real one does just after its CRD is established)."""

from __future__ import annotations

import time

from shipyard.controllers.clock import FakeClock
from shipyard.controllers.manager import Manager, ObjectKey
from shipyard.controllers.sweep import SweepController
from shipyard.runtime.fake import FakeRuntime
from shipyard.store import StoreError
from shipyard.store.sqlite import SQLiteStore
from tests.unit.test_sweep_controller import KEY, make_sweep


class InitializingStore(SQLiteStore):
    """Refuses its first `failures` lists, as the API server did in tests/k8s before this was handled."""

    def __init__(self, path, failures: int):
        super().__init__(path)
        self.failures = failures

    def list(self, *args, **kwargs):
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("storage is (re)initializing")
        return super().list(*args, **kwargs)


def test_objects_that_existed_before_start_are_reconciled_once_the_store_answers(tmp_path):
    store = InitializingStore(tmp_path / "db", failures=2)
    store.apply([make_sweep()])
    manager = Manager(store, FakeRuntime(), [SweepController(store, clock=FakeClock())], clock=FakeClock(),
                      resync_seconds=3600)
    seen: list[ObjectKey] = []
    manager.process_one = lambda timeout=None: bool(  # record instead of reconciling: only the queue matters
        (key := manager.queue.get(timeout)) and (seen.append(key), manager.queue.done(key)))
    while (pending := manager.queue.get(timeout=0)) is not None:  # the store's own event for the apply
        manager.queue.done(pending)
    manager.start()  # the first listing fails; the resync thread retries within a second or two
    try:
        deadline = time.monotonic() + 10
        while KEY not in seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert KEY in seen and store.failures == 0
    finally:
        manager.stop()
        store.close()
