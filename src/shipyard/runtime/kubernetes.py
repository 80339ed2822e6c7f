"""The Runtime protocol on a cluster: compiled objects are server-side applied and Kubernetes runs them.

The protocol was cut to the API server's shape, so this is thin: apply is a server-side apply as the field
manager "shipyard" with force (a controller owns its fields and takes them back from whoever changed them:
drift correction), delete of a Job or Deployment is a foreground deletion (the object stays visible until its
pods are gone, which is what lets a gang restart wait for the old gang), and `subscribe` is a set of watches
on the kinds Shipyard's objects are made of, mapped back to the Shipyard resource that owns each object.

Logs come from the pod log API. It cannot read from a byte offset, so this runtime has no LogRangeReader:
metric histories fall back to tails, as the protocol allows.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Iterator

from shipyard.cluster.api import KubeApi, KubeError
from shipyard.resources import KINDS

from .protocol import NativeObject, OwnerKey

log = logging.getLogger(__name__)

MANAGED_BY = "app.kubernetes.io/managed-by"
KIND_LABEL = "shipyard.dev/kind"
NAME_LABEL = "shipyard.dev/name"
# Kinds whose changes a controller must hear about: what it creates and what reports progress (pods).
WATCHED_KINDS = ("Job", "Pod", "Deployment", "StatefulSet", "HorizontalPodAutoscaler", "Service")
FOREGROUND_KINDS = {"Job", "Deployment", "StatefulSet"}
# The pod log API counts lines, not bytes: a tail of N bytes is read as N / this many lines.
ASSUMED_LINE_BYTES = 100
_KIND_BY_LOWER = {kind.lower(): kind for kind in KINDS}


HANDOVER_MANAGER = "shipyard-replicas-handover"


def _scales_without_replicas(body: NativeObject) -> bool:
    return body.get("kind") == "Deployment" and "replicas" not in (body.get("spec") or {})


def _owns_replicas(live: NativeObject, manager: str) -> bool:
    for entry in live["metadata"].get("managedFields") or []:
        if entry.get("manager") == manager and entry.get("operation") == "Apply" \
                and "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {}):
            return True
    return False


class ClusterRefused(Exception):
    """A call the cluster refused (other than not found), with the API server's message."""


def owner_of(obj: dict[str, Any]) -> OwnerKey | None:
    """The Shipyard resource an object belongs to: its controller owner reference if that is a Shipyard kind,
    else its Shipyard labels (pods are owned by a Job or ReplicaSet, and carry the labels of the template)."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace", "")
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") in KINDS and str(ref.get("apiVersion", "")).startswith("shipyard.dev/"):
            return OwnerKey(ref["kind"], namespace, ref["name"])
    labels = meta.get("labels") or {}
    kind = _KIND_BY_LOWER.get(labels.get(KIND_LABEL, ""))
    if kind and labels.get(NAME_LABEL):
        # A cluster-scoped owner (a Project, owning its namespace's policies) is keyed without a namespace.
        return OwnerKey(kind, "" if KINDS[kind].CLUSTER_SCOPED else namespace, labels[NAME_LABEL])
    return None


class KubernetesRuntime:
    def __init__(self, api: KubeApi, namespaces: list[str] | None = None):
        self._api = api
        self._namespaces: list[str | None] = list(namespaces) if namespaces else [None]
        self._subscribers: list[Callable[[OwnerKey], None]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- Runtime protocol ----------------------------------------------------------------------------

    def apply(self, obj: NativeObject) -> NativeObject:
        body = {k: v for k, v in obj.items() if k != "status"}
        try:
            if _scales_without_replicas(body):
                self._hand_replicas_over(body)
            return self._api.apply(body)
        except KubeError as exc:
            raise ClusterRefused(f"applying {obj['kind']} {obj['metadata']['name']}: {exc}") from None

    def _hand_replicas_over(self, body: NativeObject) -> None:
        """Before a Deployment is applied without `replicas` (the HPA owns the count from now on), make a
        separate field manager co-own the current value. Otherwise the API server would drop the field this
        manager gave up, and the Deployment would fall back to 1 replica until the HPA's next sync (the hand-over
        Kubernetes' server-side apply documentation describes for exactly this case)."""
        meta = body["metadata"]
        live = self._api.get(body["kind"], meta["namespace"], meta["name"])
        if live is None or not _owns_replicas(live, self._api.field_manager):
            return
        self._api.apply({"apiVersion": body["apiVersion"], "kind": body["kind"],
                         "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                         "spec": {"replicas": live["spec"].get("replicas", 1)}},
                        force=True, field_manager=HANDOVER_MANAGER)

    def get(self, kind: str, namespace: str, name: str) -> NativeObject | None:
        return self._api.get(kind, namespace, name)

    def list(self, kind: str, namespace: str, labels: dict[str, str] | None = None) -> list[NativeObject]:
        return self._api.list(kind, namespace, labels)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self._api.delete(kind, namespace, name, foreground=kind in FOREGROUND_KINDS)

    def subscribe(self, callback: Callable[[OwnerKey], None]) -> None:
        self._subscribers.append(callback)

    # --- PodForceDeleter capability ------------------------------------------------------------------

    def force_delete_pod(self, namespace: str, name: str) -> None:
        self._api.delete("Pod", namespace, name, grace_period_seconds=0)

    # --- LogReader capability ------------------------------------------------------------------------

    def read_log(self, namespace: str, pod: str, follow: bool = False,
                 tail_bytes: int | None = None) -> Iterator[bytes]:
        # A pod that has not started has no log yet: nothing to read is the honest answer.
        lines = None if tail_bytes is None else max(1, tail_bytes // ASSUMED_LINE_BYTES)
        return self.read_log_lines(namespace, pod, follow=follow, tail_lines=lines)

    def read_log_lines(self, namespace: str, pod: str, follow: bool = False, tail_lines: int | None = None,
                       previous: bool = False, since_seconds: int | None = None) -> Iterator[bytes]:
        """The log API's own units: the last `tail_lines` lines, the lines of the last `since_seconds`, the
        container's previous run (what `shipyard logs --tail/--since/--previous` ask for)."""
        try:
            for line in self._api.log(namespace, pod, follow=follow, tail_lines=tail_lines, previous=previous,
                                      since_seconds=since_seconds):
                yield line.encode("utf-8")
        except KubeError as exc:
            log.debug("no log for pod %s/%s: %s", namespace, pod, exc)

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        for kind in WATCHED_KINDS:
            for ns in self._namespaces:
                thread = threading.Thread(target=self._watch, args=(kind, ns), name=f"watch-{kind}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def _watch(self, kind: str, namespace: str | None) -> None:
        for _, obj in self._api.watch(kind, namespace, {MANAGED_BY: "shipyard"}, self._stop):
            owner = owner_of(obj)
            if owner is None:
                continue
            for callback in self._subscribers:
                try:
                    callback(owner)
                except Exception:  # noqa: BLE001 - a subscriber's bug must not end the watch
                    log.exception("runtime subscriber failed")
