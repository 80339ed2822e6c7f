"""The ready replicas of an Endpoint or App as gateway upstreams (readiness and addresses: runtime.pods)."""

from __future__ import annotations

from typing import Any

from shipyard.runtime.pods import is_ready, pod_address

from .traffic import Upstream


def ready_upstreams(pods: list[dict[str, Any]]) -> tuple[Upstream, ...]:
    out = []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        where = pod_address(pod) if is_ready(pod) else None
        if where is not None:
            out.append(Upstream(pod["metadata"]["name"], where[0], where[1]))
    return tuple(out)
