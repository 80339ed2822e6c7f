"""The Runtime protocol: how controllers run native Kubernetes objects without knowing where.

A small core (apply / get / list / delete / subscribe) that maps one-to-one onto a Kubernetes API server,
plus optional capabilities a runtime may lack (Kueue's pattern): a runtime that cannot stream logs simply
does not implement LogReader. Objects are plain dicts in Kubernetes wire form, exactly what the compiler
emits; `status` is filled in by the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

NativeObject = dict[str, Any]


@dataclass(frozen=True)
class OwnerKey:
    """Identifies the Shipyard resource that (transitively) owns a changed native object."""

    kind: str
    namespace: str
    name: str


class Runtime(Protocol):
    def apply(self, obj: NativeObject) -> NativeObject:
        """Create or update to match `obj` (declarative, idempotent); returns the object with its status."""

    def get(self, kind: str, namespace: str, name: str) -> NativeObject | None: ...

    def list(self, kind: str, namespace: str, labels: dict[str, str] | None = None) -> list[NativeObject]: ...

    def delete(self, kind: str, namespace: str, name: str) -> None:
        """Begin graceful deletion; the object stays visible (with deletionTimestamp) until it is gone."""

    def subscribe(self, callback: Callable[[OwnerKey], None]) -> None:
        """Call back whenever an object owned by a Shipyard resource changes (a watch, in effect)."""


@runtime_checkable
class PodForceDeleter(Protocol):
    """Removing a pod whose node is gone: a graceful deletion waits for a kubelet that will never answer (what
    `kubectl delete pod --force --grace-period=0` does). Only a cluster has nodes to lose."""

    def force_delete_pod(self, namespace: str, name: str) -> None: ...


@runtime_checkable
class LogReader(Protocol):
    def read_log(self, namespace: str, pod: str, follow: bool = False,
                 tail_bytes: int | None = None) -> Iterator[bytes]: ...


@runtime_checkable
class LogRangeReader(Protocol):
    """Reading a pod's log from a byte offset: how a consumer that keeps its place (metric histories) reads
    only what is new, instead of the whole log or a tail that may have skipped lines."""

    def read_log_range(self, namespace: str, pod: str, offset: int, max_bytes: int) -> bytes:
        """Up to `max_bytes` of the log from byte `offset`; b"" at its end or when the pod has no log."""


# Metrics the gateway reports per upstream (an upstream id is the pod's name), for HorizontalPodAutoscalers
# with `type: Pods` metrics.
IN_FLIGHT_METRIC = "shipyard_gateway_upstream_in_flight"
REQUESTS_PER_SECOND_METRIC = "shipyard_gateway_upstream_requests_per_second"


class PodMetrics(Protocol):
    """Per-pod metric values, what a cluster's custom metrics API serves to the HorizontalPodAutoscaler.

    The composition root fills it in from the gateway. Called from the runtime's sync thread, outside its
    lock, once per HPA sync for every pod of the target: it must answer from memory, without blocking."""

    def pod_metric(self, namespace: str, pod: str, metric: str) -> float | None:
        """The metric's current value for that pod, or None if there is none (yet)."""
