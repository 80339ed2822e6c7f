"""Runtimes run the native objects the compiler emits: `local` (processes on this machine) or a cluster."""

from .protocol import LogReader, NativeObject, OwnerKey, Runtime

__all__ = ["LogReader", "NativeObject", "OwnerKey", "Runtime"]
