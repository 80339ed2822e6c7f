"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection package does it.

Why: the operator may run with more than one replica (or briefly two during a rolling update); two sets of
controllers acting on the same objects would fight. Only the holder of the Lease reconciles. A holder that
cannot renew within `renew_deadline` stops leading (the process exits and restarts as a candidate), so at
most one leader acts at a time as long as clocks tick at the same rate. Writes are conditional on the
Lease's resourceVersion, so two candidates racing for an expired Lease cannot both win.

`decide` is the policy, pure, with the time passed in; `LeaderElector` is the loop that applies it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from .api import KubeApi, KubeConflict, KubeError

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _micro_time(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


@dataclass(frozen=True)
class Decision:
    lead: bool
    spec: dict[str, Any] | None = None  # the Lease spec to write, None when nothing is to be written


def decide(lease_spec: dict[str, Any] | None, identity: str, now: datetime, duration_seconds: int) -> Decision:
    """Whether `identity` may lead now, and the Lease spec that claims or renews it."""
    spec = lease_spec or {}
    holder = spec.get("holderIdentity")
    renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
    duration = int(spec.get("leaseDurationSeconds") or duration_seconds)
    expired = renewed is None or now >= renewed + timedelta(seconds=duration)
    if holder == identity:
        return Decision(True, {**spec, "renewTime": _micro_time(now), "leaseDurationSeconds": duration_seconds})
    if holder and not expired:
        return Decision(False)
    return Decision(True, {
        "holderIdentity": identity,
        "leaseDurationSeconds": duration_seconds,
        "acquireTime": _micro_time(now),
        "renewTime": _micro_time(now),
        "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (1 if holder else 0),
    })


class LeaderElector:
    def __init__(self, api: KubeApi, namespace: str, name: str, identity: str, lease_seconds: int = 15,
                 renew_deadline: float = 10.0, retry_period: float = 2.0, clock: Callable[[], datetime] = _now):
        self._api = api
        self._namespace = namespace
        self._name = name
        self.identity = identity
        self._lease_seconds = lease_seconds
        self._renew_deadline = renew_deadline
        self._retry = retry_period
        self._clock = clock
        self._stop = threading.Event()
        self.leading = threading.Event()

    def try_acquire_or_renew(self) -> bool:
        now = self._clock()
        try:
            lease = self._api.get("Lease", self._namespace, self._name)
            decision = decide(lease.get("spec") if lease else None, self.identity, now, self._lease_seconds)
            if not decision.lead or decision.spec is None:
                return False
            if lease is None:
                self._api.create({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                  "metadata": {"name": self._name, "namespace": self._namespace},
                                  "spec": decision.spec})
            else:
                self._api.merge_patch("Lease", self._namespace, self._name, {
                    "metadata": {"resourceVersion": lease["metadata"].get("resourceVersion")},
                    "spec": decision.spec})
            return True
        except KubeConflict:
            return False  # another candidate wrote first
        except KubeError as exc:
            log.warning("leader election: %s", exc)
            return False

    def run(self, on_started: Callable[[], None], on_stopped: Callable[[], None]) -> None:
        """Block until leading, call on_started, renew until that fails for renew_deadline (or stop()), then
        call on_stopped. Candidates retry every retry_period."""
        while not self._stop.is_set():
            if self.try_acquire_or_renew():
                break
            self._stop.wait(self._retry)
        if self._stop.is_set():
            return
        log.info("leader election: %s leads %s/%s", self.identity, self._namespace, self._name)
        self.leading.set()
        on_started()
        last_renewed = self._clock()
        while not self._stop.wait(self._retry):
            if self.try_acquire_or_renew():
                last_renewed = self._clock()
            elif (self._clock() - last_renewed).total_seconds() > self._renew_deadline:
                log.error("leader election: %s could not renew for %.0f s; stepping down", self.identity,
                          self._renew_deadline)
                break
        self.leading.clear()
        on_stopped()

    def stop(self) -> None:
        self._stop.set()

    def release(self) -> None:
        """Give the Lease up at once (a graceful shutdown), so the next leader need not wait for it to expire."""
        try:
            lease = self._api.get("Lease", self._namespace, self._name)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                self._api.merge_patch("Lease", self._namespace, self._name, {
                    "metadata": {"resourceVersion": lease["metadata"].get("resourceVersion")},
                    "spec": {"holderIdentity": None, "renewTime": None, "acquireTime": None}})
        except KubeError as exc:
            log.warning("leader election: could not release the lease: %s", exc)
