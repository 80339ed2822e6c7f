"""The Project controller: keeps a project's namespace, member RoleBindings and policies equal to its spec.

Reconcile: finalizer; apply what the compiler made of the Project (compiler/project.py); remove member
RoleBindings of members no longer listed; write status (Active; while being deleted, Terminating and what
it still holds, by kind — counting that all the time would mean waking on every object's change).

Where the objects go depends on who decides access:
- member RoleBindings go to the store's RBAC authority when it has one (locally: `store.rbac`, which the API's
  authorizer reads), else to the runtime as native RoleBindings (on a cluster, where Kubernetes decides);
- the Namespace goes to the runtime unless the runtime's namespaces are implicit (the local runtime makes a
  project's directories on first use);
- NetworkPolicies, the LimitRange and the ResourceQuota go to the runtime (on a cluster Kubernetes enforces
  them; locally they are kept for the sandbox and the scheduler to evaluate). A quota removed from the spec
  is deleted (only the one Shipyard made: labelled managed-by shipyard).

Deleted: delete every object the project still holds (the API refused unless `--force`), wait until the
store has none, then remove the member bindings and the native objects (on a cluster deleting the Namespace
removes everything else in it), then release the finalizer.
"""

from __future__ import annotations

from typing import Any

from shipyard.compiler.common import MANAGED_BY
from shipyard.compiler.project import MEMBER_LABEL, RESOURCE_QUOTA, compile_project
from shipyard.resources import Condition, Project, set_condition
from shipyard.runtime.protocol import Runtime
from shipyard.store.projects import held_objects
from shipyard.store.protocol import Store

from .clock import Clock, SystemClock
from .finalizers import reconcile_lifecycle, release
from .manager import ObjectKey, Result

REQUEUE_WHILE_EMPTYING = 1.0


class ProjectController:
    kind = "Project"

    def __init__(self, store: Store, runtime: Runtime, clock: Clock | None = None):
        self._store = store
        self._runtime = runtime
        self._clock = clock or SystemClock()
        # Locally the store keeps the RBAC objects the API authorizes with; on a cluster Kubernetes does.
        self._rbac: Any = getattr(store, "rbac", None)
        self._implicit_namespaces = bool(getattr(runtime, "IMPLICIT_NAMESPACES", False))

    def reconcile(self, key: ObjectKey) -> Result:
        return reconcile_lifecycle(self._store, self.kind, key, gone=self._gone, finalize=self._finalize,
                                   live=self._live)

    # --- where each object goes -------------------------------------------------------------------------

    def _apply(self, obj: dict[str, Any]) -> None:
        if obj["kind"] == "RoleBinding" and self._rbac is not None:
            self._rbac.put(obj)
        elif obj["kind"] == "Namespace" and self._implicit_namespaces:
            return
        else:
            self._runtime.apply(obj)

    def _member_bindings(self, namespace: str) -> list[str]:
        if self._rbac is not None:
            found = self._rbac.list("RoleBinding", namespace)
        else:
            found = self._runtime.list("RoleBinding", namespace, {MEMBER_LABEL: "true"})
        return [b["metadata"]["name"] for b in found
                if (b["metadata"].get("labels") or {}).get(MEMBER_LABEL) == "true"]

    def _delete_binding(self, namespace: str, name: str) -> None:
        if self._rbac is not None:
            try:
                self._rbac.delete("RoleBinding", namespace, name)
            except Exception:  # already gone: what deleting wanted  # noqa: BLE001
                pass
        else:
            self._runtime.delete("RoleBinding", namespace, name)

    # --- reconcile --------------------------------------------------------------------------------------

    def _live(self, project: Project) -> Result:
        name = project.metadata.name
        desired = compile_project(project)
        for obj in desired:
            self._apply(obj)
        wanted = {o["metadata"]["name"] for o in desired if o["kind"] == "RoleBinding"}
        for stale in set(self._member_bindings(name)) - wanted:
            self._delete_binding(name, stale)
        if project.spec.quota is None:
            self._delete_quota(name)
        status = project.status.model_copy(deep=True)
        status.phase = "Active"
        status.observed_generation = project.metadata.generation
        status.workloads = {}  # counted only while emptying it: every object's change would wake it otherwise
        members = len(project.spec.members)
        condition = Condition(type="Ready", status="True", reason="Applied",
                              message=f"{members} member{'s' if members != 1 else ''}; namespace, policies and "
                                      "limits applied")
        status.conditions = set_condition(status.conditions, condition, self._clock.now())
        if status.to_wire() != project.status.to_wire():
            if project.status.phase != "Active":
                self._store.record_event(project, "Normal", "Applied", condition.message)
            self._store.update_status(project.model_copy(update={"status": status}))
        return Result()

    def _delete_quota(self, namespace: str) -> None:
        quota = self._runtime.get("ResourceQuota", namespace, RESOURCE_QUOTA)
        if quota is not None and (quota["metadata"].get("labels") or {}).get(MANAGED_BY) == "shipyard":
            self._runtime.delete("ResourceQuota", namespace, RESOURCE_QUOTA)

    def _gone(self, namespace: str, name: str) -> None:
        # Deleted before its first reconcile: no finalizer ever held it, nothing of it was applied.
        return None

    def _finalize(self, project: Project) -> Result:
        name = project.metadata.name
        held = held_objects(self._store, name)
        if held:
            for kind in held:
                for obj in self._store.list(kind, name):
                    if obj.metadata.deletion_timestamp is None:
                        self._store.delete(kind, name, obj.metadata.name)
            if project.status.phase != "Terminating":
                status = project.status.model_copy(update={"phase": "Terminating", "workloads": held})
                self._store.record_event(project, "Normal", "Emptying",
                                         "deleting " + ", ".join(f"{n} {k}" for k, n in held.items()))
                self._store.update_status(project.model_copy(update={"status": status}))
            return Result(requeue_after=REQUEUE_WHILE_EMPTYING)
        for binding in self._member_bindings(name):
            self._delete_binding(name, binding)
        for obj in reversed(compile_project(project)):
            if obj["kind"] == "RoleBinding" or (obj["kind"] == "Namespace" and self._implicit_namespaces):
                continue
            self._runtime.delete(obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        return release(self._store, project)
