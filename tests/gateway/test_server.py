"""GatewayServer's lifecycle, the `python -m shipyard.gateway` command, and a light import for controllers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from shipyard.gateway import GatewayServer, RouteTable, StaticKeys, create_gateway_app
from tests.gateway.conftest import ROOT


def test_start_returns_listening_on_the_bound_port_and_stop_closes_it():
    server = GatewayServer(create_gateway_app(RouteTable(), StaticKeys(), None), "127.0.0.1", 0)
    server.start()
    try:
        assert server.port != 0
        assert httpx.get(f"{server.url}/-/healthz", timeout=10).text == "ok\n"
        with pytest.raises(RuntimeError):
            server.start()
    finally:
        server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/-/healthz", timeout=10)
    server.stop()  # idempotent


def test_a_port_in_use_fails_start():
    with GatewayServer(create_gateway_app(RouteTable(), StaticKeys(), None), "127.0.0.1", 0) as first:
        with pytest.raises(OSError):
            GatewayServer(create_gateway_app(RouteTable(), StaticKeys(), None), "127.0.0.1", first.port).start()


def test_command_line_gateway_with_static_routes(start_upstream):
    upstream = start_upstream("cli-0")
    process = subprocess.Popen(
        [sys.executable, "-m", "shipyard.gateway", "--port", "0", "--route",
         f"demo/echo=127.0.0.1:{upstream.upstream.port}", "--key", "demo=sk-cli"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("gateway: listening on http://127.0.0.1:"), line
        url = line.split()[-1]
        assert httpx.get(f"{url}/demo/echo/x", timeout=10).status_code == 401
        r = httpx.get(f"{url}/demo/echo/x", headers={"Authorization": "Bearer sk-cli"}, timeout=10)
        assert (r.status_code, r.json()["path"]) == (200, "/x")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0


def test_command_line_rejects_a_malformed_route():
    result = subprocess.run([sys.executable, "-m", "shipyard.gateway", "--route", "nonsense"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "PROJECT/NAME=HOST:PORT" in result.stderr


def test_controllers_can_import_the_route_table_without_the_server_stack():
    code = ("import sys, shipyard.gateway.routes, shipyard.gateway; "
            "print(sorted(m for m in ('aiohttp', 'uvicorn', 'prometheus_client', 'websockets') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr
