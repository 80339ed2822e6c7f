"""Two operator processes on the real Lease API, each authenticated as the chart's ServiceAccount (so the chart's
RBAC is proven sufficient, not the admin's): one leads and reconciles, the other stands by, not Ready; when the
leader stops it gives its Lease back and the standby takes over and goes on reconciling."""

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
    standby = operator.start(f"operator-standby-{len(operator.processes)}")
    # The standby serves (its API and gateway answer) but is not Ready: only the Lease holder reconciles.
    wait_for(lambda: _answers(standby), timeout=60, what="the standby's gateway to answer")
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


def _answers(process) -> bool:
    import httpx

    process.check_alive()
    try:
        httpx.get(f"{process.gateway}/-/ready", timeout=2)
        return True
    except httpx.HTTPError:
        return False
