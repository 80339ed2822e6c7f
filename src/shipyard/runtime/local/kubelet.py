"""The local node agent: a pod's containers from start to removal, as the kubelet runs them on a node.

The LocalRuntime decides which pods should exist (the controllers' job); this module makes the processes
match: it starts a placed pod's container under a shim, watches it, restarts it in place when its
restartPolicy says so (lifecycle.py: crash-loop back-off, restartCount, lastState; the pod keeps its name,
uid and host ports), runs its readiness probe (probes.py) into the Ready condition, and stops it on deletion
(not ready at once, preStop delay, SIGTERM, SIGKILL after the grace period). Every method runs under the
runtime's lock, on the sync thread or an API call; only the probes run elsewhere.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from . import cgroups, podlog, processes
from .container import container_process
from .jobs import TERMINAL
from .lifecycle import Backoff, grace_seconds, kill_after_sigterm, prestop_seconds, should_restart
from .network import LOOPBACK, PodAddress, _qualified, free_port, resolve_env
from .probes import Prober, Timing, readiness_check
from .secretvolumes import SecretVolumes
from .state import ObjectFiles
from .volumes import mount_map

log = logging.getLogger(__name__)

DISRUPTED_ANNOTATION = "shipyard.dev/disrupted"
KILL_AFTER_GRACE_SECONDS = 5.0
MAX_DEPARTED_PODS = 256
# A departed pod's logs outlive its last owner by this long: a TrainingJob's controller deletes the Job of a
# failed attempt and only then creates the next one, and the next attempt's `--previous` (and the MLflow
# history rebuilt from logs) needs the old attempt's log across that gap. The TrainingJob itself lives in the
# control plane's store, which this runtime does not see.
OWNER_GONE_GRACE_SECONDS = 15.0


def _container_status(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = pod["status"].setdefault("containerStatuses", [{}])
    statuses[0].setdefault("name", pod["spec"]["containers"][0]["name"])
    return statuses[0]


class Kubelet:
    # Each pod's limits as a cgroup (cgroups.py); the runtime sets the implementation detected at its start.
    pod_cgroups: cgroups.Cgroups = cgroups.Cgroups()

    def __init__(self, objects: ObjectFiles, root: Path, volumes: Path, logs: Path,
                 clock: Callable[[], datetime], backoff: Backoff, gpus: bool, wake: Callable[[], None],
                 service_urls: dict[str, str] | None = None,
                 log_limits: tuple[int, int] = (podlog.DEFAULT_MAX_BYTES, podlog.DEFAULT_MAX_FILES),
                 secret_volumes: SecretVolumes | None = None):
        self._objects = objects
        # Secret volumes' files: on a tmpfs outside SHIPYARD_HOME, only while the container runs.
        self.secret_volumes = secret_volumes or SecretVolumes(root)
        self._service_urls = dict(service_urls or {})
        self._root = root
        self._volumes = volumes
        self._logs = logs
        self._log_limits = log_limits
        self.logs_changed = True  # a pod or an owner went: see whether some pod's logs went with them
        self._owner_seen: dict[str, datetime] = {}  # owner uid → when it last existed (for the grace above)
        self._collect_again_at: datetime | None = None
        self._clock = clock
        self._backoff = backoff
        self._gpus = gpus
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._prober = Prober(wake)
        self._probed: set[tuple[str, int]] = set()
        self._unprobeable: set[str] = set()
        self.reserved_ports: set[int] = {
            port for pod in objects.all("Pod") for port in pod["status"].get("hostPorts", {}).values()}

    def log_path(self, namespace: str, pod: str) -> Path:
        return self._logs / namespace / f"{pod}.log"

    def pod_dir(self, pod: dict[str, Any]) -> Path:
        return self._root / "pods" / pod["metadata"]["namespace"] / pod["metadata"]["name"]

    def close(self) -> None:
        self._prober.close()

    # --- every tick ----------------------------------------------------------------------------------

    def begin_tick(self) -> None:
        for pid, child in list(self._children.items()):
            if child.poll() is not None:
                del self._children[pid]
        self._probed = set()

    def end_tick(self) -> None:
        self._prober.forget(self._probed)

    def sync_pod(self, pod: dict[str, Any], draining: bool) -> bool:
        """Match a pod's processes to it; remove it once deleted and stopped. True if its status changed in a
        way its owners should hear about (phase, container state, readiness, removal)."""
        status, meta = pod["status"], pod["metadata"]
        if status["phase"] == "Running" and status.get("pid"):
            result = processes.probe(self.pod_dir(pod), status["pid"], status.get("pidStartTicks"))
            if result.state == "running":
                signalled = self._terminate_if_due(pod)
                changed = self._update_readiness(pod)
                if changed or signalled:
                    self._objects.save(pod)
                return changed
            terminated = dict(result.exit or {"exitCode": 137, "reason": "Lost",
                                              "message": "the pod's supervisor died without reporting an exit code"})
            if result.state == "lost":
                processes.kill_pod(meta["uid"], None, None)  # nothing of a lost pod may keep running
            if (should_restart(pod, int(terminated.get("exitCode", 137))) and not draining
                    and not meta.get("deletionTimestamp") and not meta.get("annotations", {}).get(DISRUPTED_ANNOTATION)):
                self._wait_to_restart(pod, terminated)
            else:
                self._finish_pod(pod, terminated)
            self._objects.save(pod)
            return True
        if status["phase"] == "Running":  # waiting out a crash-loop back-off, no process
            if meta.get("deletionTimestamp") or draining or meta.get("annotations", {}).get(DISRUPTED_ANNOTATION):
                last = _container_status(pod).get("lastState", {}).get("terminated", {})
                self._finish_pod(pod, {k: last[k] for k in ("exitCode", "reason", "message") if k in last})
                self._objects.save(pod)
                return True
            until = status.get("restartBackoff", {}).get("until")
            if until and self._clock() < datetime.fromisoformat(until):
                return False
            self._start_container(pod, restart=True)
            self._objects.save(pod)
            return True
        if meta.get("deletionTimestamp") and (status["phase"] in TERMINAL or status["phase"] == "Pending"):
            self._objects.remove("Pod", meta["namespace"], meta["name"])
            shutil.rmtree(self.pod_dir(pod), ignore_errors=True)
            self.pod_cgroups.remove(meta["uid"])
            self.secret_volumes.remove(meta["uid"])
            # Its owners existed until now; the grace period below counts from here even when its Job went in
            # the same tick (collect_logs would otherwise never have seen them alive).
            recorded = podlog.read_meta(self.log_path(meta["namespace"], meta["name"])) or {}
            for uid in recorded.get("owners", []):
                self._owner_seen[uid] = self._clock()
            self.logs_changed = True
            for port in status.get("hostPorts", {}).values():
                self.reserved_ports.discard(port)
            return True
        return False

    # --- readiness -----------------------------------------------------------------------------------

    def _update_readiness(self, pod: dict[str, Any]) -> bool:
        container = pod["spec"]["containers"][0]
        probe = container.get("readinessProbe")
        current = _container_status(pod)
        if pod["metadata"].get("deletionTimestamp"):
            ready = False
        elif not probe:
            ready = True
        else:
            key = (pod["metadata"]["uid"], int(current.get("restartCount", 0)))
            self._probed.add(key)
            started = current.get("state", {}).get("running", {}).get("startedAt")
            running_for = (self._clock() - datetime.fromisoformat(started)).total_seconds() if started else 0.0
            try:
                verdict = self._prober.observe(key, Timing.of(probe), lambda: readiness_check(
                    pod, container, lambda: self._exec_context(pod)), running_for)
            except ValueError as exc:
                if pod["metadata"]["uid"] not in self._unprobeable:
                    self._unprobeable.add(pod["metadata"]["uid"])
                    log.warning("pod %s: %s; it never becomes ready", pod["metadata"]["name"], exc)
                verdict = False
            ready = bool(current.get("ready")) if verdict is None else verdict
        return self._set_ready(pod, ready)

    def _set_ready(self, pod: dict[str, Any], ready: bool) -> bool:
        """Set containerStatuses[].ready and the ContainersReady/Ready conditions; True if readiness changed."""
        value = "True" if ready else "False"
        conditions = pod["status"].setdefault("conditions", [])
        old = next((c for c in conditions if c["type"] == "Ready"), None)
        if old is not None and old["status"] == value:
            return False
        now = self._clock().isoformat()
        if pod["status"].get("containerStatuses"):
            _container_status(pod)["ready"] = ready
        reason = {} if ready else {"reason": "ContainersNotReady",
                                   "message": "containers with unready status: "
                                              f"[{pod['spec']['containers'][0]['name']}]"}
        pod["status"]["conditions"] = [c for c in conditions if c["type"] not in ("ContainersReady", "Ready")] + [
            {"type": t, "status": value, "lastTransitionTime": now, **reason} for t in ("ContainersReady", "Ready")]
        return True

    def _exec_context(self, pod: dict[str, Any]) -> tuple[dict[str, str], str | None]:
        launch = json.loads((self.pod_dir(pod) / "launch.json").read_text())
        return launch["env"], launch["cwd"]

    # --- stopping ------------------------------------------------------------------------------------

    def delete(self, pod: dict[str, Any]) -> None:
        """Begin graceful deletion: not ready at once (routing stops), SIGTERM after the preStop delay."""
        if pod["metadata"].get("deletionTimestamp"):
            return
        pod["metadata"]["deletionTimestamp"] = self._clock().isoformat()
        self._set_ready(pod, False)
        self._terminate_if_due(pod)
        self._objects.save(pod)

    def shut_down(self, pod: dict[str, Any]) -> None:
        """Stop a pod for a machine shutdown: SIGTERM now, no preStop (the gateway is going down with us)."""
        status = pod["status"]
        if status["phase"] != "Running":
            return  # a pending pod is simply not started; it runs after the next start
        pod["metadata"].setdefault("annotations", {})[DISRUPTED_ANNOTATION] = "shutdown"
        self._set_ready(pod, False)
        if status["phase"] == "Running" and status.get("pid"):
            processes.terminate(status["pid"], status.get("pidStartTicks"))
            status["sigtermSentAt"] = self._clock().isoformat()
        self._objects.save(pod)

    def _terminate_if_due(self, pod: dict[str, Any]) -> bool:
        """SIGTERM once the preStop delay after the deletion has passed; SIGKILL after the grace period (the
        shim kills on its own at that point; this catches a shim that cannot). True if SIGTERM was sent."""
        status = pod["status"]
        deleted = pod["metadata"].get("deletionTimestamp")
        if not deleted or status["phase"] != "Running" or not status.get("pid"):
            return False
        elapsed = (self._clock() - datetime.fromisoformat(deleted)).total_seconds()
        if not status.get("sigtermSentAt") and elapsed >= prestop_seconds(pod):
            processes.terminate(status["pid"], status.get("pidStartTicks"))
            status["sigtermSentAt"] = self._clock().isoformat()
            return True
        if elapsed > grace_seconds(pod) + KILL_AFTER_GRACE_SECONDS:
            processes.kill_pod(pod["metadata"]["uid"], status["pid"], status.get("pidStartTicks"))
        return False

    def _finish_pod(self, pod: dict[str, Any], terminated: dict[str, Any]) -> None:
        status = pod["status"]
        self.secret_volumes.remove(pod["metadata"]["uid"])  # the container is gone: so are its secret files
        self.pod_cgroups.remove(pod["metadata"]["uid"])  # and its cgroup, with anything a lost shim left in it
        code = int(terminated.get("exitCode", 137))
        disrupted = pod["metadata"].get("annotations", {}).get(DISRUPTED_ANNOTATION)
        status["phase"] = "Succeeded" if code == 0 and not disrupted else "Failed"
        status["pid"] = None
        if disrupted:
            status.setdefault("conditions", []).append({
                "type": "DisruptionTarget", "status": "True", "reason": "TerminationByShipyard",
                "message": f"pod stopped by the local runtime ({disrupted})",
                "lastTransitionTime": self._clock().isoformat()})
        self._set_ready(pod, False)
        previous = _container_status(pod)
        finished = datetime.fromtimestamp(float(terminated.get("finishedAt", self._clock().timestamp())),
                                          timezone.utc)
        started = previous.get("state", {}).get("running", {}).get("startedAt", status.get("startTime"))
        status["containerStatuses"] = [{
            "name": pod["spec"]["containers"][0]["name"], "ready": False,
            "restartCount": int(previous.get("restartCount", 0)),
            "state": {"terminated": {
                "exitCode": code, "reason": terminated.get("reason", "Error"),
                "message": terminated.get("message", ""), "startedAt": started,
                "finishedAt": finished.isoformat()}},
            **({"lastState": previous["lastState"]} if previous.get("lastState") else {})}]
        if terminated.get("reason") == "StartError":
            status["message"] = terminated.get("message", "")

    # --- restarting ----------------------------------------------------------------------------------

    def _wait_to_restart(self, pod: dict[str, Any], terminated: dict[str, Any], reason: str = "CrashLoopBackOff",
                         message: str | None = None) -> None:
        """The container stopped (or could not start) and will be restarted in place after a back-off."""
        status = pod["status"]
        self.secret_volumes.remove(pod["metadata"]["uid"])  # written afresh at the restart
        current = _container_status(pod)
        now = self._clock()
        started = current.get("state", {}).get("running", {}).get("startedAt")
        finished = datetime.fromtimestamp(float(terminated.get("finishedAt", now.timestamp())), timezone.utc)
        ran_for = (finished - datetime.fromisoformat(started)).total_seconds() if started else 0.0
        delay = self._backoff.next_delay(status.get("restartBackoff", {}).get("seconds"), ran_for)
        name = pod["spec"]["containers"][0]["name"]
        if started:
            current["lastState"] = {"terminated": {
                "exitCode": int(terminated.get("exitCode", 137)), "reason": terminated.get("reason", "Error"),
                "message": terminated.get("message", ""), "startedAt": started, "finishedAt": finished.isoformat()}}
        current["state"] = {"waiting": {"reason": reason, "message": message or (
            f"back-off {delay:g}s restarting failed container={name} pod={pod['metadata']['name']}")}}
        status.update({"pid": None, "pidStartTicks": None,
                       "restartBackoff": {"seconds": delay, "until": (now + timedelta(seconds=delay)).isoformat()}})
        self._set_ready(pod, False)

    # --- starting ------------------------------------------------------------------------------------

    def start_gang(self, gang: list[dict[str, Any]], gpus: list[list[str]]) -> None:
        for pod, pod_gpus in zip(gang, gpus):
            ports = {}
            for container in pod["spec"]["containers"]:
                for port in container.get("ports", []):
                    ports[str(port["containerPort"])] = free_port(self.reserved_ports)
            now = self._clock().isoformat()
            pod["status"].update({"hostPorts": ports, "gpus": pod_gpus, "podIP": LOOPBACK, "startTime": now,
                                  "conditions": [{"type": "PodScheduled", "status": "True",
                                                  "lastTransitionTime": now}]})
        for pod in gang:
            self._start_container(pod, restart=False)
            self._objects.save(pod)

    def _start_container(self, pod: dict[str, Any], restart: bool) -> None:
        try:
            self._launch(pod, restart)
        except (ValueError, OSError) as exc:
            if should_restart(pod, 128):
                # Kubernetes keeps such a pod waiting (CreateContainerConfigError) and retries; replacing it
                # would only fail the same way, as fast as the sync loop runs.
                self._wait_to_restart(pod, {"exitCode": 128, "reason": "StartError", "message": str(exc)},
                                      "CreateContainerConfigError", str(exc))
                pod["status"]["phase"] = "Running"
            else:
                self._finish_pod(pod, {"exitCode": 128, "reason": "StartError", "message": str(exc)})

    def _network(self, pod: dict[str, Any]) -> tuple[list[PodAddress], set[str]]:
        namespace = pod["metadata"]["namespace"]
        peers = [_address(p) for p in self._objects.all("Pod")
                 if p["metadata"]["namespace"] == namespace and p["status"].get("hostPorts")
                 and not p["metadata"].get("deletionTimestamp")]
        services = {name for svc in self._objects.all("Service") if svc["metadata"]["namespace"] == namespace
                    for name in _qualified(svc["metadata"]["name"], namespace)}
        return peers, services

    def _launch(self, pod: dict[str, Any], restart: bool) -> None:
        meta, status = pod["metadata"], pod["status"]
        container = pod["spec"]["containers"][0]
        pod_dir = self.pod_dir(pod)
        me = _address(pod)
        secrets = {o["metadata"]["name"]: o for o in self._objects.all("Secret")
                   if o["metadata"]["namespace"] == meta["namespace"]}
        mounts = mount_map(pod, container, self._volumes, pod_dir, source=lambda volume: (
            self.secret_volumes.place(pod, volume, secrets) if "secret" in volume else None))
        env = resolve_env(pod, container, me, *self._network(pod), secrets=secrets)
        process = container_process(pod, container, env, mounts, self._service_urls, me.host_ports,
                                    str(self._root.parent))
        if self._gpus:
            process.env["CUDA_VISIBLE_DEVICES"] = ",".join(status.get("gpus", []))
        log_path = self.log_path(meta["namespace"], meta["name"])
        log_path.parent.mkdir(parents=True, exist_ok=True)
        recorded = podlog.read_meta(log_path)
        if restart or (recorded is not None and recorded.get("uid") != meta["uid"]):
            # A container restarted in place, or a pod recreated under its predecessor's name: what ran before
            # is the previous attempt (`shipyard logs --previous`), as the kubelet keeps one dead container's log.
            podlog.start_new_attempt(log_path)
        podlog.write_meta(log_path, self._log_meta(pod))
        cgroups.write_spec(pod_dir, self.pod_cgroups.create(meta["uid"], cgroups.limits_of(container)))
        child = processes.launch(pod_dir, process.argv, process.env, process.cwd, log_path,
                                 kill_after_sigterm(pod), self._log_limits)
        self._children[child.pid] = child
        previous = _container_status(pod) if restart else {}
        now = self._clock().isoformat()
        status.update({"phase": "Running", "pid": child.pid, "pidStartTicks": processes.start_ticks(child.pid)})
        status["containerStatuses"] = [{
            "name": container["name"], "ready": False,
            "restartCount": int(previous.get("restartCount", 0)) + (1 if restart else 0),
            "state": {"running": {"startedAt": now}},
            **({"lastState": previous["lastState"]} if previous.get("lastState") else {})}]
        self._set_ready(pod, not container.get("readinessProbe"))
        if not container.get("readinessProbe"):
            _container_status(pod)["ready"] = True


    # --- logs that outlive their pods -----------------------------------------------------------------

    def _log_meta(self, pod: dict[str, Any]) -> dict[str, Any]:
        """What a pod's logs need once the pod is gone: whose they are (every owner up the chain, so a
        TrainingJob's new Job or its Service keeps the last attempt's logs) and how to pick them."""
        meta = pod["metadata"]
        owners: list[str] = []
        refs = list(meta.get("ownerReferences", []))
        while refs:
            ref = refs.pop()
            if ref.get("uid") and ref["uid"] not in owners:
                owners.append(ref["uid"])
            parent = self._objects.get(ref["kind"], meta["namespace"], ref["name"]) if ref["kind"] != "Pod" else None
            if parent is not None:
                refs.extend(parent["metadata"].get("ownerReferences", []))
        return {"uid": meta["uid"], "name": meta["name"], "namespace": meta["namespace"],
                "labels": meta.get("labels", {}), "annotations": meta.get("annotations", {}),
                "creationTimestamp": meta.get("creationTimestamp"), "owners": owners}

    def departed_logs(self, namespace: str) -> list[dict[str, Any]]:
        """The recorded metadata of pods of `namespace` that are gone but whose logs are kept."""
        live = {p["metadata"]["name"] for p in self._objects.all("Pod") if p["metadata"]["namespace"] == namespace}
        out = []
        for path in sorted((self._logs / namespace).glob("*.meta.json")):
            name = path.name[:-len(".meta.json")]
            if name in live:
                continue
            recorded = podlog.read_meta(self.log_path(namespace, name))
            if recorded is not None:
                out.append(recorded)
        return out

    def logs_due(self) -> bool:
        """Whether collect_logs has work: a pod or an owner went, or a grace period above ended."""
        return self.logs_changed or (self._collect_again_at is not None and self._clock() >= self._collect_again_at)

    def collect_logs(self, kinds: list[str]) -> None:
        """Delete the logs of pods that are gone along with every owner they had; keep at most
        MAX_DEPARTED_PODS departed pods' logs per owner (the newest), so a long-lived, often rescaled
        Deployment does not gather logs without end."""
        self.logs_changed = False
        self._collect_again_at = None
        now = self._clock()
        alive: set[str] = set()
        for kind in kinds:
            for obj in self._objects.all(kind):
                alive.add(obj["metadata"].get("uid", ""))
                alive.update(r.get("uid", "") for r in obj["metadata"].get("ownerReferences", []))
        for uid in alive:
            self._owner_seen[uid] = now
        pods = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in self._objects.all("Pod")}
        kept: dict[str, list[tuple[str, Path]]] = {}
        for meta_file in self._logs.glob("*/*.meta.json"):
            namespace, name = meta_file.parent.name, meta_file.name[:-len(".meta.json")]
            if (namespace, name) in pods:
                continue
            path = self.log_path(namespace, name)
            recorded = podlog.read_meta(path) or {}
            owners = [o for o in recorded.get("owners", []) if o in alive]
            if not owners:
                seen = [self._owner_seen[o] for o in recorded.get("owners", []) if o in self._owner_seen]
                gone_for = (now - max(seen)).total_seconds() if seen else OWNER_GONE_GRACE_SECONDS
                if gone_for < OWNER_GONE_GRACE_SECONDS:
                    again = max(seen) + timedelta(seconds=OWNER_GONE_GRACE_SECONDS)
                    self._collect_again_at = min(self._collect_again_at or again, again)
                    continue
                podlog.remove_pod_logs(path)
                continue
            kept.setdefault(owners[-1], []).append((recorded.get("creationTimestamp") or "", path))
        for departed in kept.values():
            for _, path in sorted(departed, key=lambda d: d[0], reverse=True)[MAX_DEPARTED_PODS:]:
                podlog.remove_pod_logs(path)


def _address(pod: dict[str, Any]) -> PodAddress:
    return PodAddress(pod["metadata"]["namespace"], pod["spec"].get("hostname", pod["metadata"]["name"]),
                      pod["spec"].get("subdomain"),
                      {int(k): v for k, v in pod["status"].get("hostPorts", {}).items()})
