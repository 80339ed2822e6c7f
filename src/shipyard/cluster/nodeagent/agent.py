"""The node agent's loop: which pods are bound here, kept current by watches, synced by one thread.

Modelled on virtual-kubelet's pod controller and kwok's stages, level-triggered: a watch per node
(fieldSelector spec.nodeName=NODE) keeps a cache of the pods bound to it, and every event only wakes the sync
thread; the sync thread walks the cache and every pod it runs, and lets pods.Pods take each one's next step.
A periodic full list replaces the cache (a missed event is corrected within --resync seconds), and a short tick
notices containers that exited (their shims write exit.json; nothing signals the agent). One thread makes
every decision, so pods.Pods needs no locks; the watches, the heartbeat, the provisioner, the probes and the
log server run beside it and only read or wake.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from shipyard.cluster.api import KubeApi, KubeError

from .containers import ContainerConfig
from .devices import DevicePool
from .ipam import PodNetwork
from .logs import LogServer
from .node import Heartbeat, Machine
from .pods import Pods
from .storage import Provisioner

log = logging.getLogger(__name__)

TICK_SECONDS = 0.2


class NodeAgent:
    def __init__(self, api: KubeApi, nodes: list[str], root: Path, gpus: int = 0,
                 pod_network: str = "127.1.0.0/16", node_ip: str = "127.0.0.1",
                 service_urls: dict[str, str] | None = None, resync_seconds: float = 30.0, port: int = 0,
                 provision: bool = True):
        if not nodes:
            raise ValueError("the node agent needs at least one node name")
        self._api = api
        self.nodes = list(nodes)
        self.root = root
        self._resync_seconds = resync_seconds
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._cache: dict[str, dict[str, Any]] = {}  # uid → pod, for every node
        for sub in ("pods", "logs", "volumes"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.pods = Pods(api, root, node_ip, PodNetwork(pod_network, reserved={node_ip}), DevicePool(nodes, gpus),
                         ContainerConfig(api, root, node_ip, service_urls), self._wake.set)
        self.logs = LogServer(root / "tls", node_ip, port, self._log_source)
        self._heartbeat = Heartbeat(api, nodes, Machine.detect(root), gpus, node_ip, port)
        self._provisioner = Provisioner(api, root / "volumes") if provision else None
        self._threads: list[threading.Thread] = []

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> "NodeAgent":
        self.logs.start()
        self._heartbeat.set_port(self.logs.port)
        self._heartbeat.register()
        self._resync()
        with self._lock:
            snapshot = dict(self._cache)
        self.pods.adopt(snapshot)
        targets = [(f"watch-{node}", self._watch, (node,)) for node in self.nodes]
        targets += [("heartbeat", self._heartbeat.run, (self._stop,)), ("sync", self._loop, ())]
        if self._provisioner is not None:
            targets.append(("provisioner", self._provisioner.run, (self._stop,)))
        for name, target, args in targets:
            thread = threading.Thread(target=target, args=args, name=f"nodeagent-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("node agent serving %s (logs on port %d)", ", ".join(self.nodes), self.logs.port)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every pod (reported Failed, as on a node shutdown), then the threads and connections."""
        self._stop.set()
        self._wake.set()
        if self._provisioner is not None:
            self._provisioner.wake()
        for thread in self._threads:
            if thread.name == "nodeagent-sync":
                thread.join(timeout=10)
        with self._lock:
            snapshot = dict(self._cache)
        try:
            self.pods.shut_down(snapshot, timeout)
        finally:
            self.logs.stop()
            self._api.close()
            # The watches are daemon threads blocked reading a stream: they end with their connection or the
            # process, so only the threads that write are waited for.
            for thread in self._threads:
                if not thread.name.startswith("nodeagent-watch-"):
                    thread.join(timeout=5)

    def wait(self) -> None:
        self._stop.wait()

    # --- watching ------------------------------------------------------------------------------------

    def _watch(self, node: str) -> None:
        for type_, pod in self._api.watch("Pod", None, None, self._stop, fields={"spec.nodeName": node}):
            uid = pod["metadata"]["uid"]
            with self._lock:
                if type_ == "DELETED":
                    self._cache.pop(uid, None)
                else:
                    self._cache[uid] = pod
            self._wake.set()

    def _resync(self) -> None:
        pods: dict[str, dict[str, Any]] = {}
        for node in self.nodes:
            for pod in self._api.list("Pod", None, fields={"spec.nodeName": node}):
                pods[pod["metadata"]["uid"]] = pod
        with self._lock:
            self._cache = pods

    # --- syncing -------------------------------------------------------------------------------------

    def _loop(self) -> None:
        last_resync = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(TICK_SECONDS)
            self._wake.clear()
            if self._stop.is_set():
                return
            if time.monotonic() - last_resync >= self._resync_seconds:
                try:
                    self._resync()
                    last_resync = time.monotonic()
                except KubeError as exc:
                    log.warning("resync failed: %s", exc)
            self.sync_once()

    def sync_once(self) -> None:
        with self._lock:
            snapshot = dict(self._cache)
        for uid in sorted(set(snapshot) | set(self.pods.runs)):
            try:
                self.pods.sync(uid, snapshot.get(uid))
            except Exception:  # noqa: BLE001 - one pod's trouble must not stop the others
                log.exception("syncing pod %s failed", uid)
        self.pods.end_pass()

    # --- logs ----------------------------------------------------------------------------------------

    def _log_source(self, namespace: str, name: str) -> tuple[Path, Path, bool] | None:
        """(current log, previous log, still running) of a pod this agent runs, for the log server."""
        run = self.pods.find(namespace, name)
        if run is None:
            current = self.pods.log_path(namespace, name)
            return (current, self.pods.log_path(namespace, name, previous=True), False) if current.exists() else None
        # A follow ends when the container does, as the kubelet's does; a restarted container has a new log.
        return self.pods.log_path(namespace, name), self.pods.log_path(namespace, name, previous=True), run.running
