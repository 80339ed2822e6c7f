"""Reading pods (and Secrets) in Kubernetes wire form: are they ready, where do they serve a named port, what
does a Secret hold.

Protocol-level, like protocol.py: controllers and the gateway's wiring may import it, because it knows only
the wire form, never a runtime. On a cluster a pod listens on podIP:containerPort. The local runtime puts
every pod on 127.0.0.1 and gives each declared containerPort a free host port, reported in `status.hostPorts`
(containerPort → host port); one function reads both, so a controller never asks which runtime it runs on.
"""

from __future__ import annotations

import base64
from typing import Any

HTTP_PORT_NAME = "http"


def is_ready(pod: dict[str, Any]) -> bool:
    """Ready to take traffic: the Ready condition is True and the pod is not terminating."""
    if pod["metadata"].get("deletionTimestamp"):
        return False  # draining: routing must stop whatever the last probe said
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions", []))


def container_port(pod: dict[str, Any], port: int | str) -> int | None:
    """The containerPort a probe or Service names: a number as is, a name looked up in the containers."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for container in pod["spec"].get("containers", []):
        for declared in container.get("ports", []):
            if declared.get("name") == port:
                return int(declared["containerPort"])
    return None


def pod_address(pod: dict[str, Any], port: int | str = HTTP_PORT_NAME) -> tuple[str, int] | None:
    """(host, port) where the pod serves `port` (a containerPort number or name), or None if it has no IP yet
    or no such port."""
    status = pod.get("status", {})
    ip = status.get("podIP")
    number = container_port(pod, port)
    if not ip or number is None:
        return None
    host_port = status.get("hostPorts", {}).get(str(number))
    return ip, int(host_port) if host_port else number


def secret_value(secret: dict[str, Any], key: str) -> str | None:
    """A key of a Secret as the API server returns it (base64 `data`) or as written (`stringData`)."""
    if key in (secret.get("stringData") or {}):
        return str(secret["stringData"][key])
    raw = (secret.get("data") or {}).get(key)
    return base64.b64decode(raw).decode() if raw else None


def secret_bytes(secret: dict[str, Any], key: str) -> bytes | None:
    """A key of a Secret as bytes (what a secret volume's file holds), from `stringData` or base64 `data`."""
    if key in (secret.get("stringData") or {}):
        return str(secret["stringData"][key]).encode()
    raw = (secret.get("data") or {}).get(key)
    return base64.b64decode(raw) if raw is not None else None
