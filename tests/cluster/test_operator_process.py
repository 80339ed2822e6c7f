"""`python -m shipyard.operator`, the process the Helm chart runs, against the API mock server: it serves the
API (the gateway is a process of its own), becomes Ready only once it leads, and gives its Lease back on
SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from .conftest import SYSTEM_NAMESPACE, wait_for

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_operator_process_serves_leads_and_releases_its_lease(apiserver, kubeconfig, kubectl):
    api_port = free_port()
    env = {**os.environ, "SHIPYARD_ADMIN_TOKEN": "sy_process-test", "POD_NAME": "shipyard-abc12"}
    proc = subprocess.Popen([sys.executable, "-m", "shipyard.operator", "--kubeconfig", str(kubeconfig),
                             "--namespace", SYSTEM_NAMESPACE, "--host", "127.0.0.1", "--api-port", str(api_port)],
                            env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        def get(url: str, **kwargs) -> httpx.Response | None:
            try:
                return httpx.get(url, timeout=5, **kwargs)
            except httpx.HTTPError:
                return None

        wait_for(lambda: (r := get(f"http://127.0.0.1:{api_port}/readyz")) and r.status_code == 200,
                 timeout=60, what="the operator to lead and be Ready")
        lease = kubectl.get("Lease", SYSTEM_NAMESPACE, "shipyard-operator")
        assert lease["spec"]["holderIdentity"] == "shipyard-abc12"
        assert get(f"http://127.0.0.1:{api_port}/healthz").status_code == 200
        version = get(f"http://127.0.0.1:{api_port}/version",
                      headers={"Authorization": "Bearer sy_process-test"})
        assert version.status_code == 200
        assert get(f"http://127.0.0.1:{api_port}/version").status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output
    assert not kubectl.get("Lease", SYSTEM_NAMESPACE, "shipyard-operator")["spec"].get("holderIdentity")


def test_without_an_admin_token_it_refuses_to_start_in_one_line(kubeconfig):
    env = {k: v for k, v in os.environ.items() if k != "SHIPYARD_ADMIN_TOKEN"}
    result = subprocess.run([sys.executable, "-m", "shipyard.operator", "--kubeconfig", str(kubeconfig)], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "SHIPYARD_ADMIN_TOKEN is not set" in result.stderr
    assert "Traceback" not in result.stderr
