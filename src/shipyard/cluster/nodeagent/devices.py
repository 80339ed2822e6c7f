"""Declared GPUs handed out to pods, as a device plugin would: `nvidia.com/gpu: k` in a container's limits
gets k device indices of its node, exported as CUDA_VISIBLE_DEVICES (and NVIDIA_VISIBLE_DEVICES).

The GPUs are declared (--gpus N), not discovered: on a machine without them the indices only tell a
workload which "devices" it holds; on a machine with them they pin it to real ones. A pod that asks for no GPU
gets CUDA_VISIBLE_DEVICES="" and sees none, as a container without a device sees none. The scheduler has
already checked the node's capacity, so the pool should never run dry; if it does (an agent restarted and
lost count), the pod gets what is left, and a warning.
"""

from __future__ import annotations

import logging
from typing import Any

from .node import GPU_RESOURCE

log = logging.getLogger(__name__)


def requested_gpus(pod: dict[str, Any]) -> int:
    total = 0
    for container in pod["spec"].get("containers", []):
        resources = container.get("resources", {})
        value = resources.get("limits", {}).get(GPU_RESOURCE, resources.get("requests", {}).get(GPU_RESOURCE, 0))
        total += int(value)
    return total


class DevicePool:
    """Device indices per node."""

    def __init__(self, nodes: list[str], count: int):
        self._free = {node: [str(i) for i in range(count)] for node in nodes}
        self._held: dict[str, tuple[str, list[str]]] = {}

    def allocate(self, uid: str, node: str, wanted: int) -> list[str]:
        if uid in self._held:
            return list(self._held[uid][1])
        free = self._free.setdefault(node, [])
        if wanted > len(free):
            log.warning("node %s has %d of the %d GPUs pod %s asked for", node, len(free), wanted, uid)
        taken, self._free[node] = free[:wanted], free[wanted:]
        self._held[uid] = (node, taken)
        return list(taken)

    def claim(self, uid: str, node: str, devices: list[str]) -> None:
        """Record devices a pod already holds (an agent restarted and adopted it)."""
        free = self._free.setdefault(node, [])
        self._free[node] = [d for d in free if d not in devices]
        self._held[uid] = (node, list(devices))

    def release(self, uid: str) -> None:
        held = self._held.pop(uid, None)
        if held is not None:
            node, devices = held
            self._free[node] = sorted(set(self._free.get(node, [])) | set(devices), key=int)
