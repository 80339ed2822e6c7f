"""The Nodes the agent plays: their registration, their status, and the Lease that keeps them Ready.

The node lifecycle controller marks a Node NotReady, taints it and (after a while) evicts its pods when its
Lease in `kube-node-lease` has not been renewed for --node-monitor-grace-period; the kubelet therefore renews
the Lease every 10 s (a quarter of its 40 s duration) and rewrites its status, with the Ready condition's
lastHeartbeatTime, far less often. The agent does the same, for every node it plays.

A Node says what this machine has: its CPUs, memory and disk, 110 pods, and `nvidia.com/gpu: N` *declared*
GPUs, which need not exist: they let the real scheduler place GPU workloads (and the agent hands out device
indices among them, see devices.py). Every Node of one agent shares the machine, so two Nodes declare the
machine twice: they are for scheduling tests, not for capacity planning. The Nodes' InternalIP is the host's
loopback address, and daemonEndpoints names the port where the agent serves pod logs to the API server
(logs.py); the API server must prefer InternalIP (--kubelet-preferred-address-types=InternalIP), since a
Node's name does not resolve.

Pure builders (node_object, node_status, lease_object) and one Heartbeat that writes them.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from shipyard.cluster.api import KubeApi, KubeConflict, KubeError, KubeNotFound

from .status import micro_time, rfc3339

log = logging.getLogger(__name__)

KUBELET_VERSION = "v1.37.2"
GPU_RESOURCE = "nvidia.com/gpu"
AGENT_LABEL = ("type", "shipyard-node-agent")
LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
RENEW_SECONDS = 10.0
STATUS_SECONDS = 60.0
MAX_PODS = 110
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True)
class Machine:
    """What this machine has, as a Node reports it."""

    cpus: int
    memory_bytes: int
    disk_bytes: int
    arch: str = "amd64"
    kernel: str = ""
    os_image: str = "Linux"
    boot_id: str = ""
    machine_id: str = ""

    @classmethod
    def detect(cls, root: Path) -> "Machine":
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return cls(cpus=os.cpu_count() or 1, memory_bytes=memory, disk_bytes=shutil.disk_usage(root).total,
                   arch=_ARCH.get(platform.machine().lower(), "amd64"), kernel=platform.release(),
                   os_image=_os_image(), boot_id=_read("/proc/sys/kernel/random/boot_id"),
                   machine_id=_read("/etc/machine-id"))


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.partition("=")[2].strip('"')
    return "Linux"


def resources(machine: Machine, gpus: int) -> dict[str, str]:
    out = {"cpu": str(machine.cpus), "memory": f"{machine.memory_bytes // 1024}Ki",
           "ephemeral-storage": f"{machine.disk_bytes // 1024}Ki", "pods": str(MAX_PODS)}
    if gpus > 0:
        out[GPU_RESOURCE] = str(gpus)
    return out


def node_object(name: str, machine: Machine) -> dict[str, Any]:
    """The Node as the agent registers it (its status is written separately, through nodes/status)."""
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": node_labels(name, machine)},
            "spec": {}}


def node_labels(name: str, machine: Machine) -> dict[str, str]:
    return {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": machine.arch,
            "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": machine.arch, AGENT_LABEL[0]: AGENT_LABEL[1]}


def node_status(name: str, machine: Machine, gpus: int, ip: str, port: int, now: float,
                previous: dict[str, Any] | None = None, ready: bool = True) -> dict[str, Any]:
    """The Node's status: capacity, conditions (heartbeat now; transition times kept while unchanged),
    addresses, where its logs are served, and what it runs."""
    old = {c["type"]: c for c in (previous or {}).get("conditions", [])}

    def condition(ctype: str, value: bool, reason: str, message: str) -> dict[str, Any]:
        status = "True" if value else "False"
        since = old.get(ctype, {}).get("lastTransitionTime") if old.get(ctype, {}).get("status") == status else None
        return {"type": ctype, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": rfc3339(now), "lastTransitionTime": since or rfc3339(now)}

    capacity = resources(machine, gpus)
    return {
        "capacity": capacity, "allocatable": dict(capacity),
        "conditions": [
            condition("MemoryPressure", False, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", False, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", False, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", ready, "KubeletReady" if ready else "KubeletNotReady",
                      "Shipyard node agent is posting ready status" if ready else "Shipyard node agent stopped"),
        ],
        "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "nodeInfo": {
            "machineID": machine.machine_id, "systemUUID": machine.machine_id, "bootID": machine.boot_id,
            "kernelVersion": machine.kernel, "osImage": machine.os_image,
            "containerRuntimeVersion": "shipyard://processes", "kubeletVersion": KUBELET_VERSION,
            "operatingSystem": "linux", "architecture": machine.arch,
        },
    }


def lease_object(name: str, node_uid: str | None, now: float) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": LEASE_NAMESPACE}
    if node_uid:
        # Owned by its Node, as the kubelet's: deleting the Node deletes the Lease.
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}]
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
            "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": micro_time(now)}}


class Heartbeat:
    """Registers the Nodes, then keeps their Leases and statuses fresh until stopped."""

    def __init__(self, api: KubeApi, nodes: list[str], machine: Machine, gpus: int, ip: str, port: int,
                 clock: Callable[[], float] = time.time):
        self._api = api
        self.nodes = list(nodes)
        self._machine = machine
        self._gpus = gpus
        self._ip = ip
        self._port = port
        self._clock = clock
        self._uids: dict[str, str] = {}

    def set_port(self, port: int) -> None:
        """The log server's port, once it listens (daemonEndpoints.kubeletEndpoint.Port)."""
        self._port = port

    def register(self) -> None:
        """Create each Node if absent (keeping an existing one's uid, so its pods stay bound), then report its
        status and take its Lease."""
        for name in self.nodes:
            node = self._api.get("Node", None, name)
            if node is None:
                try:
                    node = self._api.create(node_object(name, self._machine))
                except KubeConflict:  # registered meanwhile by another start of the agent
                    node = self._api.get("Node", None, name) or {}
            else:
                labels = node_labels(name, self._machine)
                if any(node["metadata"].get("labels", {}).get(k) != v for k, v in labels.items()):
                    node = self._api.merge_patch("Node", None, name, {"metadata": {"labels": labels}})
            self._uids[name] = node.get("metadata", {}).get("uid", "")
            self.report(name, node)
            self.renew(name)

    def report(self, name: str, node: dict[str, Any] | None = None, ready: bool = True) -> None:
        if node is None:
            node = self._api.get("Node", None, name) or {}
        status = node_status(name, self._machine, self._gpus, self._ip, self._port, self._clock(),
                             node.get("status"), ready)
        self._api.merge_patch("Node", None, name, {"status": status}, status=True, strategic=True)

    def renew(self, name: str) -> None:
        lease = lease_object(name, self._uids.get(name), self._clock())
        try:
            self._api.merge_patch("Lease", LEASE_NAMESPACE, name, {"spec": lease["spec"]})
        except KubeNotFound:
            self._api.create(lease)

    def run(self, stop: threading.Event) -> None:
        last_status = self._clock()
        while not stop.wait(RENEW_SECONDS):
            try:
                for name in self.nodes:
                    self.renew(name)
                if self._clock() - last_status >= STATUS_SECONDS:
                    for name in self.nodes:
                        self.report(name)
                    last_status = self._clock()
            except KubeNotFound:  # someone deleted a Node: register it again, as a restarted kubelet would
                log.warning("a node was deleted; registering it again")
                try:
                    self.register()
                except KubeError as exc:
                    log.warning("node registration failed: %s", exc)
            except KubeError as exc:  # the API server restarting, a network blip: try again next period
                log.warning("node heartbeat failed: %s", exc)
