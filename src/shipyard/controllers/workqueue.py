"""A rate-free work queue of object keys, as client-go's: a key is queued at most once, is never processed by
two workers at once, and can be re-added after a delay (requeue-after) measured on an injected clock."""

from __future__ import annotations

import heapq
import threading
from typing import Generic, Hashable, TypeVar

from .clock import Clock, SystemClock

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, clock: Clock | None = None):
        self._clock = clock or SystemClock()
        self._cond = threading.Condition()
        self._queue: list[K] = []
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._dirty: set[K] = set()  # re-added while being processed: queue again when done
        self._delayed: list[tuple[float, int, K]] = []
        self._deadline: dict[K, float] = {}
        self._seq = 0
        self._shutdown = False

    def add(self, key: K) -> None:
        with self._cond:
            if key in self._processing:
                self._dirty.add(key)
            elif key not in self._queued:
                self._queued.add(key)
                self._queue.append(key)
                self._cond.notify()

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            due = self._clock.monotonic() + delay
            # One deadline per key, the earliest (as client-go): otherwise every status write would start
            # another requeue chain and reconciles of a long-running job would grow without bound.
            if key in self._deadline and self._deadline[key] <= due:
                return
            self._deadline[key] = due
            self._seq += 1
            heapq.heappush(self._delayed, (due, self._seq, key))
            self._cond.notify()

    def _promote_due(self) -> float | None:
        """Move due delayed keys into the queue; seconds until the next one, if any."""
        now = self._clock.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            due, _, key = heapq.heappop(self._delayed)
            if self._deadline.get(key) != due:
                continue  # superseded by an earlier deadline for the same key
            del self._deadline[key]
            if key in self._processing:
                self._dirty.add(key)
            elif key not in self._queued:
                self._queued.add(key)
                self._queue.append(key)
        return self._delayed[0][0] - now if self._delayed else None

    def get(self, timeout: float | None = None) -> K | None:
        """The next key to process (mark it done() afterwards), or None on timeout or shutdown."""
        with self._cond:
            waited = 0.0
            while not self._shutdown:
                until_next = self._promote_due()
                if self._queue:
                    key = self._queue.pop(0)
                    self._queued.discard(key)
                    self._processing.add(key)
                    return key
                wait = until_next if until_next is not None else 1.0
                if timeout is not None:
                    if waited >= timeout:
                        return None
                    wait = min(wait, timeout - waited)
                self._cond.wait(max(wait, 0.001))
                waited += wait
            return None

    def done(self, key: K) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                if key not in self._queued:
                    self._queued.add(key)
                    self._queue.append(key)
                    self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            self._promote_due()
            return len(self._queue)

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()
