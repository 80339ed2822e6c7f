"""What this machine can run: CPU, memory and GPUs, and whether a gang of pods fits in what is free.

Requests are counted here (limits are enforced by each pod's cgroup where the machine allows it: cgroups.py);
a gang is placed whole or not at all, because half a DDP gang holds resources while waiting forever for the rest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from shipyard.resources.quantity import parse_quantity

GPU = "nvidia.com/gpu"


@dataclass
class Capacity:
    cpu: Decimal
    memory: Decimal
    gpus: list[str] = field(default_factory=list)

    @classmethod
    def detect(cls) -> "Capacity":
        cpu = Decimal(os.environ.get("SHIPYARD_LOCAL_CPU") or os.cpu_count() or 1)
        memory = parse_quantity(os.environ["SHIPYARD_LOCAL_MEMORY"]) if os.environ.get("SHIPYARD_LOCAL_MEMORY") \
            else Decimal(_meminfo_bytes())
        return cls(cpu=cpu, memory=memory, gpus=_detect_gpus())


def _meminfo_bytes() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def _detect_gpus() -> list[str]:
    if "SHIPYARD_LOCAL_GPUS" in os.environ:
        count = int(os.environ["SHIPYARD_LOCAL_GPUS"] or 0)
        return [str(i) for i in range(count)]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


@dataclass(frozen=True)
class Request:
    cpu: Decimal = Decimal(0)
    memory: Decimal = Decimal(0)
    gpus: int = 0

    @classmethod
    def of_pod(cls, pod: dict[str, Any]) -> "Request":
        cpu = memory = Decimal(0)
        gpus = 0
        for container in pod["spec"]["containers"]:
            res = container.get("resources", {})
            amounts = {**res.get("limits", {}), **res.get("requests", {})}
            cpu += parse_quantity(amounts.get("cpu", "0"))
            memory += parse_quantity(amounts.get("memory", "0"))
            gpus += int(parse_quantity(amounts.get(GPU, "0")))
        return cls(cpu, memory, gpus)


@dataclass
class Allocation:
    """Free resources while placing pods, so a gang's pods are checked against each other too."""

    cpu: Decimal
    memory: Decimal
    free_gpus: list[str]

    @classmethod
    def free(cls, capacity: Capacity, running: list[tuple[Request, list[str]]]) -> "Allocation":
        used_gpus = {g for _, gpus in running for g in gpus}
        return cls(
            cpu=capacity.cpu - sum((r.cpu for r, _ in running), Decimal(0)),
            memory=capacity.memory - sum((r.memory for r, _ in running), Decimal(0)),
            free_gpus=[g for g in capacity.gpus if g not in used_gpus],
        )

    def take(self, request: Request) -> list[str] | None:
        """Reserve `request`; the GPUs assigned, or None (and nothing reserved) if it does not fit."""
        if request.cpu > self.cpu or request.memory > self.memory or request.gpus > len(self.free_gpus):
            return None
        self.cpu -= request.cpu
        self.memory -= request.memory
        gpus, self.free_gpus = self.free_gpus[:request.gpus], self.free_gpus[request.gpus:]
        return gpus


def explain(requests: list[Request], capacity: Capacity, free: "Allocation") -> str:
    total = Request(sum((r.cpu for r in requests), Decimal(0)), sum((r.memory for r in requests), Decimal(0)),
                    sum(r.gpus for r in requests))
    parts = []
    if total.cpu > free.cpu:
        parts.append(f"{_num(total.cpu)} cpu requested, {_num(free.cpu)} of {_num(capacity.cpu)} free")
    if total.memory > free.memory:
        parts.append(f"{_gib(total.memory)} memory requested, {_gib(free.memory)} of {_gib(capacity.memory)} free")
    if total.gpus > len(free.free_gpus):
        parts.append(f"{total.gpus} GPU requested, {len(free.free_gpus)} of {len(capacity.gpus)} free")
    return f"{len(requests)} pod(s) do not fit on this machine: " + "; ".join(parts or ["insufficient resources"])


def _num(d: Decimal) -> str:
    return f"{d.normalize():f}"


def _gib(d: Decimal) -> str:
    return f"{d / (1 << 30):.1f}Gi"
