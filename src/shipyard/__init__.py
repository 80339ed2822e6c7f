"""Shipyard: Kubernetes as the end-to-end home of the LLM lifecycle.

`shipyard.Client` is the SDK. It is imported lazily so that light entry points (the pod shim, workloads)
do not pay for httpx and pydantic at start-up.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import Client

__all__ = ["Client"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from .client import Client

        return Client
    raise AttributeError(f"module 'shipyard' has no attribute {name!r}")
