"""Which pods may take traffic and where they listen, read from pod objects in Kubernetes wire form."""

from __future__ import annotations

from typing import Any

from .traffic import Upstream

HTTP_PORT_NAME = "http"


def is_ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False  # terminating: drain it, whatever its probe last said
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions", []))


def address(pod: dict[str, Any]) -> tuple[str, int] | None:
    """(host, port) of the container port named `http`. On a cluster that is podIP:containerPort; the local
    runtime gives each pod's ports host ports on 127.0.0.1 (status.hostPorts maps container to host port)."""
    status = pod.get("status", {})
    ip = status.get("podIP")
    if not ip:
        return None
    for container in pod["spec"].get("containers", []):
        for port in container.get("ports", []):
            if port.get("name") == HTTP_PORT_NAME:
                number = int(port["containerPort"])
                host_port = status.get("hostPorts", {}).get(str(number))
                return ip, int(host_port) if host_port else number
    return None


def ready_upstreams(pods: list[dict[str, Any]]) -> tuple[Upstream, ...]:
    out = []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        where = address(pod) if is_ready(pod) else None
        if where is not None:
            out.append(Upstream(pod["metadata"]["name"], where[0], where[1]))
    return tuple(out)
