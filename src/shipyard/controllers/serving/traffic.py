"""What the serving controller needs from the gateway, as a protocol: publish routes, read traffic.

The gateway itself lives elsewhere (`shipyard.gateway`); the composition root adapts it to this protocol,
so controllers never import it — the same rule that keeps them behind the Store and Runtime protocols.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Upstream:
    id: str  # the pod's name: the gateway's per-upstream metrics are keyed by it, and so is the HPA's input
    host: str
    port: int


@dataclass(frozen=True)
class RouteTarget:
    project: str
    name: str
    kind: str
    public: bool
    upstreams: tuple[Upstream, ...]  # ready replicas only
    scalable_from_zero: bool  # hold requests (and ask for activation) when there are no upstreams
    keep_prefix: bool = False  # forward /{project}/{name} too (servers told their base path, e.g. Jupyter)


@dataclass(frozen=True)
class TrafficStats:
    in_flight: int
    queued: int  # requests the gateway holds because no replica is ready
    requests_per_second: float
    last_request_at: float | None  # epoch seconds


class Traffic(Protocol):
    def set_route(self, route: RouteTarget) -> None: ...

    def remove_route(self, project: str, name: str) -> None: ...

    def stats(self, project: str, name: str) -> TrafficStats | None: ...

    def url(self, project: str, name: str) -> str:
        """The address clients use for this route (the gateway's external URL plus the route's prefix)."""
