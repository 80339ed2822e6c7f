"""`shipyard logs`' flags on a cluster are the pod log API's own parameters (the request the operator makes)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(60)


def test_log_flags_become_pod_log_api_parameters(apiserver, kubectl):
    for previous in (False, True):
        try:
            list(kubectl.log("default", "web-0", previous=previous, since_seconds=600, tail_lines=3))
        except Exception:  # noqa: BLE001 - the mock has no pod logs to serve; the request is what matters
            pass
    requests = [r for r in apiserver.requests if r.path == "/api/v1/namespaces/default/pods/web-0/log"]
    assert [r.params.get("previous") for r in requests] == [None, "true"]
    for request in requests:
        assert request.params["sinceSeconds"] == "600" and request.params["tailLines"] == "3"
