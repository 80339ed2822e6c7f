"""The replicas of an Endpoint or App that take traffic, as gateway upstreams (readiness and addresses come
from runtime.pods).

Normally only ready pods. But when *every* replica fails its readiness probe while still running — an
overloaded server whose /health answers too late, not a dead one — routing to none turns a slow service
into a 503 for everyone. Then, like Envoy's panic threshold, the replicas that were routed last time and
have not restarted since keep their traffic: a slow answer beats a refusal. A replica that never became
ready, is terminating or has restarted is never routed this way.
"""

from __future__ import annotations

from typing import Any

from shipyard.runtime.pods import is_ready, pod_address

from .traffic import RouteTarget, Upstream

Routed = dict[str, int]  # pod name → its container restart count when it was routed


def _restarts(pod: dict[str, Any]) -> int:
    return sum(int(cs.get("restartCount", 0)) for cs in pod.get("status", {}).get("containerStatuses", []))


def _upstream(pod: dict[str, Any]) -> Upstream | None:
    where = pod_address(pod)
    return Upstream(pod["metadata"]["name"], where[0], where[1]) if where is not None else None


def routable_upstreams(pods: list[dict[str, Any]], routed_before: Routed) -> tuple[tuple[Upstream, ...], Routed, bool]:
    """(upstreams, what to remember as routed, whether this is the panic fallback)."""
    ordered = sorted(pods, key=lambda p: p["metadata"]["name"])
    ready = [(p, u) for p in ordered if is_ready(p) and (u := _upstream(p)) is not None]
    if ready:
        return tuple(u for _, u in ready), {p["metadata"]["name"]: _restarts(p) for p, _ in ready}, False
    kept = [(p, u) for p in ordered
            if p["metadata"]["name"] in routed_before and routed_before[p["metadata"]["name"]] == _restarts(p)
            and not p["metadata"].get("deletionTimestamp") and p.get("status", {}).get("phase") == "Running"
            and (u := _upstream(p)) is not None]
    return tuple(u for _, u in kept), {p["metadata"]["name"]: _restarts(p) for p, _ in kept}, bool(kept)


def serving_route(resource: Any, upstreams: tuple[Upstream, ...]) -> RouteTarget:
    """The gateway's route of an Endpoint or App: one definition for its controller and for the gateway
    replicas that build their routes from the API on a cluster (shipyard.gateway_cluster)."""
    return RouteTarget(project=resource.metadata.namespace, name=resource.metadata.name, kind=resource.kind,
                       public=resource.spec.public, upstreams=upstreams,
                       scalable_from_zero=resource.spec.scale_to_zero is not None)
