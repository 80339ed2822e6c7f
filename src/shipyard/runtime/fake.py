"""An in-memory Runtime for controller tests (the fake beside the seam, as httpx keeps MockTransport).

It records what controllers apply and delete, and lets a test play the cluster: set a Job's conditions,
add pods, finish deletions, put text in a pod's log.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

from .protocol import NativeObject, OwnerKey

Key = tuple[str, str, str]


class FakeRuntime:
    def __init__(self, graceful_delete: bool = False):
        self.objects: dict[Key, NativeObject] = {}
        self.logs: dict[tuple[str, str], bytes] = {}
        self.applied: list[NativeObject] = []
        self.deleted: list[Key] = []
        # With graceful_delete, deleted Jobs linger (deletionTimestamp) until finish_deletions().
        self.graceful_delete = graceful_delete
        self._pods_made = 0
        self._subscribers: list[Callable[[OwnerKey], None]] = []

    def apply(self, obj: NativeObject) -> NativeObject:
        self.applied.append(copy.deepcopy(obj))
        key = (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        current = self.objects.get(key)
        stored = copy.deepcopy(obj)
        stored["status"] = current.get("status", {}) if current else {}
        self.objects[key] = stored
        return stored

    def get(self, kind: str, namespace: str, name: str) -> NativeObject | None:
        obj = self.objects.get((kind, namespace, name))
        return copy.deepcopy(obj) if obj else None

    def list(self, kind: str, namespace: str, labels: dict[str, str] | None = None) -> list[NativeObject]:
        return [copy.deepcopy(o) for (k, ns, _), o in self.objects.items() if k == kind and ns == namespace
                and all(o["metadata"].get("labels", {}).get(a) == b for a, b in (labels or {}).items())]

    def delete(self, kind: str, namespace: str, name: str) -> None:
        key = (kind, namespace, name)
        if key not in self.objects:
            return
        self.deleted.append(key)
        if self.graceful_delete and kind == "Job":
            self.objects[key]["metadata"]["deletionTimestamp"] = "now"
        else:
            self._remove(key)

    def _remove(self, key: Key) -> None:
        self.objects.pop(key, None)
        if key[0] == "Job":  # pods go with their Job
            for pod_key in [k for k, o in self.objects.items() if k[0] == "Pod" and k[1] == key[1]
                            and o["metadata"].get("labels", {}).get("batch.kubernetes.io/job-name") == key[2]]:
                self.objects.pop(pod_key)

    def finish_deletions(self) -> None:
        for key in [k for k, o in self.objects.items() if o["metadata"].get("deletionTimestamp")]:
            self._remove(key)

    def subscribe(self, callback: Callable[[OwnerKey], None]) -> None:
        self._subscribers.append(callback)

    def read_log(self, namespace: str, pod: str, follow: bool = False,
                 tail_bytes: int | None = None) -> Iterator[bytes]:
        data = self.logs.get((namespace, pod), b"")
        yield data[-tail_bytes:] if tail_bytes else data

    def read_log_range(self, namespace: str, pod: str, offset: int, max_bytes: int) -> bytes:
        return self.logs.get((namespace, pod), b"")[offset:offset + max_bytes]

    # --- playing the cluster -------------------------------------------------------------------------

    def set_job_condition(self, namespace: str, name: str, type_: str, reason: str = "", message: str = "") -> None:
        job = self.objects[("Job", namespace, name)]
        job.setdefault("status", {}).setdefault("conditions", []).append(
            {"type": type_, "status": "True", "reason": reason, "message": message})

    def add_pods(self, namespace: str, job_name: str, phase: str = "Running",
                 exit_codes: dict[int, int] | None = None, reason: dict[int, tuple[str, str]] | None = None) -> None:
        job = self.objects[("Job", namespace, job_name)]
        template = job["spec"]["template"]
        for index in range(job["spec"]["completions"]):
            status: dict[str, Any] = {"phase": phase, "conditions": []}
            if exit_codes and index in exit_codes:
                status["phase"] = "Succeeded" if exit_codes[index] == 0 else "Failed"
                status["containerStatuses"] = [{"name": "trainer", "state": {"terminated": {
                    "exitCode": exit_codes[index], "reason": "Error" if exit_codes[index] else "Completed"}}}]
            if reason and index in reason:
                status["phase"] = "Pending"
                status["conditions"].append({"type": "PodScheduled", "status": "False",
                                             "reason": reason[index][0], "message": reason[index][1]})
            # Unique and increasing, like a real runtime's: a gang restart's pods never take an old pod's name.
            self._pods_made += 1
            name = f"{job_name}-{index}-{self._pods_made}"
            created = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=self._pods_made)
            self.objects[("Pod", namespace, name)] = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created.isoformat(),
                             "labels": {**template["metadata"]["labels"], "batch.kubernetes.io/job-name": job_name},
                             "annotations": {"batch.kubernetes.io/job-completion-index": str(index)}},
                "spec": template["spec"], "status": status,
            }

    def notify(self, owner: OwnerKey) -> None:
        for callback in self._subscribers:
            callback(owner)
