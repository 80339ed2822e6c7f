"""The pod lifecycle handler: one pod from its binding to its removal, as the kubelet's pod workers run it.

`sync(uid, pod)` is level-triggered: given the pod as the API holds it (None once it vanished) it compares
with what runs and takes the next step, so the agent's loop may call it for any reason, as often as it likes:

  new pod ─► IP + devices ─► start container (config from the API: containers.py) ─► Running
     │            (CreateContainerConfigError: wait, retry)             │ exit
     │                                                                  ▼
     │       restartPolicy says restart (lifecycle.py) ◄── yes ── should_restart? ── no ─► Succeeded / Failed
     │            crash-loop back-off, restartCount, lastState, previous log
  deletionTimestamp ─► not ready ─► preStop sleep ─► SIGTERM ─► SIGKILL after the grace period ─► final status
                    ─► DELETE gracePeriodSeconds=0 with a uid precondition (the kubelet's status manager)
  vanished (force deletion) ─► SIGKILL whatever runs

Processes are the embedded runtime's (shipyard.runtime.local.processes/shim): each pod runs under a shim that
outlives the agent, forwards SIGTERM, SIGKILLs after the grace period and records the exit code. The agent's
record of a pod (status.PodRun) is saved in ROOT/pods/UID/agent.json at every change, so an agent that
restarts adopts the processes still running instead of starting them twice. Readiness probes run on the
embedded runtime's Prober (probes.py) against the pod's IP and containerPorts, and wake the loop on a change.

Logs: the container's output goes to ROOT/logs/NS/POD.log; when it restarts, the previous attempt's log is
moved to POD.previous.log (`kubectl logs --previous`).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Hashable

from shipyard.cluster.api import KubeApi, KubeConflict, KubeError, KubeNotFound
from shipyard.runtime.local import podlog, processes
from shipyard.runtime.local.lifecycle import Backoff, kill_after_sigterm, prestop_seconds, should_restart
from shipyard.runtime.local.probes import Prober, Timing, readiness_check
from shipyard.runtime.pods import container_port

from .containers import ContainerConfig
from .devices import DevicePool, requested_gpus
from .ipam import PodNetwork
from .status import PodRun, pod_status

log = logging.getLogger(__name__)

CONFIG_RETRY_SECONDS = 1.0
TERMINAL = ("Succeeded", "Failed")
SHUTDOWN_DISRUPTION = {"reason": "TerminationByKubelet",
                       "message": "Pod was terminated in response to imminent node shutdown."}
_SHIM_REASONS = {"Completed": "Completed", "Error": "Error", "StartError": "StartError"}


def terminated_state(exit: dict[str, Any] | None, started_at: float | None, now: float) -> dict[str, Any]:
    """A container's terminated state (as status.PodRun keeps it) from the shim's exit.json (None: lost)."""
    if exit is None:
        return {"exitCode": 137, "reason": "ContainerStatusUnknown", "startedAt": started_at, "finishedAt": now,
                "message": "the container's supervisor died without reporting an exit code"}
    code = int(exit.get("exitCode", 137))
    # The kubelet says Completed or Error whatever stopped the container (a signal shows in the exit code).
    reason = _SHIM_REASONS.get(exit.get("reason", ""), "Completed" if code == 0 else "Error")
    out = {"exitCode": code, "reason": reason, "startedAt": started_at,
           "finishedAt": float(exit.get("finishedAt", now))}
    if exit.get("message") and reason == "StartError":
        out["message"] = exit["message"]
    if exit.get("signal"):
        out["signal"] = int(exit["signal"])
    return out


class Pods:
    def __init__(self, api: KubeApi, root: Path, host_ip: str, network: PodNetwork, devices: DevicePool,
                 config: ContainerConfig, wake: Callable[[], None], backoff: Backoff | None = None,
                 clock: Callable[[], float] = time.time):
        self._api = api
        self._root = root
        self._host_ip = host_ip
        self._network = network
        self._devices = devices
        self._config = config
        self._backoff = backoff or Backoff()
        self._clock = clock
        self.runs: dict[str, PodRun] = {}
        self._written: dict[str, dict[str, Any]] = {}
        self._done: set[str] = set()  # uids finished and removed: never started again
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._prober = Prober(wake)
        self._probed: set[Hashable] = set()
        self._unprobeable: set[str] = set()

    # --- paths ---------------------------------------------------------------------------------------

    def pod_dir(self, uid: str) -> Path:
        return self._root / "pods" / uid

    def log_path(self, namespace: str, name: str, previous: bool = False) -> Path:
        return self._root / "logs" / namespace / (f"{name}.previous.log" if previous else f"{name}.log")

    def find(self, namespace: str, name: str) -> PodRun | None:
        # Called from the log server's threads: iterate a copy, the sync thread may be changing the dict.
        return next((r for r in list(self.runs.values()) if r.namespace == namespace and r.name == name), None)

    # --- adoption ------------------------------------------------------------------------------------

    def adopt(self, pods: dict[str, dict[str, Any]]) -> None:
        """After a restart: take back the records of pods still bound here (their processes keep running);
        kill and remove what is left of the others."""
        base = self._root / "pods"
        if not base.is_dir():
            return
        for pod_dir in base.iterdir():
            uid = pod_dir.name
            try:
                run = PodRun(**json.loads((pod_dir / "agent.json").read_text()))
            except (OSError, ValueError, TypeError):
                run = None
            if run is not None and uid in pods and (run.ip == self._host_ip or self._network.claim(uid, run.ip)):
                self.runs[uid] = run
                if run.terminated is None:
                    self._devices.claim(uid, run.node, run.gpus)
                log.info("adopted pod %s/%s (%s)", run.namespace, run.name, "running" if run.running else "stopped")
                continue
            processes.kill_pod(uid, run.pid if run else None, run.ticks if run else None)
            shutil.rmtree(pod_dir, ignore_errors=True)

    # --- the sync step -------------------------------------------------------------------------------

    def sync(self, uid: str, pod: dict[str, Any] | None) -> None:
        run = self.runs.get(uid)
        if pod is None:
            if run is not None:
                log.info("pod %s/%s is gone from the API: killing what runs", run.namespace, run.name)
                processes.kill_pod(uid, run.pid, run.ticks)
                self._forget(run)
            self._done.discard(uid)  # a uid never comes back once its pod is gone
            return
        if uid in self._done:
            return
        if run is None:
            if pod.get("status", {}).get("phase") in TERMINAL:
                # Finished before this agent (re)started and its record is gone: never run it again.
                if not pod["metadata"].get("deletionTimestamp") or self._remove(pod):
                    self._done.add(uid)
                return
            run = self._admit(pod)
        self._step(pod, run)
        self._report(pod, run)
        if run.terminated is not None and pod["metadata"].get("deletionTimestamp"):
            if self._remove(pod):
                self._forget(run)

    def end_pass(self) -> None:
        """After syncing every pod: reap exited shims, drop the probe workers of containers gone."""
        for pid, child in list(self._children.items()):
            if child.poll() is not None:
                del self._children[pid]
        self._prober.forget(self._probed)
        self._probed = set()

    def _admit(self, pod: dict[str, Any]) -> PodRun:
        meta = pod["metadata"]
        uid = meta["uid"]
        node = pod["spec"]["nodeName"]
        # A host-network pod shares the node's address (and its ports); any other gets one of its own.
        ip = self._host_ip if pod["spec"].get("hostNetwork") else self._network.allocate(uid)
        run = PodRun(uid=uid, namespace=meta["namespace"], name=meta["name"], node=node,
                     ip=ip, start_time=self._clock(),
                     gpus=self._devices.allocate(uid, node, requested_gpus(pod)))
        self.runs[uid] = run
        self.pod_dir(uid).mkdir(parents=True, exist_ok=True)
        log.info("pod %s/%s admitted on %s with IP %s", run.namespace, run.name, node, run.ip)
        return run

    def _step(self, pod: dict[str, Any], run: PodRun) -> None:
        now = self._clock()
        deleting = bool(pod["metadata"].get("deletionTimestamp"))
        if deleting and run.deletion_seen is None:
            run.deletion_seen = now
            run.ready = False
        if run.running:
            result = processes.probe(self.pod_dir(run.uid), run.pid or 0, run.ticks)
            if result.state == "running":
                if deleting:
                    self._terminate_if_due(pod, run, now)
                else:
                    self._readiness(pod, run, now)
                return
            if result.state == "lost":
                processes.kill_pod(run.uid, None, None)  # nothing of a lost container may keep running
            self._exited(pod, run, terminated_state(result.exit if result.state == "exited" else None,
                                                    run.started_at, now), deleting, now)
            return
        if run.terminated is not None:
            return
        if deleting or run.disruption is not None:
            # Deleted before it (re)started: it ends as it is, as the kubelet ends a container it never ran.
            run.terminated = dict(run.last_terminated) if run.last_terminated else {
                "exitCode": 137, "reason": "ContainerStatusUnknown", "finishedAt": now,
                "message": "The container could not be located when the pod was terminated"}
            self._devices.release(run.uid)
            return
        if run.retry_at is not None and now < run.retry_at:
            return
        self._start(pod, run, now)

    def _exited(self, pod: dict[str, Any], run: PodRun, ended: dict[str, Any], deleting: bool, now: float) -> None:
        ran_for = (ended["finishedAt"] - run.started_at) if run.started_at else 0.0
        run.pid = run.ticks = run.started_at = None
        run.ready = False
        if not deleting and run.disruption is None and should_restart(pod, ended["exitCode"]):
            delay = self._backoff.next_delay(run.backoff, ran_for)
            run.last_terminated = ended
            run.backoff, run.retry_at = delay, now + delay
            run.waiting = {"reason": "CrashLoopBackOff", "message": (
                f"back-off {delay:g}s restarting failed container={pod['spec']['containers'][0]['name']} "
                f"pod={run.name}_{run.namespace}({run.uid})")}
            log.info("pod %s/%s exited %s; restarting in %gs", run.namespace, run.name, ended["exitCode"], delay)
        else:
            run.terminated = ended
            self._devices.release(run.uid)
            log.info("pod %s/%s exited %s (%s)", run.namespace, run.name, ended["exitCode"], ended["reason"])

    def _start(self, pod: dict[str, Any], run: PodRun, now: float) -> None:
        pod_dir = self.pod_dir(run.uid)
        try:
            process = self._config.process(pod, run, pod_dir)
        except (ValueError, KubeError, OSError) as exc:
            # As the kubelet's CreateContainerConfigError: the pod waits (Pending) and is tried again.
            if (run.waiting or {}).get("message") != str(exc):
                log.info("pod %s/%s cannot start yet: %s", run.namespace, run.name, exc)
            run.waiting = {"reason": "CreateContainerConfigError", "message": str(exc)}
            run.retry_at = now + CONFIG_RETRY_SECONDS
            return
        current = self.log_path(run.namespace, run.name)
        current.parent.mkdir(parents=True, exist_ok=True)
        restart = run.last_terminated is not None
        # The shim writes size-rotated parts beside POD.log; podlog moves or removes an attempt's parts together.
        if restart:
            podlog.start_new_attempt(current)
        else:  # a new pod: an earlier pod of the same name's logs are not its own
            podlog.remove_pod_logs(current)
        child = processes.launch(pod_dir, process.argv, process.env, process.cwd, current, kill_after_sigterm(pod))
        self._children[child.pid] = child
        run.pid, run.ticks, run.started_at = child.pid, processes.start_ticks(child.pid), now
        run.restart_count += 1 if restart else 0
        run.waiting = run.retry_at = None
        run.ready = not pod["spec"]["containers"][0].get("readinessProbe")
        self._save(run)
        log.info("pod %s/%s started: %s", run.namespace, run.name, shlex.join(process.argv)[:200].replace("\n", "\\n"))

    def _terminate_if_due(self, pod: dict[str, Any], run: PodRun, now: float) -> None:
        """SIGTERM once the preStop sleep has passed since the deletion was seen; SIGKILL when the grace
        period is over (the shim kills on its own too, but after the spec's grace, not a shortened one)."""
        elapsed = now - (run.deletion_seen or now)
        prestop = prestop_seconds(pod)
        if not run.sigterm_sent and elapsed >= prestop:
            processes.terminate(run.pid or 0, run.ticks)
            run.sigterm_sent = True
            self._save(run)
        elif run.sigterm_sent and elapsed >= prestop + kill_after_sigterm(pod):
            processes.kill_pod(run.uid, run.pid, run.ticks)

    def _readiness(self, pod: dict[str, Any], run: PodRun, now: float) -> None:
        container = pod["spec"]["containers"][0]
        probe = container.get("readinessProbe")
        if not probe:
            run.ready = True
            return
        key = (run.uid, run.restart_count)
        self._probed.add(key)

        def target(port: int | str) -> tuple[str, int]:
            number = container_port(pod, port)
            if number is None:
                raise ValueError(f"readiness probe port {port!r} is not a declared containerPort")
            return run.ip, number

        def make_check() -> Any:
            check = readiness_check(pod, container, lambda: self._exec_context(run.uid), target)
            return check or (lambda: True)

        try:
            verdict = self._prober.observe(key, Timing.of(probe), make_check, now - (run.started_at or now))
        except ValueError as exc:
            if run.uid not in self._unprobeable:
                self._unprobeable.add(run.uid)
                log.warning("pod %s/%s: %s; it never becomes ready", run.namespace, run.name, exc)
            verdict = False
        if verdict is not None:
            run.ready = verdict

    def _exec_context(self, uid: str) -> tuple[dict[str, str], str | None]:
        launch = json.loads((self.pod_dir(uid) / "launch.json").read_text())
        return launch["env"], launch["cwd"]

    # --- writing back --------------------------------------------------------------------------------

    def _report(self, pod: dict[str, Any], run: PodRun) -> None:
        written = self._written.get(run.uid)
        if written is not None:
            # The cached pod may predate the agent's last write (its watch event is on the way): take the
            # transition times from what was written, so a condition that holds is not written again.
            ours = {c["type"] for c in written["conditions"]}
            conditions = written["conditions"] + [c for c in pod.get("status", {}).get("conditions", [])
                                                  if c["type"] not in ours]
            pod = {**pod, "status": {**pod.get("status", {}), "conditions": conditions}}
        status = pod_status(pod, run, self._host_ip, self._clock())
        if run.disruption is not None and run.terminated is not None:
            status.update({"phase": "Failed", "reason": "Terminated", "message": run.disruption["message"]})
        if self._written.get(run.uid) == status:
            return
        try:
            # metadata.uid makes the patch a precondition: it never lands on a new pod of the same name.
            self._api.merge_patch("Pod", run.namespace, run.name, {"metadata": {"uid": run.uid}, "status": status},
                                  status=True, strategic=True)
        except KubeNotFound:
            return  # deleted meanwhile: the watch says so next
        except KubeError as exc:
            log.warning("cannot write the status of pod %s/%s: %s", run.namespace, run.name, exc)
            return
        self._written[run.uid] = status
        self._save(run)

    def _remove(self, pod: dict[str, Any]) -> bool:
        """The deletion's last step: remove the pod from the API now that nothing of it runs."""
        meta = pod["metadata"]
        try:
            self._api.delete("Pod", meta["namespace"], meta["name"], grace_period_seconds=0, uid=meta["uid"])
        except KubeConflict:
            pass  # the name belongs to a new pod now: ours is gone already
        except KubeError as exc:
            log.warning("cannot remove pod %s/%s: %s", meta["namespace"], meta["name"], exc)
            return False
        log.info("pod %s/%s removed", meta["namespace"], meta["name"])
        return True

    def _forget(self, run: PodRun) -> None:
        self._done.add(run.uid)
        self.runs.pop(run.uid, None)
        self._written.pop(run.uid, None)
        self._network.release(run.uid)
        self._devices.release(run.uid)
        shutil.rmtree(self.pod_dir(run.uid), ignore_errors=True)

    def _save(self, run: PodRun) -> None:
        pod_dir = self.pod_dir(run.uid)
        if not pod_dir.is_dir():
            return
        tmp = pod_dir / "agent.json.tmp"
        tmp.write_text(json.dumps(asdict(run)))
        os.replace(tmp, pod_dir / "agent.json")

    # --- shutting down -------------------------------------------------------------------------------

    def shut_down(self, pods: dict[str, dict[str, Any]], timeout: float = 30.0) -> None:
        """Stop every pod for the node's shutdown, as the kubelet's graceful node shutdown does: SIGTERM (no
        preStop), SIGKILL after the grace period (at most `timeout`), and report the pods Failed with a
        DisruptionTarget condition, so their controllers replace them elsewhere."""
        deadline = {}
        for run in self.runs.values():
            if run.terminated is not None:
                continue
            run.disruption = dict(SHUTDOWN_DISRUPTION)
            run.ready = False
            if run.running:
                processes.terminate(run.pid or 0, run.ticks)
                pod = pods.get(run.uid)
                grace = kill_after_sigterm(pod) if pod else 2.0
                deadline[run.uid] = time.monotonic() + min(grace, timeout)
        while any(self.runs[u].running for u in deadline) and time.monotonic() < max(deadline.values(), default=0):
            for uid in deadline:
                run = self.runs[uid]
                if run.running and processes.probe(self.pod_dir(uid), run.pid or 0, run.ticks).state != "running":
                    self._collect_exit(run)
            time.sleep(0.05)
        for run in list(self.runs.values()):
            if run.running:
                processes.kill_pod(run.uid, run.pid, run.ticks)
                self._collect_exit(run)
            pod = pods.get(run.uid)
            if pod is None:
                continue
            if run.terminated is None:
                run.terminated = dict(run.last_terminated) if run.last_terminated else {
                    "exitCode": 137, "reason": "ContainerStatusUnknown", "finishedAt": self._clock()}
            self._report(pod, run)
        self._prober.close()

    def _collect_exit(self, run: PodRun) -> None:
        result = processes.probe(self.pod_dir(run.uid), run.pid or 0, run.ticks)
        run.terminated = terminated_state(result.exit if result.state == "exited" else None, run.started_at,
                                          self._clock())
        run.pid = run.ticks = None
        run.ready = False
