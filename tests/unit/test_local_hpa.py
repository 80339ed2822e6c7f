"""The local HorizontalPodAutoscaler policy (runtime/local/hpa.py), with an injected clock."""

from datetime import datetime, timedelta, timezone

import pytest

from shipyard.runtime.local.hpa import HpaMemory, pods_metric_replicas, sync_hpa

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
METRIC = "shipyard_gateway_upstream_in_flight"


def hpa(low=1, high=5, target="2", up_window=0, down_window=60, **behavior):
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default", "uid": "h", "generation": 1},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": low, "maxReplicas": high,
                     "metrics": [{"type": "Pods", "pods": {"metric": {"name": METRIC},
                                                           "target": {"type": "AverageValue", "averageValue": target}}}],
                     "behavior": {"scaleUp": {"stabilizationWindowSeconds": up_window, **behavior.get("up", {})},
                                  "scaleDown": {"stabilizationWindowSeconds": down_window,
                                                **behavior.get("down", {})}}},
            "status": {}}


def deployment(replicas):
    return {"metadata": {"name": "web", "namespace": "default"}, "spec": {"replicas": replicas}}


def pod(name, ready=True, phase="Running", deleting=False):
    meta = {"name": name, "namespace": "default"}
    if deleting:
        meta["deletionTimestamp"] = NOW.isoformat()
    return {"metadata": meta, "status": {"phase": phase, "conditions": [
        {"type": "Ready", "status": "True" if ready else "False"}]}}


def values(**per_pod):
    return {(name, METRIC): v for name, v in per_pod.items()}


def cond(status, type_):
    c = next(c for c in status["conditions"] if c["type"] == type_)
    return c["status"], c["reason"]


METRIC_SPEC = hpa()["spec"]["metrics"][0]


@pytest.mark.parametrize("pods,vals,current,expected", [
    ([pod("a")], values(a=6), 1, 3),                          # ceil(6 / 2)
    ([pod("a"), pod("b")], values(a=2.1, b=2.1), 2, 2),       # within the 0.1 tolerance
    ([pod("a"), pod("b")], values(a=0, b=0), 2, 0),           # min/max clamp comes later
    ([pod("a"), pod("b")], values(a=5, b=4), 2, 5),           # ceil(9 / 2)
    # A pod not ready yet is left out of the average and counted as 0 on a scale-up: ceil(6 / 2) = 3.
    ([pod("a"), pod("b", ready=False)], values(a=6), 2, 3),
    # A ready pod with no sample: 0 on a scale-up, the target on a scale-down.
    ([pod("a"), pod("b")], values(a=8), 2, 4),
    ([pod("a"), pod("b"), pod("c")], values(a=0, b=0), 3, 1),  # c counts as the target: ceil((0 + 0 + 2) / 2)
    ([pod("a"), pod("gone", deleting=True), pod("dead", phase="Failed")], values(a=6, gone=100, dead=100), 1, 3),
])
def test_pods_metric_replicas(pods, vals, current, expected):
    proposed, _ = pods_metric_replicas(METRIC_SPEC, pods, vals, current)
    assert proposed == expected


def test_no_sample_from_any_ready_pod_is_a_metric_error():
    with pytest.raises(Exception, match="did not receive metrics"):
        pods_metric_replicas(METRIC_SPEC, [pod("a", ready=False)], values(a=5), 1)


def test_scale_up_sets_replicas_status_and_conditions():
    h = hpa()
    d = sync_hpa(h, deployment(1), [pod("a")], values(a=6), HpaMemory(), NOW)
    assert d.replicas == 3
    assert d.status["currentReplicas"] == 1 and d.status["desiredReplicas"] == 3
    assert d.status["lastScaleTime"] == NOW.isoformat()
    assert d.status["currentMetrics"] == [{"type": "Pods", "pods": {"metric": {"name": METRIC},
                                                                   "current": {"averageValue": "6"}}}]
    assert cond(d.status, "AbleToScale") == ("True", "SucceededRescale")
    assert cond(d.status, "ScalingActive") == ("True", "ValidMetricFound")
    assert cond(d.status, "ScalingLimited") == ("False", "DesiredWithinRange")


def test_max_replicas_limits_and_says_so():
    d = sync_hpa(hpa(high=2), deployment(1), [pod("a")], values(a=20), HpaMemory(), NOW)
    assert d.replicas == 2 and cond(d.status, "ScalingLimited") == ("True", "TooManyReplicas")


def test_scale_down_waits_for_the_stabilization_window():
    h, memory = hpa(down_window=60), HpaMemory()
    pods = [pod("a"), pod("b"), pod("c")]
    up = sync_hpa(h, deployment(1), [pod("a")], values(a=6), memory, NOW)
    assert up.replicas == 3
    h["status"] = up.status
    quiet = values(a=0, b=0, c=0)
    for seconds in (10, 30, 59):
        held = sync_hpa(h, deployment(3), pods, quiet, memory, NOW + timedelta(seconds=seconds))
        assert held.replicas is None, seconds
        assert cond(held.status, "AbleToScale") == ("True", "ScaleDownStabilized")
    down = sync_hpa(h, deployment(3), pods, quiet, memory, NOW + timedelta(seconds=61))
    assert down.replicas == 1
    assert cond(down.status, "ScalingLimited") == ("True", "TooFewReplicas")  # wanted 0, min is 1


def test_scale_up_window_takes_the_lowest_recent_recommendation():
    h, memory = hpa(up_window=30), HpaMemory()
    first = sync_hpa(h, deployment(1), [pod("a")], values(a=2), memory, NOW)  # recommends 1
    assert first.replicas is None
    burst = sync_hpa(h, deployment(1), [pod("a")], values(a=8), memory, NOW + timedelta(seconds=5))
    assert burst.replicas is None and cond(burst.status, "AbleToScale") == ("True", "ScaleUpStabilized")
    later = sync_hpa(h, deployment(1), [pod("a")], values(a=8), memory, NOW + timedelta(seconds=31))
    assert later.replicas == 4


def test_scale_up_rate_policy_limits_the_step():
    h = hpa(high=20, up={"policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]})
    memory = HpaMemory()
    d = sync_hpa(h, deployment(1), [pod("a")], values(a=20), memory, NOW)
    assert d.replicas == 2 and cond(d.status, "ScalingLimited") == ("True", "ScaleUpLimit")
    again = sync_hpa(h, deployment(2), [pod("a"), pod("b")], values(a=20, b=20), memory, NOW + timedelta(seconds=10))
    assert again.replicas is None  # the one pod this period allows was already added
    assert sync_hpa(h, deployment(2), [pod("a"), pod("b")], values(a=20, b=20), memory,
                    NOW + timedelta(seconds=61)).replicas == 3


def test_disabled_scale_down_never_scales_down():
    h = hpa(down_window=0, down={"selectPolicy": "Disabled"})
    d = sync_hpa(h, deployment(3), [pod("a"), pod("b"), pod("c")], values(a=0, b=0, c=0), HpaMemory(), NOW)
    assert d.replicas is None and cond(d.status, "ScalingLimited") == ("True", "ScaleDownLimit")


def test_no_metrics_source_reports_failed_get_pods_metric_and_does_nothing():
    d = sync_hpa(hpa(), deployment(2), [pod("a"), pod("b")], None, HpaMemory(), NOW)
    assert d.replicas is None
    assert cond(d.status, "ScalingActive") == ("False", "FailedGetPodsMetric")


def test_min_and_max_are_enforced_without_metrics():
    assert sync_hpa(hpa(low=2), deployment(1), [pod("a")], None, HpaMemory(), NOW).replicas == 2
    assert sync_hpa(hpa(high=3), deployment(6), [], None, HpaMemory(), NOW).replicas == 3


def test_target_at_zero_replicas_disables_scaling():
    d = sync_hpa(hpa(), deployment(0), [], values(), HpaMemory(), NOW)
    assert d.replicas is None and cond(d.status, "ScalingActive") == ("False", "ScalingDisabled")


def test_missing_target_cannot_scale():
    d = sync_hpa(hpa(), None, [], values(), HpaMemory(), NOW)
    assert d.replicas is None and cond(d.status, "AbleToScale") == ("False", "FailedGetScale")


def test_unsupported_metric_type_is_reported():
    h = hpa()
    h["spec"]["metrics"] = [{"type": "Resource", "resource": {"name": "cpu"}}]
    d = sync_hpa(h, deployment(2), [pod("a"), pod("b")], values(), HpaMemory(), NOW)
    assert d.replicas is None and cond(d.status, "ScalingActive") == ("False", "InvalidMetricSourceType")


def test_fractional_average_is_reported_as_a_milli_quantity():
    d = sync_hpa(hpa(target="1"), deployment(2), [pod("a"), pod("b")], values(a=1, b=2), HpaMemory(), NOW)
    assert d.status["currentMetrics"][0]["pods"]["current"]["averageValue"] == "1500m"
    assert d.replicas == 3
