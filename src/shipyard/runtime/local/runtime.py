"""LocalRuntime: a one-machine stand-in for a Kubernetes node plus the Job controller.

It stores native objects (ObjectFiles), turns Jobs into pods (jobs.sync_job), places pods whole-gang against
the machine's capacity, starts each pod's processes under a shim, and reports status back. One background
thread does all of this in short ticks; API calls only change desired state and wake it. Everything it
knows is on disk, so a daemon restarted after a crash re-adopts running pods instead of starting them again.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from ..protocol import NativeObject, OwnerKey
from . import processes
from .capacity import Allocation, Capacity, Request, explain
from .jobs import COMPLETION_INDEX, TERMINAL, job_finished, sync_job
from .network import PodAddress, free_port, resolve_env, _qualified
from .state import ObjectFiles
from .volumes import claim_dir, mount_map, substitute

log = logging.getLogger(__name__)

NATIVE_KINDS = {"Job", "Service", "PersistentVolumeClaim", "Pod"}
LOCAL_WORKDIR_ANNOTATION = "shipyard.dev/local-workdir"
DISRUPTED_ANNOTATION = "shipyard.dev/disrupted"
TICK_SECONDS = 0.1
KILL_AFTER_GRACE_SECONDS = 5.0
# The daemon's own secrets never reach workloads.
_SCRUBBED_ENV = ("SHIPYARD_TOKEN",)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class LocalRuntime:
    def __init__(self, root: Path, volumes: Path, logs: Path, capacity: Capacity | None = None,
                 clock: Callable[[], datetime] = _now):
        self._root = root
        self._volumes = volumes
        self._logs = logs
        self._objects = ObjectFiles(root / "objects")
        self._capacity = capacity or Capacity.detect()
        self._clock = clock
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._draining = threading.Event()
        self._thread: threading.Thread | None = None
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._subscribers: list[Callable[[OwnerKey], None]] = []
        self._reserved_ports: set[int] = {
            port for pod in self._objects.all("Pod") for port in pod["status"].get("hostPorts", {}).values()}

    # --- Runtime protocol ----------------------------------------------------------------------------

    def apply(self, obj: NativeObject) -> NativeObject:
        kind = obj["kind"]
        if kind not in NATIVE_KINDS - {"Pod"}:
            raise ValueError(f"the local runtime cannot run {kind} objects")
        with self._lock:
            meta = obj["metadata"]
            current = self._objects.get(kind, meta["namespace"], meta["name"])
            if current is not None and current["metadata"].get("deletionTimestamp"):
                raise ValueError(f"{kind} {meta['name']} is being deleted")
            desired = {k: v for k, v in obj.items() if k != "status"}
            if current is not None:
                if {k: v for k, v in current.items() if k not in ("status",)} == self._with_server_fields(desired, current):
                    return current
                merged = self._with_server_fields(desired, current)
                merged["status"] = current.get("status", {})
            else:
                merged = self._with_server_fields(desired, None)
                merged["status"] = self._initial_status(kind)
            if kind == "PersistentVolumeClaim":
                claim_dir(self._volumes, meta["namespace"], meta["name"]).mkdir(parents=True, exist_ok=True)
            self._objects.save(merged)
        self._wake.set()
        return merged

    def get(self, kind: str, namespace: str, name: str) -> NativeObject | None:
        with self._lock:
            return self._objects.get(kind, namespace, name)

    def list(self, kind: str, namespace: str, labels: dict[str, str] | None = None) -> list[NativeObject]:
        with self._lock:
            return [o for o in self._objects.all(kind) if o["metadata"]["namespace"] == namespace
                    and all(o["metadata"].get("labels", {}).get(k) == v for k, v in (labels or {}).items())]

    def delete(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            obj = self._objects.get(kind, namespace, name)
            if obj is None:
                return
            if kind == "PersistentVolumeClaim":
                self._objects.remove(kind, namespace, name)
                shutil.rmtree(claim_dir(self._volumes, namespace, name), ignore_errors=True)
            elif kind == "Service":
                self._objects.remove(kind, namespace, name)
            elif not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = self._clock().isoformat()
                self._objects.save(obj)
        self._wake.set()

    def subscribe(self, callback: Callable[[OwnerKey], None]) -> None:
        self._subscribers.append(callback)

    # --- LogReader capability ------------------------------------------------------------------------

    def log_path(self, namespace: str, pod: str) -> Path:
        return self._logs / namespace / f"{pod}.log"

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

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="local-runtime", daemon=True)
        self._thread.start()

    def stop(self, stop_pods: bool = False, timeout: float = 60.0) -> None:
        """Stop the sync loop; with stop_pods, terminate every running pod first (`shipyard down`).

        Pods stopped this way get the DisruptionTarget condition, so the Job's failure policy ignores them
        and the next start recreates them: a machine shutdown is not a workload failure."""
        if stop_pods:
            self._draining.set()  # from now on pods are only observed: none is created or started
            with self._lock:
                for pod in self._objects.all("Pod"):
                    if pod["status"]["phase"] not in TERMINAL:
                        pod["metadata"].setdefault("annotations", {})[DISRUPTED_ANNOTATION] = "shutdown"
                        self._terminate_pod(pod)
                        self._objects.save(pod)
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
        changed: set[OwnerKey] = set()
        with self._lock:
            self._reap_children()
            for pod in list(self._objects.all("Pod")):
                if self._observe_pod(pod):
                    changed |= self._owners_of(pod)
            if not self._draining.is_set():
                for job in list(self._objects.all("Job")):
                    if self._sync_job(job):
                        changed |= self._owners_of(job)
                changed |= self._schedule()
        for key in changed:
            for callback in self._subscribers:
                callback(key)

    def _reap_children(self) -> None:
        for pid, child in list(self._children.items()):
            if child.poll() is not None:
                del self._children[pid]

    def _observe_pod(self, pod: dict[str, Any]) -> bool:
        """Update a pod from its processes; remove it once deleted and stopped. True if anything changed."""
        status = pod["status"]
        meta = pod["metadata"]
        if status["phase"] == "Running":
            result = processes.probe(self._pod_dir(pod), status["pid"], status.get("pidStartTicks"))
            if result.state == "running":
                if meta.get("deletionTimestamp") and self._grace_expired(pod):
                    processes.kill_pod(meta["uid"], status["pid"], status.get("pidStartTicks"))
                return False
            terminated = dict(result.exit or {"exitCode": 137, "reason": "Lost",
                                              "message": "the pod's supervisor died without reporting an exit code"})
            if result.state == "lost":
                processes.kill_pod(meta["uid"], None, None)  # nothing of a lost pod may keep running
            self._finish_pod(pod, terminated)
            self._objects.save(pod)
            return True
        if meta.get("deletionTimestamp") and (status["phase"] in TERMINAL or status["phase"] == "Pending"):
            self._objects.remove("Pod", meta["namespace"], meta["name"])
            shutil.rmtree(self._pod_dir(pod), ignore_errors=True)
            for port in status.get("hostPorts", {}).values():
                self._reserved_ports.discard(port)
            return True
        return False

    def _finish_pod(self, pod: dict[str, Any], terminated: dict[str, Any]) -> None:
        status = pod["status"]
        code = int(terminated.get("exitCode", 137))
        disrupted = pod["metadata"].get("annotations", {}).get(DISRUPTED_ANNOTATION)
        status["phase"] = "Succeeded" if code == 0 and not disrupted else "Failed"
        if disrupted:
            status.setdefault("conditions", []).append({
                "type": "DisruptionTarget", "status": "True", "reason": "TerminationByShipyard",
                "message": f"pod stopped by the local runtime ({disrupted})",
                "lastTransitionTime": self._clock().isoformat()})
        finished = datetime.fromtimestamp(float(terminated.get("finishedAt", time.time())), timezone.utc)
        status["containerStatuses"] = [{
            "name": pod["spec"]["containers"][0]["name"], "ready": False, "restartCount": 0,
            "state": {"terminated": {
                "exitCode": code, "reason": terminated.get("reason", "Error"),
                "message": terminated.get("message", ""), "startedAt": status.get("startTime"),
                "finishedAt": finished.isoformat()}}}]
        if terminated.get("reason") == "StartError":
            status["message"] = terminated.get("message", "")

    def _grace_expired(self, pod: dict[str, Any]) -> bool:
        deleted = datetime.fromisoformat(pod["metadata"]["deletionTimestamp"])
        grace = float(pod["spec"].get("terminationGracePeriodSeconds", 30))
        return (self._clock() - deleted).total_seconds() > grace + KILL_AFTER_GRACE_SECONDS

    def _sync_job(self, job: dict[str, Any]) -> bool:
        meta = job["metadata"]
        pods = [p for p in self._objects.all("Pod") if self._owned_by(p, job)]
        if meta.get("deletionTimestamp"):
            for pod in pods:
                self._delete_pod(pod)
            if not pods:
                self._objects.remove("Job", meta["namespace"], meta["name"])
                return True
            return False
        before = job.get("status", {})
        decision = sync_job(job, pods, self._clock())
        by_name = {p["metadata"]["name"]: p for p in pods}
        for name in decision.delete_pods:
            self._delete_pod(by_name[name])
        for index in decision.create_indexes:
            self._create_pod(job, index)
        if decision.status != before or decision.delete_pods or decision.create_indexes:
            job["status"] = decision.status
            self._objects.save(job)
            return True
        return False

    def _create_pod(self, job: dict[str, Any], index: int) -> None:
        template = job["spec"]["template"]
        name = f"{job['metadata']['name']}-{index}-{uuid.uuid4().hex[:5]}"
        annotations = {**template.get("metadata", {}).get("annotations", {}), COMPLETION_INDEX: str(index)}
        labels = {**template.get("metadata", {}).get("labels", {}), COMPLETION_INDEX: str(index),
                  "batch.kubernetes.io/job-name": job["metadata"]["name"],
                  "job-name": job["metadata"]["name"]}
        spec = dict(template["spec"])
        spec["hostname"] = f"{job['metadata']['name']}-{index}"
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": job["metadata"]["namespace"], "uid": str(uuid.uuid4()),
                         "labels": labels, "annotations": annotations,
                         "creationTimestamp": self._clock().isoformat(),
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "controller": True,
                                              "name": job["metadata"]["name"], "uid": job["metadata"]["uid"]}]},
            "spec": spec,
            "status": {"phase": "Pending"},
        }
        self._objects.save(pod)

    def _delete_pod(self, pod: dict[str, Any]) -> None:
        if pod["metadata"].get("deletionTimestamp"):
            return
        pod["metadata"]["deletionTimestamp"] = self._clock().isoformat()
        self._terminate_pod(pod)
        self._objects.save(pod)

    def _terminate_pod(self, pod: dict[str, Any]) -> None:
        status = pod["status"]
        if status["phase"] == "Running":
            processes.terminate(status["pid"], status.get("pidStartTicks"))

    # --- placement and start -------------------------------------------------------------------------

    def _schedule(self) -> set[OwnerKey]:
        """Place pending pods gang by gang (all pods of a Job waiting together), oldest first."""
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
            gangs.setdefault(pod["metadata"]["ownerReferences"][0]["uid"], []).append(pod)
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
            self._start_gang(gang, [p or [] for p in placements])
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

    def _start_gang(self, gang: list[dict[str, Any]], gpus: list[list[str]]) -> None:
        for pod in gang:
            ports = {}
            for container in pod["spec"]["containers"]:
                for port in container.get("ports", []):
                    ports[str(port["containerPort"])] = free_port(self._reserved_ports)
            pod["status"]["hostPorts"] = ports
        peers = [self._address(p) for p in self._objects.all("Pod")
                 if p["metadata"]["namespace"] == gang[0]["metadata"]["namespace"] and p["status"].get("hostPorts")
                 and not p["metadata"].get("deletionTimestamp")]
        services = {name for svc in self._objects.all("Service")
                    if svc["metadata"]["namespace"] == gang[0]["metadata"]["namespace"]
                    for name in _qualified(svc["metadata"]["name"], svc["metadata"]["namespace"])}
        for pod, pod_gpus in zip(gang, gpus):
            self._start_pod(pod, pod_gpus, peers, services)

    @staticmethod
    def _address(pod: dict[str, Any]) -> PodAddress:
        return PodAddress(pod["metadata"]["namespace"], pod["spec"].get("hostname", pod["metadata"]["name"]),
                          pod["spec"].get("subdomain"),
                          {int(k): v for k, v in pod["status"].get("hostPorts", {}).items()})

    def _start_pod(self, pod: dict[str, Any], gpus: list[str], peers: list[PodAddress], services: set[str]) -> None:
        meta, status = pod["metadata"], pod["status"]
        container = pod["spec"]["containers"][0]
        pod_dir = self._pod_dir(pod)
        now = self._clock().isoformat()
        status["conditions"] = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now}]
        status["gpus"] = gpus
        try:
            mounts = mount_map(pod, container, self._volumes, pod_dir)
            env = resolve_env(pod, container, self._address(pod), peers, services)
            env = {k: substitute(v, mounts) for k, v in env.items()}
            argv = [substitute(a, mounts) for a in container.get("command", []) + container.get("args", [])]
            if not argv:
                raise ValueError("the local runtime needs an explicit command (there is no image entrypoint)")
        except (ValueError, OSError) as exc:
            self._finish_pod(pod, {"exitCode": 128, "reason": "StartError", "message": str(exc)})
            self._objects.save(pod)
            return
        process_env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        bin_dir = str(Path(sys.executable).parent)
        process_env["PATH"] = bin_dir + os.pathsep + process_env.get("PATH", "")
        process_env.update(env)
        process_env.update({"HOSTNAME": pod["spec"]["hostname"], "SHIPYARD_POD_NAME": meta["name"],
                            processes.POD_UID_ENV: meta["uid"]})
        for mount_path, path in mounts.items():
            name = next((m["name"] for m in container.get("volumeMounts", []) if m["mountPath"] == mount_path), "")
            process_env[f"SHIPYARD_VOLUME_{name.upper().replace('-', '_')}"] = str(path)
        if self._capacity.gpus:
            process_env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        cwd = self._working_dir(pod, container, mounts)
        child = processes.launch(pod_dir, argv, process_env, cwd, self.log_path(meta["namespace"], meta["name"]),
                                 float(pod["spec"].get("terminationGracePeriodSeconds", 30)))
        self._children[child.pid] = child
        status.update({"phase": "Running", "pid": child.pid, "pidStartTicks": processes.start_ticks(child.pid),
                       "startTime": now, "podIP": "127.0.0.1",
                       "containerStatuses": [{"name": container["name"], "ready": True, "restartCount": 0,
                                              "state": {"running": {"startedAt": now}}}]})
        self._objects.save(pod)

    def _working_dir(self, pod: dict[str, Any], container: dict[str, Any], mounts: dict[str, Path]) -> str:
        """The image's WORKDIR has no local equivalent: use workingDir if it exists here, else the directory
        the manifest was applied from, else SHIPYARD_HOME."""
        if container.get("workingDir"):
            candidate = substitute(container["workingDir"], mounts)
            if os.path.isdir(candidate):
                return candidate
        applied_from = pod["metadata"].get("annotations", {}).get(LOCAL_WORKDIR_ANNOTATION)
        if applied_from and os.path.isdir(applied_from):
            return applied_from
        return str(self._root.parent)

    # --- helpers -------------------------------------------------------------------------------------

    def _pod_dir(self, pod: dict[str, Any]) -> Path:
        return self._root / "pods" / pod["metadata"]["namespace"] / pod["metadata"]["name"]

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
        merged = {k: v for k, v in desired.items()}
        meta = dict(desired["metadata"])
        meta["uid"] = current["metadata"]["uid"] if current else str(uuid.uuid4())
        meta["creationTimestamp"] = current["metadata"]["creationTimestamp"] if current else self._clock().isoformat()
        merged["metadata"] = meta
        return merged

    @staticmethod
    def _initial_status(kind: str) -> dict[str, Any]:
        return {"PersistentVolumeClaim": {"phase": "Bound"}, "Job": {}, "Service": {}}.get(kind, {})

    def job_is_finished(self, namespace: str, name: str) -> bool:
        job = self.get("Job", namespace, name)
        return job is not None and job_finished(job)
