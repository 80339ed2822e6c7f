"""The gateway as the chart runs it: replicas of their own (two processes, each with the chart's gateway
ServiceAccount), beside the operator's processes, on the real control plane.

What is proven: every replica builds the same routes and key table from the API alone, so Endpoints and Apps
answer through either replica while the operator's leader crashes (SIGKILL: its Lease is not given back, the
standby waits for it to expire) and the standby takes over, with not one request failed; and a request held by
a gateway replica for an App scaled to zero wakes it across such a crash: the replica's traffic report (a
ConfigMap) outlives the dead leader, the new one reads it and scales the App up, and the replica that holds the
request serves it once its own watch sees the pod ready.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from shipyard.client import Client

from .conftest import SYSTEM_NAMESPACE, wait_for

pytestmark = pytest.mark.timeout(600)


def app(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "shipyard.dev/v1alpha1", "kind": "App", "metadata": {"name": name, "namespace": namespace},
            "spec": {"command": ["python", "-m", "http.server", "--bind", "0.0.0.0", "$(PORT)"], "port": 8080,
                     "resources": {"cpu": "100m", "memory": "128Mi"}, **spec}}


def answers(process) -> bool:
    process.check_alive()
    try:
        return httpx.get(f"{process.api}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_standby(operator):
    standby = operator.start(f"operator-standby-{len(operator.processes)}")
    wait_for(lambda: answers(standby), timeout=60, what="the standby's API to answer")
    assert not standby.leading()
    return standby


def test_routes_and_keys_survive_a_leader_crash_with_no_failed_request(admin, operator, gateways, namespace):
    with Client(url=operator.api, token=operator.admin_token) as client:
        key = client.create_api_key("ci", project=namespace)["token"]
    admin.create(app("web", namespace, replicas={"min": 1, "max": 1}))
    auth = {"Authorization": f"Bearer {key}"}

    def get(gateway, headers=auth) -> httpx.Response:
        return httpx.get(f"{gateway.url}/{namespace}/web/", headers=headers, timeout=30)
    wait_for(lambda: all(get(g).status_code == 200 for g in gateways), timeout=180,
             what="the App answering through both gateway replicas")
    assert all(get(g, headers={}).status_code == 401 for g in gateways)  # the key table is the API's too

    failures: list[str] = []
    served = [0]
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            gateway = gateways[i % len(gateways)]
            i += 1
            try:
                response = get(gateway)
                if response.status_code != 200:
                    failures.append(f"{gateway.identity}: {response.status_code} {response.text[:200]}")
                else:
                    served[0] += 1
            except httpx.HTTPError as exc:
                failures.append(f"{gateway.identity}: {exc!r}")
            stop.wait(0.1)
    thread = threading.Thread(target=load)
    standby = start_standby(operator)
    thread.start()
    try:
        leader = operator.current
        leader.kill()  # a crash: no Lease given back, nobody reconciles until it expires
        at_kill = served[0]
        wait_for(standby.leading, timeout=90, what="the standby to take over the expired Lease")
        operator.current = standby
        at_takeover = served[0]
        wait_for(lambda: served[0] >= at_takeover + 20, timeout=60, what="requests served under the new leader")
    finally:
        stop.set()
        thread.join()
    assert not failures, failures[:3]
    assert at_takeover - at_kill >= 10, "requests must have been served while no operator led"


def test_a_request_held_by_a_gateway_replica_wakes_its_app_across_a_leader_crash(admin, operator, gateways,
                                                                                   namespace):
    admin.create(app("sleepy", namespace, public=True, replicas={"min": 0, "max": 2}, scaleToZero={"idleSeconds": 3}))
    wait_for(lambda: (admin.get("App", namespace, "sleepy") or {}).get("status", {}).get("phase") == "Idle"
             and not admin.list("Pod", namespace, {"shipyard.dev/name": "sleepy"}), timeout=120,
             what="scaled to zero (phase Idle, no pod)")

    standby = start_standby(operator)
    operator.current.kill()
    # Held by the second replica while no operator leads; its report (held: 1) waits in the API for the next
    # leader, which wakes the App; the pod it gets is routed by that replica's own watch.
    answer = httpx.get(f"{gateways[1].url}/{namespace}/sleepy/", timeout=150)
    assert answer.status_code == 200 and "Directory listing" in answer.text
    assert standby.leading()
    operator.current = standby
    report = admin.get("ConfigMap", SYSTEM_NAMESPACE, f"shipyard-gateway-report-{gateways[1].identity}")
    assert f'"{namespace}/sleepy"' in report["data"]["report.json"]
    events = admin.list("Event", namespace)
    assert any(e.get("reason") == "Activated" and e["involvedObject"]["name"] == "sleepy" for e in events)
