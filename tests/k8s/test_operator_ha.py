"""Two operator processes on the real Lease API, each authenticated as the chart's ServiceAccount (so the chart's
RBAC is proven sufficient, not the admin's): one leads and reconciles, the other stands by, not Ready; when the
leader stops it gives its Lease back and the standby takes over, adopts what runs as it is (no duplicate Job, no
restart) and goes on reconciling."""

from __future__ import annotations

import pytest

from .conftest import SYSTEM_NAMESPACE, wait_for

pytestmark = pytest.mark.timeout(300)
SLEEPER = ["python", "-c", "import time\nwhile True: time.sleep(1)"]


def holder(admin) -> str | None:
    lease = admin.get("Lease", SYSTEM_NAMESPACE, "shipyard-operator")
    return lease and lease["spec"].get("holderIdentity")


def test_a_standby_takes_over_when_the_leader_steps_down(admin, operator, namespace):
    leader = operator.current
    assert holder(admin) == leader.identity
    # A gang running under the first leader, which the second must adopt as it is.
    admin.create({"apiVersion": "shipyard.dev/v1alpha1", "kind": "TrainingJob",
                  "metadata": {"name": "before-failover", "namespace": namespace},
                  "spec": {"replicas": 2, "command": SLEEPER, "resources": {"cpu": "100m", "memory": "64Mi"}}})
    wait_for(lambda: (admin.get("TrainingJob", namespace, "before-failover") or {}).get("status", {}).get("phase")
             == "Running", timeout=90, what="the first gang running")
    job_before = admin.get("Job", namespace, "before-failover")
    pods_before = {p["metadata"]["uid"] for p in admin.list("Pod", namespace, {"shipyard.dev/name": "before-failover"})}

    standby = operator.start(f"operator-standby-{len(operator.processes)}")
    # The standby serves (its API answers) but is not Ready: only the Lease holder reconciles.
    wait_for(lambda: _answers(standby), timeout=60, what="the standby's API to answer")
    assert not standby.leading()
    assert holder(admin) == leader.identity

    assert leader.stop() == 0  # SIGTERM: it releases the Lease on its way out
    wait_for(standby.leading, timeout=60, what="the standby to take over")
    operator.current = standby
    assert holder(admin) == standby.identity

    # The new leader reconciles: a TrainingJob created now gets its Job.
    admin.create({"apiVersion": "shipyard.dev/v1alpha1", "kind": "TrainingJob",
                  "metadata": {"name": "after-failover", "namespace": namespace},
                  "spec": {"replicas": 1, "command": SLEEPER, "resources": {"cpu": "100m", "memory": "64Mi"}}})
    wait_for(lambda: admin.get("Job", namespace, "after-failover"), timeout=60, what="the new leader's Job")
    admin.delete("TrainingJob", namespace, "after-failover")

    # ...and adopted the running gang without duplicating or restarting anything.
    job_after = admin.get("Job", namespace, "before-failover")
    assert job_after["metadata"]["uid"] == job_before["metadata"]["uid"]
    assert job_after["metadata"]["generation"] == job_before["metadata"]["generation"]
    assert {p["metadata"]["uid"] for p in admin.list("Pod", namespace, {"shipyard.dev/name": "before-failover"})} \
        == pods_before
    status = admin.get("TrainingJob", namespace, "before-failover")["status"]
    assert status["phase"] == "Running" and status.get("restarts", 0) == 0


def _answers(process) -> bool:
    import httpx

    process.check_alive()
    try:
        httpx.get(f"{process.api}/healthz", timeout=2)
        return True
    except httpx.HTTPError:
        return False
