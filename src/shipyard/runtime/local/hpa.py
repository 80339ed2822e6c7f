"""The subset of the Kubernetes HorizontalPodAutoscaler (autoscaling/v2) that Endpoints and Apps need, as a
pure function.

Supported: scaleTargetRef to a Deployment; `type: Pods` metrics with an AverageValue target (the gateway's
per-upstream in-flight requests or requests/s); min/maxReplicas; `behavior` with stabilization windows,
scaling policies (Pods / Percent per period) and selectPolicy. The arithmetic is the HPA controller's:

- per metric, ratio = (average over ready pods that report the metric) / target; within the 0.1 tolerance
  nothing changes; else desired = ceil(ratio × those pods), which is ceil(sum / target). Pods that are not
  ready (or still pending) are left out, and on a scale-up counted as 0 (they take no traffic yet); ready
  pods with no value count as 0 on a scale-up and as exactly the target on a scale-down, so a missing
  sample never makes the HPA overreact. With several metrics the largest proposal wins.
- stabilization: the recommendation is held between the lowest recommendation of the scale-up window and
  the highest of the scale-down window (so scale-down waits out the window and scale-up does not flap);
  then scaling policies limit the rate, then min/max clamp it. Defaults are Kubernetes' v2 defaults
  (scale-up: no window, +100% or +4 pods per 15 s; scale-down: 300 s window, -100% per 15 s).
- status: currentReplicas, desiredReplicas, currentMetrics, lastScaleTime and the AbleToScale /
  ScalingActive / ScalingLimited conditions with Kubernetes' reasons.

The recommendation and scale-event history live in `HpaMemory`, which the caller keeps between syncs (in
memory, as the Kubernetes controller does). No I/O and no clock: `now` and the metric values are passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from shipyard.resources.quantity import parse_quantity

TOLERANCE = 0.1
DEFAULT_SCALE_UP = {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                    "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                                 {"type": "Percent", "value": 100, "periodSeconds": 15}]}
DEFAULT_SCALE_DOWN = {"stabilizationWindowSeconds": 300, "selectPolicy": "Max",
                      "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}

MetricValues = Mapping[tuple[str, str], float]  # (pod name, metric name) → value; absent: no value


@dataclass
class HpaMemory:
    recommendations: list[tuple[datetime, int]] = field(default_factory=list)
    scale_events: list[tuple[datetime, int]] = field(default_factory=list)  # (when, replica change: + up, - down)


@dataclass
class HpaDecision:
    replicas: int | None  # the target's new spec.replicas; None leaves it alone
    status: dict[str, Any]


class MetricError(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def pods_metric_replicas(metric: dict[str, Any], pods: list[dict[str, Any]], values: MetricValues | None,
                         current: int) -> tuple[int, float]:
    """Kubernetes' calcPlainMetricReplicas for one `type: Pods` metric: (proposed replicas, current average)."""
    name = metric["pods"]["metric"]["name"]
    target_spec = metric["pods"]["target"]
    if target_spec.get("type", "AverageValue") != "AverageValue" or "averageValue" not in target_spec:
        raise MetricError("InvalidMetricSourceType", f"pods metric {name} needs an AverageValue target")
    target = float(parse_quantity(target_spec["averageValue"]))
    if target <= 0:
        raise MetricError("InvalidMetricSourceType", f"pods metric {name} needs a positive target")
    if values is None:
        raise MetricError("FailedGetPodsMetric",
                          f"unable to get metric {name}: no pod metrics source is configured")
    counted = [p for p in pods if not p["metadata"].get("deletionTimestamp") and p["status"]["phase"] != "Failed"]
    unready = [p for p in counted if p["status"]["phase"] == "Pending" or not _ready(p)]
    ready = [p for p in counted if p not in unready]
    sample = {p["metadata"]["name"]: values[(p["metadata"]["name"], name)] for p in ready
              if (p["metadata"]["name"], name) in values}
    missing = [p["metadata"]["name"] for p in ready if p["metadata"]["name"] not in sample]
    if not sample:
        raise MetricError("FailedGetPodsMetric", f"unable to get metric {name}: did not receive metrics for "
                                                 "targeted pods (pods might be unready)")
    average = sum(sample.values()) / len(sample)
    ratio = average / target
    rebalance_unready = bool(unready) and ratio > 1.0
    if not rebalance_unready and not missing:
        if abs(1.0 - ratio) <= TOLERANCE:
            return current, average
        return math.ceil(ratio * len(sample)), average
    if ratio < 1.0:
        sample.update({pod: target for pod in missing})
    elif ratio > 1.0:
        sample.update({pod: 0.0 for pod in missing})
    if rebalance_unready:
        sample.update({p["metadata"]["name"]: 0.0 for p in unready})
    new_ratio = sum(sample.values()) / len(sample) / target
    if abs(1.0 - new_ratio) <= TOLERANCE or (ratio < 1.0 < new_ratio) or (new_ratio < 1.0 < ratio):
        return current, average
    proposed = math.ceil(new_ratio * len(sample))
    if (new_ratio < 1.0 and proposed > current) or (new_ratio > 1.0 and proposed < current):
        return current, average
    return proposed, average


def _quantity(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"


def _behavior(hpa: dict[str, Any], direction: str) -> dict[str, Any]:
    default = DEFAULT_SCALE_UP if direction == "scaleUp" else DEFAULT_SCALE_DOWN
    given = hpa["spec"].get("behavior", {}).get(direction) or {}
    return {**default, **given}


def _changed_within(memory: HpaMemory, period: float, now: datetime, up: bool) -> int:
    return sum(abs(change) for when, change in memory.scale_events
               if (now - when).total_seconds() < period and (change > 0) == up)


def _rate_limit(rules: dict[str, Any], current: int, memory: HpaMemory, now: datetime, up: bool) -> int:
    """calculateScaleUpLimitWithScalingRules / calculateScaleDownLimitWithBehaviors."""
    if rules.get("selectPolicy") == "Disabled":
        return current
    pick_largest_change = rules.get("selectPolicy", "Max") == "Max"
    proposals = []
    for policy in rules.get("policies", []):
        period = float(policy["periodSeconds"])
        start = current - _changed_within(memory, period, now, True) + _changed_within(memory, period, now, False)
        value = int(policy["value"])
        if policy["type"] == "Pods":
            proposals.append(start + value if up else start - value)
        elif up:
            proposals.append(math.ceil(start * (1 + value / 100)))
        else:
            proposals.append(int(start * (1 - value / 100)))
    if not proposals:
        return current
    if up:
        return max(proposals) if pick_largest_change else min(proposals)
    return min(proposals) if pick_largest_change else max(proposals)


def _stabilize(hpa: dict[str, Any], memory: HpaMemory, current: int, desired: int, now: datetime) -> int:
    """stabilizeRecommendationWithBehaviors; records the unstabilized recommendation."""
    up_window = float(_behavior(hpa, "scaleUp")["stabilizationWindowSeconds"])
    down_window = float(_behavior(hpa, "scaleDown")["stabilizationWindowSeconds"])
    up_recommendation = down_recommendation = desired
    for when, recommendation in memory.recommendations:
        age = (now - when).total_seconds()
        if age < up_window:
            up_recommendation = min(up_recommendation, recommendation)
        if age < down_window:
            down_recommendation = max(down_recommendation, recommendation)
    keep = max(up_window, down_window)
    memory.recommendations = [(w, r) for w, r in memory.recommendations if (now - w).total_seconds() < keep]
    memory.recommendations.append((now, desired))
    return min(max(current, up_recommendation), down_recommendation)


def _set(conditions: list[dict[str, Any]], type_: str, value: str, reason: str, message: str, now: str) -> None:
    old = next((c for c in conditions if c["type"] == type_), None)
    transition = old["lastTransitionTime"] if old is not None and old["status"] == value else now
    new = {"type": type_, "status": value, "lastTransitionTime": transition, "reason": reason, "message": message}
    if old is None:
        conditions.append(new)
    else:
        conditions[conditions.index(old)] = new


def sync_hpa(hpa: dict[str, Any], target: dict[str, Any] | None, pods: list[dict[str, Any]],
             values: MetricValues | None, memory: HpaMemory, now: datetime) -> HpaDecision:
    """One HPA reconcile. `pods` are the target's pods; `values` None means no metrics source at all."""
    spec, previous = hpa["spec"], hpa.get("status", {})
    now_s = now.isoformat()
    conditions = [dict(c) for c in previous.get("conditions", [])]
    status: dict[str, Any] = {k: v for k, v in previous.items() if k in ("lastScaleTime", "currentMetrics")}
    status.update({"observedGeneration": hpa["metadata"].get("generation", 1), "conditions": conditions})
    ref = spec["scaleTargetRef"]
    if target is None or ref.get("kind") != "Deployment":
        _set(conditions, "AbleToScale", "False", "FailedGetScale",
             f"the HPA controller was unable to get the target's current scale: {ref.get('kind')} "
             f"{ref.get('name')} not found", now_s)
        status.update({"currentReplicas": previous.get("currentReplicas", 0),
                       "desiredReplicas": previous.get("desiredReplicas", 0)})
        return HpaDecision(None, status)
    current = int(target["spec"].get("replicas", 1))
    low, high = int(spec.get("minReplicas", 1)), int(spec["maxReplicas"])
    _set(conditions, "AbleToScale", "True", "SucceededGetScale",
         "the HPA controller was able to get the target's current scale", now_s)
    if current == 0 and low != 0:
        _set(conditions, "ScalingActive", "False", "ScalingDisabled",
             "scaling is disabled since the replica count of the target is zero", now_s)
        desired = 0
    elif current > high:
        desired = high
    elif current < low:
        desired = low
    else:
        proposals: list[tuple[int, str]] = []
        metrics: list[dict[str, Any]] = []
        error: MetricError | None = None
        for metric in spec.get("metrics", []):
            try:
                if metric.get("type") != "Pods":
                    raise MetricError("InvalidMetricSourceType",
                                      f"the local runtime supports only Pods metrics, not {metric.get('type')}")
                proposed, average = pods_metric_replicas(metric, pods, values, current)
            except MetricError as exc:
                error = error or exc
                continue
            name = metric["pods"]["metric"]["name"]
            proposals.append((proposed, name))
            metrics.append({"type": "Pods", "pods": {"metric": {"name": name},
                                                      "current": {"averageValue": _quantity(average)}}})
        if not proposals:
            error = error or MetricError("InvalidMetricSourceType", "the HPA has no metrics to scale on")
            _set(conditions, "ScalingActive", "False", error.reason,
                 f"the HPA was unable to compute the replica count: {error}", now_s)
            status.update({"currentReplicas": current, "desiredReplicas": previous.get("desiredReplicas", current)})
            return HpaDecision(None, status)
        status["currentMetrics"] = metrics
        recommended, metric_name = max(proposals)
        _set(conditions, "ScalingActive", "True", "ValidMetricFound",
             f"the HPA was able to successfully calculate a replica count from pods metric {metric_name}", now_s)
        desired = _normalize(hpa, memory, conditions, current, recommended, low, high, now)
    if desired != current:
        _set(conditions, "AbleToScale", "True", "SucceededRescale",
             f"the HPA controller was able to update the target scale to {desired}", now_s)
        status["lastScaleTime"] = now_s
        memory.scale_events.append((now, desired - current))
        longest = max([float(p["periodSeconds"]) for d in ("scaleUp", "scaleDown")
                       for p in _behavior(hpa, d).get("policies", [])] or [0.0])
        memory.scale_events = [(w, c) for w, c in memory.scale_events if (now - w).total_seconds() < longest]
    status.update({"currentReplicas": current, "desiredReplicas": desired})
    return HpaDecision(desired if desired != current else None, status)


def _normalize(hpa: dict[str, Any], memory: HpaMemory, conditions: list[dict[str, Any]], current: int,
               recommended: int, low: int, high: int, now: datetime) -> int:
    """normalizeDesiredReplicasWithBehaviors: stabilize, then rate-limit and clamp, setting the conditions."""
    now_s = now.isoformat()
    stabilized = _stabilize(hpa, memory, current, recommended, now)
    if stabilized != recommended:
        if recommended >= current:
            _set(conditions, "AbleToScale", "True", "ScaleUpStabilized",
                 "recent recommendations were lower than current one, applying the lowest recent recommendation",
                 now_s)
        else:
            _set(conditions, "AbleToScale", "True", "ScaleDownStabilized",
                 "recent recommendations were higher than current one, applying the highest recent recommendation",
                 now_s)
    else:
        _set(conditions, "AbleToScale", "True", "ReadyForNewScale", "recommended size matches current size", now_s)
    desired, reason, message = stabilized, "DesiredWithinRange", "the desired count is within the acceptable range"
    if stabilized > current:
        limit = max(_rate_limit(_behavior(hpa, "scaleUp"), current, memory, now, up=True), current)
        if high > limit:
            bound, why, text = limit, "ScaleUpLimit", "the desired replica count is increasing faster than the " \
                                                      "maximum scale rate"
        else:
            bound, why, text = high, "TooManyReplicas", "the desired replica count is more than the maximum " \
                                                        "replica count"
        if stabilized > bound:
            desired, reason, message = bound, why, text
    elif stabilized < current:
        limit = min(_rate_limit(_behavior(hpa, "scaleDown"), current, memory, now, up=False), current)
        if low < limit:
            bound, why, text = limit, "ScaleDownLimit", "the desired replica count is decreasing faster than " \
                                                        "the maximum scale rate"
        else:
            bound, why, text = low, "TooFewReplicas", "the desired replica count is less than the minimum " \
                                                      "replica count"
        if stabilized < bound:
            desired, reason, message = bound, why, text
    _set(conditions, "ScalingLimited", "True" if desired != stabilized else "False", reason, message, now_s)
    return desired
