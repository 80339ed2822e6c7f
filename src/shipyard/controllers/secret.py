"""The Secret controller: keeps a Shipyard Secret's native Secret (same name) equal to its values.

Reconcile: read (the store hands controllers the values; nobody else sees them); finalizer; refuse to take
over a native Secret of that name that something else owns (a Workspace's token, an Endpoint's gateway key:
overwriting it would break them); apply the compiled native Secret; write status (keys and sizes, Ready).
Deleted: delete the native Secret, then release the finalizer. Workloads that reference a key which is not
there yet fail to start their container and are retried, as the kubelet does with CreateContainerConfigError.

Nothing here logs, records or returns a value: events and conditions name keys only.
"""

from __future__ import annotations

from typing import Any

from shipyard.compiler import compile_resource
from shipyard.resources import Condition, Secret, set_condition
from shipyard.runtime.protocol import Runtime
from shipyard.store.protocol import Store

from .clock import Clock, SystemClock
from .finalizers import reconcile_lifecycle, release
from .manager import ObjectKey, Result

NATIVE = "Secret"


def _owner_uid(native: dict[str, Any]) -> str | None:
    refs = native["metadata"].get("ownerReferences") or []
    owner = next((r for r in refs if r.get("controller")), None) or next(iter(refs), None)
    return None if owner is None else owner.get("uid")


def _owned_by_a_secret(native: dict[str, Any]) -> bool:
    return any(r.get("kind") == "Secret" and str(r.get("apiVersion", "")).startswith("shipyard.dev/")
               for r in native["metadata"].get("ownerReferences") or [])


class SecretController:
    kind = "Secret"

    def __init__(self, store: Store, runtime: Runtime, clock: Clock | None = None):
        self._store = store
        self._runtime = runtime
        self._clock = clock or SystemClock()

    def reconcile(self, key: ObjectKey) -> Result:
        return reconcile_lifecycle(self._store, self.kind, key, gone=self._gone, finalize=self._finalize,
                                   live=self._live)

    def _live(self, secret: Secret) -> Result:
        now = self._clock.now()
        ns, name = secret.metadata.namespace, secret.metadata.name
        status = secret.status.model_copy(deep=True)
        status.observed_generation = secret.metadata.generation
        status.keys = {k: len(v.encode()) for k, v in sorted(secret.spec.string_data.items())}
        current = self._runtime.get(NATIVE, ns, name)
        foreign = current is not None and _owner_uid(current) != secret.metadata.uid
        if foreign:
            status.phase = "Failed"
            condition = Condition(type="Ready", status="False", reason="NameConflict",
                                  message=f"a Secret named {name} that Shipyard did not make for this one already "
                                          "exists in the project; choose another name")
        else:
            for obj in compile_resource(secret):
                self._runtime.apply(obj)
            status.phase = "Ready"
            condition = Condition(type="Ready", status="True", reason="Applied",
                                  message=f"keys: {', '.join(status.keys) or '<none>'}")
        status.conditions = set_condition(status.conditions, condition, now)
        if status.to_wire() != secret.status.to_wire():
            if status.phase != secret.status.phase or status.keys != secret.status.keys:
                self._store.record_event(secret, "Warning" if foreign else "Normal",
                                         condition.reason, condition.message)
            self._store.update_status(secret.model_copy(update={"status": status}))
        return Result()

    def _gone(self, namespace: str, name: str) -> None:
        # Deleted before its first reconcile (no finalizer yet): its native Secret, if any, is by name.
        current = self._runtime.get(NATIVE, namespace, name)
        if current is not None and _owned_by_a_secret(current):
            self._runtime.delete(NATIVE, namespace, name)

    def _finalize(self, secret: Secret) -> Result:
        ns, name = secret.metadata.namespace, secret.metadata.name
        current = self._runtime.get(NATIVE, ns, name)
        if current is not None and _owner_uid(current) == secret.metadata.uid:
            self._runtime.delete(NATIVE, ns, name)
        return release(self._store, secret)
