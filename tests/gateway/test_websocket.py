"""WebSockets through the gateway: handshake, messages both ways, close codes, keys."""

from __future__ import annotations

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.conftest import wait_for
from tests.gateway.conftest import KEY, route

AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def ws_url(gateway, start_upstream):
    upstream = start_upstream("ws-0")
    gateway.table.set_route(route("app", upstream.upstream))
    return f"ws://127.0.0.1:{gateway.server.port}/proj/app", upstream


def test_echo_with_subprotocol_query_and_close_code_from_the_upstream(gateway, ws_url):
    base, upstream = ws_url
    with connect(f"{base}/stream?session=7", additional_headers=AUTH, subprotocols=["v1.chat", "v2"]) as ws:
        assert ws.subprotocol == "v1.chat"
        ws.send("hello")
        assert ws.recv(timeout=10) == "ws-0:hello"
        ws.send(b"\x00\x01binary")
        assert ws.recv(timeout=10) == b"\x00\x01binary"
        ws.send("close:4001")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert (ws.close_code, ws.close_reason) == (4001, "asked to")
    seen = upstream.app.seen[-1]
    assert (seen["path"], seen["query"]) == ("/stream", "session=7")
    headers = dict(seen["headers"])
    assert "authorization" not in headers
    assert headers["x-forwarded-prefix"] == "/proj/app"
    assert headers["host"] == f"127.0.0.1:{gateway.server.port}"  # the client's Host, not the replica's


def test_client_close_reaches_the_upstream(ws_url):
    base, upstream = ws_url
    with connect(f"{base}/", additional_headers=AUTH) as ws:
        ws.send("ping")
        assert ws.recv(timeout=10) == "ws-0:ping"
    wait_for(upstream.app.disconnected.is_set, timeout=10, message="the upstream to see the close")


def test_websocket_without_a_key_is_refused_with_401(ws_url):
    base, upstream = ws_url
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{base}/", open_timeout=10)
    assert refused.value.response.status_code == 401
    assert upstream.app.seen == []


def test_websocket_to_an_unknown_route_is_404(gateway):
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{gateway.server.port}/proj/none/", additional_headers=AUTH, open_timeout=10)
    assert refused.value.response.status_code == 404
