"""Process-group plumbing shared by the built-in workloads: one place that knows torchrun's environment.

A workload runs three ways and must behave the same: under `torchrun` (which sets RANK/WORLD_SIZE/LOCAL_RANK
per worker), as one plain process per replica (the platform sets RANK/WORLD_SIZE/MASTER_* itself, see
docs/contracts.md), or alone with nothing set. Everything here degrades to a no-op in the last case, so the
training code has no `if distributed` branches of its own.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    master_addr: str | None = None
    master_port: int | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _int(environ: dict[str, str] | os._Environ, key: str, default: int) -> int:
    value = environ.get(key, "")
    return int(value) if value.strip() else default


def read_env(environ: dict[str, str] | os._Environ | None = None) -> DistEnv:
    environ = os.environ if environ is None else environ
    world_size = _int(environ, "WORLD_SIZE", 1)
    rank = _int(environ, "RANK", 0)
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world_size}")
    port = environ.get("MASTER_PORT", "")
    return DistEnv(
        rank=rank,
        world_size=world_size,
        local_rank=_int(environ, "LOCAL_RANK", 0),
        # torchrun sets LOCAL_WORLD_SIZE; one plain process per replica means one per node.
        local_world_size=_int(environ, "LOCAL_WORLD_SIZE", 1),
        master_addr=environ.get("MASTER_ADDR") or None,
        master_port=int(port) if port.strip() else None,
    )


def configure_threads(env: DistEnv) -> int:
    """Split the CPUs between the ranks of this node unless OMP_NUM_THREADS says otherwise.

    Two ranks with a full thread pool each on two cores run ~3x slower than one thread each (measured), so
    the default must never oversubscribe. An explicit OMP_NUM_THREADS (torchrun and the platform set it) wins.
    """
    if not os.environ.get("OMP_NUM_THREADS"):
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, cpus // max(1, env.local_world_size)))
    return torch.get_num_threads()


def choose_device(env: DistEnv) -> torch.device:
    if torch.cuda.is_available():
        device = torch.device("cuda", env.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def init(env: DistEnv, device: torch.device, timeout_s: float = 600.0) -> None:
    """Join the process group (gloo on CPU, nccl on CUDA); a no-op for a single process.

    The timeout bounds every collective, so a peer that died without closing its sockets turns into an error
    (and a gang restart) instead of a hang. It must cover rank 0's one-off work that others wait for
    (tokenizer training), hence minutes, not seconds.
    """
    if not env.distributed or dist.is_initialized():
        return
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={env.world_size} but {', '.join(missing)} is not set: launch with "
                           "torchrun or set MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method="env://", rank=env.rank, world_size=env.world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))


def destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(device: torch.device) -> None:
    if dist.is_initialized():
        # nccl needs to know the device, or it guesses one and may create a context on GPU 0 for every rank.
        dist.barrier(device_ids=[device.index] if device.type == "cuda" else None)


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few floats over all ranks in one collective (float64: exact for counts, stable for losses)."""
    if not dist.is_initialized():
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_object(obj: Any, src: int = 0, device: torch.device | None = None) -> Any:
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=device if device is not None and device.type == "cuda" else None)
    return box[0]


def broadcast_tensor(tensor: torch.Tensor | None, src: int, device: torch.device) -> torch.Tensor:
    """Rank `src`'s CPU tensor on every rank (shape and dtype travel first, so others pass None)."""
    if not dist.is_initialized():
        assert tensor is not None
        return tensor
    meta = broadcast_object(None if tensor is None else (tuple(tensor.shape), tensor.dtype), src, device)
    shape, dtype = meta
    # nccl moves only CUDA tensors, gloo CPU ones: stage through `device`.
    buf = (tensor if tensor is not None else torch.empty(shape, dtype=dtype)).to(device)
    dist.broadcast(buf, src=src)
    return buf.cpu()


def all_gather_object(obj: Any) -> list[Any]:
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def autocast(device: torch.device, bf16: bool | None = None) -> contextlib.AbstractContextManager:
    """bf16 autocast: on by default on a GPU that supports it, on a CPU only when asked (bf16=True).

    On CPU bf16 is faster only on chips with AVX-512 BF16/AMX, and it changes numerics, so it is opt-in there.
    bf16=False turns it off everywhere. bf16 needs no loss scaler (unlike fp16), so callers need nothing else.
    """
    if device.type == "cuda":
        enabled = bf16 is not False and torch.cuda.is_bf16_supported()
    else:
        enabled = bf16 is True
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class StopFlag:
    """SIGTERM (and SIGINT) set a flag instead of killing the process.

    Stopping must happen between steps and at the same step on every rank — otherwise a rank leaves a
    collective its peers are waiting in. The training loop folds `requested` into a per-step all-reduce.
    Install it after the rendezvous, so a SIGTERM while still waiting for peers ends the process at once.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, _frame: object) -> None:
        self.signum = signum

    def install(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> "StopFlag":
        for sig in signals:
            signal.signal(sig, self._handle)
        return self

    @contextlib.contextmanager
    def installed(self) -> Iterator["StopFlag"]:
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        self.install()
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
