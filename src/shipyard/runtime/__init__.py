"""Runtimes run the native objects the compiler emits: `local` (processes on this machine) or a cluster."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .protocol import LogRangeReader, LogReader, NativeObject, OwnerKey, PodMetrics, Runtime

__all__ = ["LogRangeReader", "LogReader", "NativeObject", "OwnerKey", "PodMetrics", "Runtime"]


def __getattr__(name: str):
    # Lazy (PEP 562): every pod's shim imports this package on its way to `runtime.local.shim`, and the
    # protocol module pulls in typing machinery that would add tens of milliseconds to each pod start.
    if name in __all__:
        from . import protocol

        return getattr(protocol, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
