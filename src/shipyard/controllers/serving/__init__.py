"""Endpoints and Apps: a Deployment behind the gateway, autoscaled by the HPA and scaled to zero by us."""

from .controller import ServingController
from .traffic import RouteTarget, Traffic, TrafficStats, Upstream

__all__ = ["RouteTarget", "ServingController", "Traffic", "TrafficStats", "Upstream"]
