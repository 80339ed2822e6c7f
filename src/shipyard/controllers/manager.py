"""Runs controllers: turns store changes, runtime changes and a slow periodic resync into reconciles.

Why level-triggered: a reconcile never trusts the event that caused it; it reads current state. So a lost
notification, a crash or a restart only delays convergence, and the resync repairs anything missed.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Protocol

from shipyard.runtime.protocol import OwnerKey, Runtime
from shipyard.store.protocol import Invalid, Store, WatchEvent

from .clock import Clock, SystemClock
from .workqueue import WorkQueue

log = logging.getLogger(__name__)

# The safety net, not the heartbeat: every change that can move an object wakes it (store, runtime, owned
# resources, requeue-after deadlines of its own), so the resync only repairs a lost notification. Each one
# reconciles every object (a few ms each), so its period sets what idle objects cost: at 10,000 objects a
# 30 s resync alone kept a core busy, and 10 minutes still cost several percent of one. controller-runtime's
# default SyncPeriod is 10 hours; half an hour bounds how long a missed change can go unnoticed.
RESYNC_SECONDS = 1800.0


@dataclass(frozen=True)
class ObjectKey:
    kind: str
    namespace: str
    name: str


@dataclass(frozen=True)
class Result:
    requeue_after: float | None = None


class Controller(Protocol):
    kind: str

    def reconcile(self, key: ObjectKey) -> Result: ...


class Manager:
    def __init__(self, store: Store, runtime: Runtime, controllers: list[Controller], clock: Clock | None = None,
                 workers: int = 2, resync_seconds: float = RESYNC_SECONDS):
        self._store = store
        self._controllers = {c.kind: c for c in controllers}
        self._clock = clock or SystemClock()
        self.queue: WorkQueue[ObjectKey] = WorkQueue(self._clock)
        self._workers = workers
        self._resync_seconds = resync_seconds
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        store.subscribe(self._on_store_change)
        runtime.subscribe(self._on_runtime_change)

    def _on_store_change(self, event: WatchEvent) -> None:
        kind = event.object["kind"]
        meta = event.object["metadata"]
        if kind in self._controllers:
            self.queue.add(ObjectKey(kind, meta.get("namespace", ""), meta["name"]))
        # A resource made by another's controller (a Sweep's trial TrainingJobs) wakes its owner too, as
        # Kubernetes controllers watch the objects they own.
        for owner in meta.get("ownerReferences") or []:
            if owner.get("kind") in self._controllers:
                self.queue.add(ObjectKey(owner["kind"], meta["namespace"], owner["name"]))

    def _on_runtime_change(self, owner: OwnerKey) -> None:
        if owner.kind in self._controllers:
            self.queue.add(ObjectKey(owner.kind, owner.namespace, owner.name))

    def enqueue(self, kind: str, namespace: str, name: str) -> None:
        """Reconcile this object soon (for signals from outside the store and runtime, such as the gateway)."""
        if kind in self._controllers:
            self.queue.add(ObjectKey(kind, namespace, name))

    def enqueue_all(self) -> None:
        for kind in self._controllers:
            for resource in self._store.list(kind):
                self.queue.add(ObjectKey(kind, resource.metadata.namespace, resource.metadata.name))

    def process_one(self, timeout: float | None = None) -> bool:
        key = self.queue.get(timeout)
        if key is None:
            return False
        try:
            result = self._controllers[key.kind].reconcile(key)
        except Invalid as exc:
            # An object Shipyard cannot act on (written around its API, e.g. kubectl): the store has said why on
            # the object; retrying cannot help, and its next change is reconciled anyway.
            log.warning("not reconciling %s %s/%s: %s", key.kind, key.namespace, key.name, exc)
            result = Result()
        except Exception:  # noqa: BLE001 - a failing reconcile is retried, never fatal to the daemon
            log.exception("reconcile of %s %s/%s failed; retrying", key.kind, key.namespace, key.name)
            result = Result(requeue_after=2.0)
        finally:
            self.queue.done(key)
        if result.requeue_after is not None:
            self.queue.add_after(key, result.requeue_after)
        return True

    def start(self) -> None:
        listed = self._try_enqueue_all()
        for i in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"controller-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        resync = threading.Thread(target=self._resync, args=(listed,), name="resync", daemon=True)
        resync.start()
        self._threads.append(resync)

    def _work(self) -> None:
        while not self._stop.is_set():
            self.process_one(timeout=1.0)

    def _try_enqueue_all(self) -> bool:
        try:
            self.enqueue_all()
            return True
        except Exception as exc:  # noqa: BLE001 - a store briefly unreachable must not end the controllers
            log.warning("listing resources failed (%s)", exc)
            return False

    def _resync(self, listed: bool) -> None:
        # Until a first full listing succeeds, retry soon: an API server answers 503 for a custom resource
        # whose storage is still initializing (just after its CRD is established), and nothing that existed
        # before this start would be reconciled until the next resync otherwise.
        delay = 0.5
        while not listed:
            if self._stop.wait(delay):
                return
            listed = self._try_enqueue_all()
            delay = min(delay * 2, self._resync_seconds)
        while not self._stop.wait(self._resync_seconds):
            if not self._try_enqueue_all():
                log.warning("resync failed; trying again in %.0f s", self._resync_seconds)

    def stop(self) -> None:
        self._stop.set()
        self.queue.shutdown()
        for thread in self._threads:
            thread.join(timeout=10)
