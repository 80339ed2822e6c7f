"""LocalRuntime: a one-machine stand-in for a Kubernetes API server, its workload controllers and a node.

It stores native objects (ObjectFiles) and runs, as pure policies, the controllers the compiler's objects
need: Jobs (jobs.sync_job), Deployments (deployments.sync_deployment), StatefulSets
(statefulsets.sync_statefulset) and HorizontalPodAutoscalers (hpa.sync_hpa). It places pods against the
machine's capacity, and its Kubelet starts, probes, restarts and stops their processes. One background
thread does all of this in short ticks; API calls only change desired state and wake it. Everything it knows
is on disk, so a daemon restarted after a crash re-adopts running pods instead of starting them again.
"""

from __future__ import annotations

import copy
import logging
import random
import shutil
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from ..protocol import NativeObject, OwnerKey, PodMetrics
from .capacity import Allocation, Capacity, Request, explain
from .container import LOCAL_WORKDIR_ANNOTATION
from .deployments import NAME_ALPHABET, TEMPLATE_HASH, sync_deployment
from .hpa import HpaMemory, sync_hpa
from .jobs import COMPLETION_INDEX, TERMINAL, job_finished, sync_job
from .kubelet import DISRUPTED_ANNOTATION, Kubelet
from .lifecycle import Backoff
from .state import ObjectFiles
from .statefulsets import POD_NAME_LABEL, REVISION_LABEL, sync_statefulset
from .volumes import claim_dir

log = logging.getLogger(__name__)

NATIVE_KINDS = {"Job", "Service", "PersistentVolumeClaim", "Pod", "Deployment", "StatefulSet",
                "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "Ingress", "Secret"}
# Deleted at once: nothing of theirs has to stop first.
_REMOVED_AT_ONCE = {"Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "Ingress",
                    "Secret"}
TICK_SECONDS = 0.1
HPA_SYNC_SECONDS = 1.0  # Kubernetes: 15 s (--horizontal-pod-autoscaler-sync-period)

__all__ = ["DISRUPTED_ANNOTATION", "LOCAL_WORKDIR_ANNOTATION", "NATIVE_KINDS", "LocalRuntime"]


def _now() -> datetime:
    return datetime.now(timezone.utc)


class LocalRuntime:
    def __init__(self, root: Path, volumes: Path, logs: Path, capacity: Capacity | None = None,
                 clock: Callable[[], datetime] = _now, metrics: PodMetrics | None = None,
                 hpa_sync_seconds: float = HPA_SYNC_SECONDS, restart_backoff: Backoff | None = None,
                 service_urls: dict[str, str] | None = None):
        self._root = root
        self._volumes = volumes
        self._objects = ObjectFiles(root / "objects")
        self._capacity = capacity or Capacity.detect()
        self._clock = clock
        self._metrics = metrics
        self._hpa_sync_seconds = hpa_sync_seconds
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._draining = threading.Event()
        self._thread: threading.Thread | None = None
        self._subscribers: list[Callable[[OwnerKey], None]] = []
        self._pending: set[OwnerKey] = set()  # owners to notify of changes made outside the sync loop
        self._hpa_memory: dict[str, HpaMemory] = {}
        self._hpa_synced: dict[str, datetime] = {}
        self._kubelet = Kubelet(self._objects, root, volumes, logs, clock, restart_backoff or Backoff(),
                                bool(self._capacity.gpus), self._wake.set, service_urls)

    # --- Runtime protocol ----------------------------------------------------------------------------

    def apply(self, obj: NativeObject) -> NativeObject:
        kind = obj["kind"]
        if kind not in NATIVE_KINDS - {"Pod"}:
            raise ValueError(f"the local runtime cannot run {kind} objects")
        if kind == "StatefulSet" and obj.get("spec", {}).get("volumeClaimTemplates"):
            raise ValueError("the local runtime does not support volumeClaimTemplates: "
                             "mount a named PersistentVolumeClaim instead")
        with self._lock:
            meta = obj["metadata"]
            current = self._objects.get(kind, meta["namespace"], meta["name"])
            if current is not None and current["metadata"].get("deletionTimestamp"):
                raise ValueError(f"{kind} {meta['name']} is being deleted")
            merged = self._with_server_fields(copy.deepcopy({k: v for k, v in obj.items() if k != "status"}),
                                              current)
            if current is not None:
                if {k: v for k, v in current.items() if k != "status"} == merged:
                    return copy.deepcopy(current)
                merged["status"] = current.get("status", {})
            else:
                merged["status"] = {"phase": "Bound"} if kind == "PersistentVolumeClaim" else {}
            if kind == "PersistentVolumeClaim":
                claim_dir(self._volumes, meta["namespace"], meta["name"]).mkdir(parents=True, exist_ok=True)
            self._objects.save(merged)
        self._wake.set()
        return copy.deepcopy(merged)

    def get(self, kind: str, namespace: str, name: str) -> NativeObject | None:
        with self._lock:
            return copy.deepcopy(self._objects.get(kind, namespace, name))

    def list(self, kind: str, namespace: str, labels: dict[str, str] | None = None) -> list[NativeObject]:
        with self._lock:
            return [copy.deepcopy(o) for o in self._objects.all(kind) if o["metadata"]["namespace"] == namespace
                    and all(o["metadata"].get("labels", {}).get(k) == v for k, v in (labels or {}).items())]

    def delete(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            obj = self._objects.get(kind, namespace, name)
            if obj is None:
                return
            if kind == "PersistentVolumeClaim":
                self._objects.remove(kind, namespace, name)
                shutil.rmtree(claim_dir(self._volumes, namespace, name), ignore_errors=True)
            elif kind in _REMOVED_AT_ONCE:
                self._objects.remove(kind, namespace, name)
                self._hpa_memory.pop(obj["metadata"]["uid"], None)
                self._hpa_synced.pop(obj["metadata"]["uid"], None)
            elif kind == "Pod":
                self._kubelet.delete(obj)
                self._pending |= self._owners_of(obj)  # it stopped being ready: the gateway must hear now
            elif not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = self._clock().isoformat()
                self._objects.save(obj)
        self._wake.set()

    def subscribe(self, callback: Callable[[OwnerKey], None]) -> None:
        self._subscribers.append(callback)

    # --- LogReader capability ------------------------------------------------------------------------

    def log_path(self, namespace: str, pod: str) -> Path:
        return self._kubelet.log_path(namespace, pod)

    def read_log(self, namespace: str, pod: str, follow: bool = False,
                 tail_bytes: int | None = None) -> Iterator[bytes]:
        path = self.log_path(namespace, pod)
        if not path.exists():
            return
        with open(path, "rb") as fh:
            if tail_bytes is not None:
                fh.seek(max(0, path.stat().st_size - tail_bytes))
            while True:
                chunk = fh.read(65536)
                if chunk:
                    yield chunk
                    continue
                if not follow:
                    return
                current = self.get("Pod", namespace, pod)
                if current is None or current["status"]["phase"] in TERMINAL:
                    rest = fh.read()
                    if rest:
                        yield rest
                    return
                time.sleep(0.2)  # a file has no change notification that works everywhere

    def read_log_range(self, namespace: str, pod: str, offset: int, max_bytes: int) -> bytes:
        try:
            with open(self.log_path(namespace, pod), "rb") as fh:
                fh.seek(offset)
                return fh.read(max_bytes)
        except FileNotFoundError:
            return b""

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="local-runtime", daemon=True)
        self._thread.start()

    def stop(self, stop_pods: bool = False, timeout: float = 60.0) -> None:
        """Stop the sync loop; with stop_pods, terminate every running pod first (`shipyard down`).

        Pods stopped this way get the DisruptionTarget condition, so the Job's failure policy ignores them
        and the next start recreates them: a machine shutdown is not a workload failure."""
        if stop_pods:
            self._draining.set()  # from now on pods are only observed: none is created, started or restarted
            with self._lock:
                for pod in self._objects.all("Pod"):
                    self._kubelet.shut_down(pod)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                self.sync_once()
                with self._lock:
                    if all(p["status"]["phase"] in TERMINAL or not p["status"].get("pid")
                           for p in self._objects.all("Pod")):
                        break
                time.sleep(TICK_SECONDS)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._kubelet.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except Exception:  # noqa: BLE001 - one bad object must not stop every workload on the machine
                log.exception("local runtime sync failed")
            self._wake.wait(TICK_SECONDS)
            self._wake.clear()

    # --- the sync loop -------------------------------------------------------------------------------

    def sync_once(self) -> None:
        due = self._due_autoscalers()
        values = {uid: self._pod_metrics(*query) for uid, query in due.items()}  # outside the lock: see PodMetrics
        with self._lock:
            changed, self._pending = self._pending, set()
            draining = self._draining.is_set()
            self._kubelet.begin_tick()
            for pod in list(self._objects.all("Pod")):
                if self._kubelet.sync_pod(pod, draining):
                    changed |= self._owners_of(pod)
            self._kubelet.end_tick()
            if not draining:
                for hpa in list(self._objects.all("HorizontalPodAutoscaler")):
                    if hpa["metadata"]["uid"] in values:
                        changed |= self._sync_hpa(hpa, values[hpa["metadata"]["uid"]])
                for job in list(self._objects.all("Job")):
                    if self._sync_job(job):
                        changed |= self._owners_of(job)
                for deployment in list(self._objects.all("Deployment")):
                    if self._sync_deployment(deployment):
                        changed |= self._owners_of(deployment)
                for statefulset in list(self._objects.all("StatefulSet")):
                    if self._sync_statefulset(statefulset):
                        changed |= self._owners_of(statefulset)
                changed |= self._schedule()
        for key in changed:
            for callback in self._subscribers:
                callback(key)

    def _owned_pods(self, owner: dict[str, Any]) -> list[dict[str, Any]]:
        return [p for p in self._objects.all("Pod") if self._owned_by(p, owner)]

    def _sync_job(self, job: dict[str, Any]) -> bool:
        meta = job["metadata"]
        pods = self._owned_pods(job)
        if meta.get("deletionTimestamp"):
            return self._finish_deletion(job, pods)
        before = job.get("status", {})
        decision = sync_job(job, pods, self._clock())
        by_name = {p["metadata"]["name"]: p for p in pods}
        for name in decision.delete_pods:
            self._kubelet.delete(by_name[name])
        for index in decision.create_indexes:
            template = job["spec"]["template"]
            job_name = job["metadata"]["name"]
            self._create_pod(job, f"{job_name}-{index}-{uuid.uuid4().hex[:5]}",
                             {COMPLETION_INDEX: str(index), "batch.kubernetes.io/job-name": job_name,
                              "job-name": job_name},
                             {COMPLETION_INDEX: str(index)},
                             {**template["spec"], "hostname": f"{job_name}-{index}"})
        if decision.status != before or decision.delete_pods or decision.create_indexes:
            job["status"] = decision.status
            self._objects.save(job)
            return True
        return False

    def _finish_deletion(self, owner: dict[str, Any], pods: list[dict[str, Any]]) -> bool:
        """A deleted workload's pods stop gracefully; the workload itself goes once none is left."""
        for pod in pods:
            self._kubelet.delete(pod)
        if pods:
            return False
        self._objects.remove(owner["kind"], owner["metadata"]["namespace"], owner["metadata"]["name"])
        return True

    def _sync_deployment(self, deployment: dict[str, Any]) -> bool:
        meta = deployment["metadata"]
        pods = self._owned_pods(deployment)
        if meta.get("deletionTimestamp"):
            return self._finish_deletion(deployment, pods)
        before = deployment.get("status", {})
        decision = sync_deployment(deployment, pods, self._clock())
        by_name = {p["metadata"]["name"]: p for p in pods}
        for name in decision.delete_pods:
            self._kubelet.delete(by_name[name])
        template = deployment["spec"]["template"]
        for _ in range(decision.create):
            suffix = "".join(random.choice(NAME_ALPHABET) for _ in range(5))
            # The API server defaults a Deployment pod's restartPolicy to Always (the only value allowed).
            self._create_pod(deployment, f"{meta['name']}-{decision.template_hash}-{suffix}",
                             {TEMPLATE_HASH: decision.template_hash}, {},
                             {"restartPolicy": "Always", **copy.deepcopy(template["spec"])})
        if decision.status != before or decision.delete_pods or decision.create:
            deployment["status"] = decision.status
            self._objects.save(deployment)
            return True
        return False

    def _sync_statefulset(self, sts: dict[str, Any]) -> bool:
        meta, spec = sts["metadata"], sts["spec"]
        pods = self._owned_pods(sts)
        if meta.get("deletionTimestamp"):
            return self._finish_deletion(sts, pods)
        before = sts.get("status", {})
        decision = sync_statefulset(sts, pods, self._clock())
        by_name = {p["metadata"]["name"]: p for p in pods}
        for name in decision.delete_pods:
            self._kubelet.delete(by_name[name])
        created = False
        for ordinal in decision.create_ordinals:
            name = f"{meta['name']}-{ordinal}"
            # Pods are stored by name: never replace one, not even a terminating one (or another owner's).
            if self._objects.get("Pod", meta["namespace"], name) is not None:
                continue
            pod_spec = {"restartPolicy": "Always", **copy.deepcopy(spec["template"]["spec"]), "hostname": name}
            if spec.get("serviceName"):
                pod_spec["subdomain"] = spec["serviceName"]  # the pod's DNS name is <name>-N.<serviceName>
            self._create_pod(sts, name, {REVISION_LABEL: decision.revision, POD_NAME_LABEL: name}, {}, pod_spec)
            created = True
        if decision.status != before or decision.delete_pods or created:
            sts["status"] = decision.status
            self._objects.save(sts)
            return True
        return False

    def _create_pod(self, owner: dict[str, Any], name: str, labels: dict[str, str], annotations: dict[str, str],
                    spec: dict[str, Any]) -> None:
        template_meta = owner["spec"]["template"].get("metadata", {})
        self._objects.save({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": owner["metadata"]["namespace"], "uid": str(uuid.uuid4()),
                         "labels": {**template_meta.get("labels", {}), **labels},
                         "annotations": {**template_meta.get("annotations", {}), **annotations},
                         "creationTimestamp": self._clock().isoformat(),
                         "ownerReferences": [{"apiVersion": owner["apiVersion"], "kind": owner["kind"],
                                              "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
                                              "controller": True, "blockOwnerDeletion": True}]},
            "spec": spec,
            "status": {"phase": "Pending"},
        })

    # --- autoscaling ---------------------------------------------------------------------------------

    def _due_autoscalers(self) -> dict[str, tuple[str, list[str], list[str]]]:
        """HPAs whose sync period has passed: uid → (namespace, target's pod names, metric names)."""
        due: dict[str, tuple[str, list[str], list[str]]] = {}
        now = self._clock()
        with self._lock:
            if self._draining.is_set():
                return due
            for hpa in self._objects.all("HorizontalPodAutoscaler"):
                uid, ns = hpa["metadata"]["uid"], hpa["metadata"]["namespace"]
                last = self._hpa_synced.get(uid)
                if last is not None and (now - last).total_seconds() < self._hpa_sync_seconds:
                    continue
                self._hpa_synced[uid] = now
                target = self._hpa_target(hpa)
                pods = [p["metadata"]["name"] for p in self._owned_pods(target)] if target else []
                metrics = [m["pods"]["metric"]["name"] for m in hpa["spec"].get("metrics", [])
                           if m.get("type") == "Pods" and "pods" in m]
                due[uid] = (ns, pods, metrics)
        return due

    def _pod_metrics(self, namespace: str, pods: list[str], metrics: list[str]) -> dict[tuple[str, str], float] | None:
        if self._metrics is None:
            return None
        values: dict[tuple[str, str], float] = {}
        for pod in pods:
            for metric in metrics:
                try:
                    value = self._metrics.pod_metric(namespace, pod, metric)
                except Exception:  # noqa: BLE001 - a broken metrics source is a missing sample, not a dead loop
                    log.exception("pod metric %s of %s/%s", metric, namespace, pod)
                    value = None
                if value is not None:
                    values[(pod, metric)] = float(value)
        return values

    def _hpa_target(self, hpa: dict[str, Any]) -> dict[str, Any] | None:
        ref = hpa["spec"].get("scaleTargetRef", {})
        if ref.get("kind") != "Deployment":
            return None
        target = self._objects.get("Deployment", hpa["metadata"]["namespace"], ref.get("name", ""))
        return None if target is None or target["metadata"].get("deletionTimestamp") else target

    def _sync_hpa(self, hpa: dict[str, Any], values: dict[tuple[str, str], float] | None) -> set[OwnerKey]:
        changed: set[OwnerKey] = set()
        target = self._hpa_target(hpa)
        pods = self._owned_pods(target) if target else []
        memory = self._hpa_memory.setdefault(hpa["metadata"]["uid"], HpaMemory())
        decision = sync_hpa(hpa, target, pods, values, memory, self._clock())
        if decision.replicas is not None and target is not None:
            # What the scale subresource does: spec.replicas changes, so the generation moves.
            target["spec"]["replicas"] = decision.replicas
            target["metadata"]["generation"] = target["metadata"].get("generation", 1) + 1
            self._objects.save(target)
            changed |= self._owners_of(target)
        if decision.status != hpa.get("status"):
            hpa["status"] = decision.status
            self._objects.save(hpa)
            changed |= self._owners_of(hpa)
        return changed

    # --- placement -----------------------------------------------------------------------------------

    def _schedule(self) -> set[OwnerKey]:
        """Place pending pods, oldest first: a Job's pods as one gang (all together or none), others one by one."""
        changed: set[OwnerKey] = set()
        pending = [p for p in self._objects.all("Pod")
                   if p["status"]["phase"] == "Pending" and not p["metadata"].get("deletionTimestamp")]
        if not pending:
            return changed
        running = [(Request.of_pod(p), p["status"].get("gpus", [])) for p in self._objects.all("Pod")
                   if p["status"]["phase"] == "Running"]
        free = Allocation.free(self._capacity, running)
        gangs: dict[str, list[dict[str, Any]]] = {}
        for pod in sorted(pending, key=lambda p: p["metadata"]["creationTimestamp"]):
            owner = pod["metadata"]["ownerReferences"][0]
            gangs.setdefault(owner["uid"] if owner["kind"] == "Job" else pod["metadata"]["uid"], []).append(pod)
        for gang in gangs.values():
            requests = [Request.of_pod(p) for p in gang]
            trial = Allocation(free.cpu, free.memory, list(free.free_gpus))
            placements = [trial.take(r) for r in requests]
            if any(p is None for p in placements):
                message = explain(requests, self._capacity, free)
                for pod in gang:
                    if self._set_unschedulable(pod, message):
                        changed |= self._owners_of(pod)
                continue
            free = trial
            self._kubelet.start_gang(gang, [p or [] for p in placements])
            for pod in gang:
                changed |= self._owners_of(pod)
        return changed

    def _set_unschedulable(self, pod: dict[str, Any], message: str) -> bool:
        cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
        current = [c for c in pod["status"].get("conditions", []) if c["type"] == "PodScheduled"]
        if current and {k: current[0].get(k) for k in cond} == cond:
            return False
        pod["status"]["conditions"] = [c for c in pod["status"].get("conditions", []) if c["type"] != "PodScheduled"]
        pod["status"]["conditions"].append({**cond, "lastTransitionTime": self._clock().isoformat()})
        self._objects.save(pod)
        return True

    # --- helpers -------------------------------------------------------------------------------------

    @staticmethod
    def _owned_by(child: dict[str, Any], owner: dict[str, Any]) -> bool:
        return any(r.get("uid") == owner["metadata"].get("uid") for r in child["metadata"].get("ownerReferences", []))

    def _owners_of(self, obj: dict[str, Any]) -> set[OwnerKey]:
        """The Shipyard resource(s) that own this object, following ownerReferences through native kinds."""
        out: set[OwnerKey] = set()
        for ref in obj["metadata"].get("ownerReferences", []):
            if ref["kind"] in NATIVE_KINDS:
                parent = self._objects.get(ref["kind"], obj["metadata"]["namespace"], ref["name"])
                if parent is not None:
                    out |= self._owners_of(parent)
            else:
                out.add(OwnerKey(ref["kind"], obj["metadata"]["namespace"], ref["name"]))
        return out

    def _with_server_fields(self, desired: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
        """What the API server adds: uid, creationTimestamp, generation (moved by spec changes only), and for a
        Deployment applied without replicas the current count (an HPA owns it), 1 on create."""
        meta = desired["metadata"]
        meta["uid"] = current["metadata"]["uid"] if current else str(uuid.uuid4())
        meta["creationTimestamp"] = current["metadata"]["creationTimestamp"] if current else self._clock().isoformat()
        if desired["kind"] == "Deployment" and "replicas" not in desired.get("spec", {}):
            desired.setdefault("spec", {})["replicas"] = int(current["spec"].get("replicas", 1)) if current else 1
        generation = int(current["metadata"].get("generation", 1)) if current else 0
        if current is None or current.get("spec") != desired.get("spec"):
            generation += 1
        meta["generation"] = generation
        return desired

    def job_is_finished(self, namespace: str, name: str) -> bool:
        job = self.get("Job", namespace, name)
        return job is not None and job_finished(job)
