"""LocalRuntime: a one-machine stand-in for a Kubernetes API server, its workload controllers and a node.

It stores native objects (ObjectFiles) and runs, as pure policies, the controllers the compiler's objects
need: Jobs (jobs.sync_job), Deployments (deployments.sync_deployment), StatefulSets
(statefulsets.sync_statefulset) and HorizontalPodAutoscalers (hpa.sync_hpa). It places pods against the
machine's capacity, and its Kubelet starts, probes, restarts and stops their processes. One background
thread does all of this in short ticks; API calls only change desired state and wake it. Everything it knows
is on disk, so a daemon restarted after a crash re-adopts running pods instead of starting them again.

What waits costs nothing per tick (a project may hold thousands of Jobs whose gangs do not fit): a workload
is synced when it or its pods changed, while it has a running pod (readiness, minReadySeconds and deadlines
move with time) or is being deleted; pending pods are placed again only when capacity or the set of pending
pods changed, as kube-scheduler retries unschedulable pods on cluster events. A full pass every
FULL_SYNC_SECONDS is the safety net, and with nothing running the loop ticks slower (an API call wakes it).
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
from . import cgroups as cgroups_, podlog
from .capacity import Allocation, Capacity, Request, explain
from .container import LOCAL_WORKDIR_ANNOTATION
from .deployments import NAME_ALPHABET, TEMPLATE_HASH, sync_deployment
from .hpa import HpaMemory, sync_hpa
from .jobs import COMPLETION_INDEX, TERMINAL, job_finished, sync_job
from .kubelet import DISRUPTED_ANNOTATION, Kubelet
from .lifecycle import Backoff
from .secretvolumes import SecretVolumes
from .state import ObjectFiles
from .statefulsets import POD_NAME_LABEL, REVISION_LABEL, sync_statefulset
from .volumes import claim_dir

log = logging.getLogger(__name__)

NATIVE_KINDS = {"Job", "Service", "PersistentVolumeClaim", "Pod", "Deployment", "StatefulSet",
                "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "Ingress", "Secret",
                "LimitRange", "ResourceQuota"}
# Deleted at once: nothing of theirs has to stop first. A ResourceQuota is kept, not enforced: admitting pods
# within a project's quota is the scheduler's.
_REMOVED_AT_ONCE = {"Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "Ingress",
                    "Secret", "LimitRange", "ResourceQuota"}
TICK_SECONDS = 0.1
IDLE_TICK_SECONDS = 1.0  # no pod running, nothing to finish: only time-free waits, which events end
FULL_SYNC_SECONDS = 60.0
HPA_SYNC_SECONDS = 1.0  # Kubernetes: 15 s (--horizontal-pod-autoscaler-sync-period)

__all__ = ["DISRUPTED_ANNOTATION", "LOCAL_WORKDIR_ANNOTATION", "NATIVE_KINDS", "LocalRuntime"]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _state_of(obj: dict[str, Any]) -> str | None:
    """What the sync loop looks objects up by (ObjectFiles indexes it on every save). Pods: Terminating, or
    their phase, with a pending pod already tried and found not to fit as Unschedulable. Workloads:
    Terminating, or Timed when their sync may decide differently later with nothing else changing (a Job
    with a deadline); None for the rest, which only events move."""
    meta, status = obj["metadata"], obj.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "Terminating"
    if obj["kind"] == "Pod":
        phase = status.get("phase") or "Pending"
        if phase == "Pending" and any(c.get("type") == "PodScheduled" for c in status.get("conditions", [])):
            return "Unschedulable"
        return str(phase)
    spec = obj.get("spec") or {}
    if (obj["kind"] == "Job" and spec.get("activeDeadlineSeconds") and not spec.get("suspend")
            and not job_finished(obj)):
        return "Timed"
    return None


class LocalRuntime:
    # No Namespace objects: a project's directories are made when its first object needs them.
    IMPLICIT_NAMESPACES = True

    def __init__(self, root: Path, volumes: Path, logs: Path, capacity: Capacity | None = None,
                 clock: Callable[[], datetime] = _now, metrics: PodMetrics | None = None,
                 hpa_sync_seconds: float = HPA_SYNC_SECONDS, restart_backoff: Backoff | None = None,
                 service_urls: dict[str, str] | None = None,
                 log_limits: tuple[int, int] = (podlog.DEFAULT_MAX_BYTES, podlog.DEFAULT_MAX_FILES),
                 secret_volumes: Path | None = None,
                 cgroups: cgroups_.Cgroups | None = None):
        self._root = root
        self._volumes = volumes
        self._objects = ObjectFiles(root / "objects", _state_of)
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
        self._dirty: set[str] = set()  # uids of workloads to sync on the next tick (changed, or their pods did)
        self._place = True  # whether placement may decide differently than last time
        self._freed = True  # whether capacity may have been freed since (else only new pods need trying)
        self._full_sync_at = 0.0  # monotonic time of the next full pass
        self._busy = True  # whether the last tick had running or finishing work (then tick fast)
        self._hpa_memory: dict[str, HpaMemory] = {}
        self._hpa_synced: dict[str, datetime] = {}
        self._kubelet = Kubelet(self._objects, root, volumes, logs, clock, restart_backoff or Backoff(),
                                bool(self._capacity.gpus), self._wake.set, service_urls, log_limits,
                                SecretVolumes(root, secret_volumes))
        # Pods' limits: detected once (cgroups.py); what is in force is logged at start and shown by `shipyard up`.
        self.cgroups = cgroups if cgroups is not None else cgroups_.detect(root)
        self._kubelet.pod_cgroups = self.cgroups

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
            self._dirty.add(merged["metadata"]["uid"])
        self._wake.set()
        return copy.deepcopy(merged)

    def get(self, kind: str, namespace: str, name: str) -> NativeObject | None:
        with self._lock:
            return copy.deepcopy(self._objects.get(kind, namespace, name))

    def list(self, kind: str, namespace: str, labels: dict[str, str] | None = None) -> list[NativeObject]:
        with self._lock:
            return [copy.deepcopy(o) for o in self._objects.select(kind, namespace, labels)]

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
                self._kubelet.logs_changed = True
                self._hpa_memory.pop(obj["metadata"]["uid"], None)
                self._hpa_synced.pop(obj["metadata"]["uid"], None)
            elif kind == "Pod":
                self._kubelet.delete(obj)
                self._pending |= self._owners_of(obj)  # it stopped being ready: the gateway must hear now
                self._dirty |= {r.get("uid") for r in obj["metadata"].get("ownerReferences", [])}
                self._place = self._freed = True
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
        start = 0
        if tail_bytes is not None:
            segs = podlog.segments(path)
            start = max(segs[0][0] if segs else 0, podlog.end_offset(path) - tail_bytes)
        if not follow:
            return podlog.iter_range(path, start)
        return (chunk for chunk in podlog.follow(path, start, lambda: self._pod_running(namespace, pod)) if chunk)

    def read_log_range(self, namespace: str, pod: str, offset: int, max_bytes: int) -> bytes:
        return podlog.read_range(self.log_path(namespace, pod), offset, max_bytes)

    def pod_log(self, namespace: str, pod: str, previous: bool = False, follow: bool = False,
                tail_lines: int | None = None, since_seconds: float | None = None) -> Iterator[bytes]:
        """A pod's log as the pod log API serves it (`previous`, `sinceSeconds`, `tailLines`, `follow`); the
        pod may be gone while its owner keeps its logs. Idle follows yield b"" every fraction of a second."""
        path = self.log_path(namespace, pod)
        if previous:
            path = podlog.previous_path(path)
        segs = podlog.segments(path)
        start = segs[0][0] if segs else 0
        if since_seconds is not None:
            start = max(start, podlog.offset_since(path, time.time() - since_seconds))
        if tail_lines is not None:
            start = max(start, podlog.tail_offset(path, tail_lines))
        if not follow or previous:
            return podlog.iter_range(path, start)
        attempt = self._attempt(namespace, pod)
        # Following ends with the attempt, as `kubectl logs -f` ends when its container does.
        return podlog.follow(path, start, lambda: self._pod_running(namespace, pod)
                             and self._attempt(namespace, pod) == attempt)

    def has_previous_log(self, namespace: str, pod: str) -> bool:
        return bool(podlog.segments(podlog.previous_path(self.log_path(namespace, pod))))

    def departed_pods(self, namespace: str) -> list[dict[str, Any]]:
        """Pods that are gone but whose logs their owners keep: metadata only (name, uid, labels, annotations,
        creationTimestamp, owners)."""
        with self._lock:
            return self._kubelet.departed_logs(namespace)

    def _attempt(self, namespace: str, pod: str) -> int:
        current = self.get("Pod", namespace, pod) or {}
        return int((current.get("status", {}).get("containerStatuses") or [{}])[0].get("restartCount", 0))

    def _pod_running(self, namespace: str, pod: str) -> bool:
        current = self.get("Pod", namespace, pod)
        return current is not None and current["status"]["phase"] not in TERMINAL

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:  # secret files of pods that stopped while no daemon ran (secretvolumes.py)
            self._kubelet.secret_volumes.remove_stale(
                {p["metadata"]["uid"] for p in self._objects.all("Pod") if p["status"].get("phase") not in TERMINAL})
            # The same for cgroups: a running pod re-adopted keeps its own.
            self.cgroups.remove_stale({p["metadata"]["uid"] for p in self._objects.all("Pod")
                                       if p["status"].get("phase") == "Running" and p["status"].get("pid")})
        (log.warning if self.cgroups.version == "none" else log.info)("pod limits: %s", self.cgroups.describe())
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
        with self._lock:
            self.cgroups.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except Exception:  # noqa: BLE001 - one bad object must not stop every workload on the machine
                log.exception("local runtime sync failed")
            self._wake.wait(TICK_SECONDS if self._busy else IDLE_TICK_SECONDS)
            self._wake.clear()

    # --- the sync loop -------------------------------------------------------------------------------

    def sync_once(self) -> None:
        due = self._due_autoscalers()
        values = {uid: self._pod_metrics(*query) for uid, query in due.items()}  # outside the lock: see PodMetrics
        with self._lock:
            changed, self._pending = self._pending, set()
            dirty, self._dirty = self._dirty, set()
            full = time.monotonic() >= self._full_sync_at
            if full:
                self._full_sync_at = time.monotonic() + FULL_SYNC_SECONDS
                self._place = self._freed = True
            draining = self._draining.is_set()
            self._kubelet.begin_tick()
            # Only a pod with a process (or waiting to restart one) or being deleted has anything to do.
            for pod in self._objects.in_state("Pod", "Running") + self._objects.in_state("Pod", "Terminating"):
                if self._kubelet.sync_pod(pod, draining):
                    changed |= self._owners_of(pod)
                    dirty |= {r.get("uid") for r in pod["metadata"].get("ownerReferences", [])}
                    self._place = self._freed = True  # a pod finished, restarted or went: what is free changed
            self._kubelet.end_tick()
            if self._kubelet.logs_due():  # a pod or an owner went: its logs may go with it
                self._kubelet.collect_logs(sorted(NATIVE_KINDS - {"Pod"}))
            running = {r.get("uid") for p in self._objects.in_state("Pod", "Running")
                       for r in p["metadata"].get("ownerReferences", [])}
            self._busy = bool(running) or draining
            if not draining:
                for hpa in list(self._objects.all("HorizontalPodAutoscaler")):
                    if hpa["metadata"]["uid"] in values:
                        changed |= self._sync_hpa(hpa, values[hpa["metadata"]["uid"]], dirty)
                for kind, sync in (("Job", self._sync_job), ("Deployment", self._sync_deployment),
                                   ("StatefulSet", self._sync_statefulset)):
                    for owner in self._owners_to_sync(kind, full, dirty | running):
                        uid = owner["metadata"]["uid"]
                        self._busy = self._busy or bool(owner["metadata"].get("deletionTimestamp"))
                        if sync(owner, self._objects.owned(uid, "Pod")):
                            changed |= self._owners_of(owner)
                            # What it did (pods deleted or created) may call for more: look again next tick,
                            # until a sync changes nothing.
                            self._dirty.add(uid)
                            self._busy = self._place = True
                if self._place:
                    changed |= self._schedule(retry=self._freed)
                    self._place = self._freed = False
        for key in changed:
            for callback in self._subscribers:
                callback(key)

    def _owners_to_sync(self, kind: str, full: bool, uids: set[str]) -> list[dict[str, Any]]:
        """The workloads of a kind whose sync may decide something now: on a full pass all of them, else those
        that changed or whose pods did, those with a running pod (`uids`), and those that move with time
        (being deleted, or a Job with a deadline): found through the indexes, never by walking every one."""
        if full:
            return list(self._objects.all(kind))
        found = {o["metadata"]["uid"]: o for o in self._objects.in_state(kind, "Terminating")
                 + self._objects.in_state(kind, "Timed")}
        for uid in uids:
            owner = self._objects.by_uid(uid)
            if owner is not None and owner["kind"] == kind:
                found[uid] = owner
        return sorted(found.values(), key=lambda o: (o["metadata"].get("creationTimestamp", ""),
                                                     o["metadata"]["namespace"], o["metadata"]["name"]))

    def _owned_pods(self, owner: dict[str, Any]) -> list[dict[str, Any]]:
        return self._objects.owned(owner["metadata"]["uid"], "Pod")

    def _sync_job(self, job: dict[str, Any], pods: list[dict[str, Any]]) -> bool:
        meta = job["metadata"]
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
        self._kubelet.logs_changed = True  # its pods' logs may have been kept for it alone
        return True

    def _sync_deployment(self, deployment: dict[str, Any], pods: list[dict[str, Any]]) -> bool:
        meta = deployment["metadata"]
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

    def _sync_statefulset(self, sts: dict[str, Any], pods: list[dict[str, Any]]) -> bool:
        meta, spec = sts["metadata"], sts["spec"]
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
        self._place = True

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

    def _sync_hpa(self, hpa: dict[str, Any], values: dict[tuple[str, str], float] | None,
                  dirty: set[str]) -> set[OwnerKey]:
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
            dirty.add(target["metadata"]["uid"])
            changed |= self._owners_of(target)
        if decision.status != hpa.get("status"):
            hpa["status"] = decision.status
            self._objects.save(hpa)
            changed |= self._owners_of(hpa)
        return changed

    # --- placement -----------------------------------------------------------------------------------

    def _schedule(self, retry: bool = True) -> set[OwnerKey]:
        """Place pending pods, oldest first: a Job's pods as one gang (all together or none), others one by one.
        Without `retry` (nothing freed since the last try), pods already found Unschedulable are skipped: they
        still do not fit, and trying thousands of them again for each new pod made creating them quadratic."""
        changed: set[OwnerKey] = set()
        pending = self._objects.in_state("Pod", "Pending")
        if retry:
            pending += self._objects.in_state("Pod", "Unschedulable")
        if not pending:
            return changed
        running = [(Request.of_pod(p), p["status"].get("gpus", [])) for p in self._objects.in_state("Pod", "Running")]
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
                        self._dirty |= {r.get("uid") for r in pod["metadata"]["ownerReferences"]}
                continue
            free = trial
            self._kubelet.start_gang(gang, [p or [] for p in placements])
            for pod in gang:
                changed |= self._owners_of(pod)
                self._dirty |= {r.get("uid") for r in pod["metadata"]["ownerReferences"]}
            self._busy = True
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
