"""A key's restrictions at the gateway, against real upstreams: the Endpoints/Apps it may reach (403 naming
the one refused), expiry (401 as if revoked), its request rate (429 with Retry-After, on an injected
monotonic clock), and the store-backed verifier end to end. Keys of one project never reach another."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from shipyard.gateway import GatewayServer, RouteTable, create_gateway_app
from shipyard.gateway.ratelimit import RateLimiter
from shipyard.gateway_wiring import StoreKeys
from shipyard.store.apikeys import SQLiteApiKeys
from shipyard.store.protocol import RateLimit
from shipyard.tokens import hash_token, new_api_key
from tests.gateway.conftest import KEY, OTHER_PROJECT_KEY, route

LIMITED = "sk-only-chat-0123456789"
EXPIRED = "sk-expired-0123456789"
RATED = "sk-one-per-second-0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def routes(gateway, start_upstream):
    chat, embed = start_upstream("chat-0"), start_upstream("embed-0")
    gateway.table.set_route(route("chat", chat.upstream))
    gateway.table.set_route(route("embed", embed.upstream))
    return chat, embed


def test_a_key_limited_to_one_endpoint_gets_403_on_another(gateway, routes):
    chat, embed = routes
    gateway.app.keys.add("proj", LIMITED, endpoints=["chat"])
    with gateway.client(LIMITED) as client:
        assert client.get("/proj/chat/v1/models").status_code == 200
        refused = client.get("/proj/embed/v1/models")
        unknown = client.get("/proj/nothing/v1/models")  # not in its list either: 403, not a 404 probe
    assert refused.status_code == 403 and unknown.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "endpoint_not_allowed" and "'embed'" in error["message"]
    assert "\n" not in refused.text
    assert embed.app.seen == []
    with gateway.client(KEY) as client:  # an unrestricted key of the project reaches both
        assert client.get("/proj/embed/v1/models").status_code == 200


def test_an_expired_key_is_refused_like_a_revoked_one(gateway, routes):
    gateway.app.keys.add("proj", EXPIRED, expires_at=time.time() - 1)
    with gateway.client(EXPIRED) as client:
        r = client.get("/proj/chat/v1/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert routes[0].app.seen == []


def test_keys_never_reach_another_project(gateway, routes):
    with gateway.client(OTHER_PROJECT_KEY) as client:
        assert client.get("/proj/chat/v1/models").status_code == 401
    gateway.app.keys.add("other", LIMITED, endpoints=["chat"])  # a same-named endpoint, another project
    with gateway.client(LIMITED) as client:
        assert client.get("/proj/chat/v1/models").status_code == 401


def test_over_its_rate_a_key_gets_429_with_retry_after_and_passes_again_after_refill(gateway, routes):
    clock = Clock()
    gateway.app.rates = RateLimiter(clock=clock)
    gateway.app.keys.add("proj", LIMITED, requests_per_second=0.5, burst=2)
    with gateway.client(LIMITED) as client:
        assert [client.get("/proj/chat/v1/models").status_code for _ in range(2)] == [200, 200]
        over = client.get("/proj/chat/v1/models")
        assert over.status_code == 429
        assert over.headers["retry-after"] == "2"  # one token every 2 s
        assert over.json()["error"]["code"] == "rate_limit_exceeded"
        with gateway.client(KEY) as other:  # the bucket is the key's, not the route's
            assert other.get("/proj/chat/v1/models").status_code == 200
        clock.now += 1.5
        assert client.get("/proj/chat/v1/models").headers["retry-after"] == "1"
        clock.now += 0.5
        assert client.get("/proj/chat/v1/models").status_code == 200
    assert len(routes[0].app.seen) == 4


def test_under_its_rate_every_request_passes(gateway, routes):
    gateway.app.keys.add("proj", LIMITED, requests_per_second=1000.0)
    with gateway.client(LIMITED) as client:
        assert {client.get("/proj/chat/v1/models").status_code for _ in range(20)} == {200}


def test_a_websocket_handshake_gets_the_same_refusals(gateway, start_upstream):
    upstream = start_upstream("ws-0")
    gateway.table.set_route(route("app", upstream.upstream))
    gateway.app.rates = RateLimiter(clock=Clock())
    gateway.app.keys.add("proj", LIMITED, endpoints=["chat"])
    gateway.app.keys.add("proj", RATED, requests_per_second=1.0, burst=1)
    base = f"ws://127.0.0.1:{gateway.server.port}/proj/app/"
    with pytest.raises(InvalidStatus) as refused:
        connect(base, additional_headers={"Authorization": f"Bearer {LIMITED}"}, open_timeout=10)
    assert refused.value.response.status_code == 403
    with connect(base, additional_headers={"Authorization": f"Bearer {RATED}"}, open_timeout=10) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "ws-0:hi"
    with pytest.raises(InvalidStatus) as refused:
        connect(base, additional_headers={"Authorization": f"Bearer {RATED}"}, open_timeout=10)
    assert refused.value.response.status_code == 429
    assert refused.value.response.headers["Retry-After"] == "1"


def test_store_keys_carry_their_restrictions_to_the_gateway(tmp_path, start_upstream):
    """The real verifier: SQLite keys with an injected wall clock for expiry, read from memory per request."""
    wall = [time.time()]
    keys = SQLiteApiKeys(create_engine(f"sqlite:///{tmp_path / 'db'}"), clock=lambda: wall[0])
    limited, expiring, foreign = new_api_key(), new_api_key(), new_api_key()
    keys.add_api_key("proj", "limited", hash_token(limited), "h1", endpoints=("chat",),
                     rate_limit=RateLimit(0.5, 1))
    keys.add_api_key("proj", "expiring", hash_token(expiring), "h2",
                     expires_at=datetime.fromtimestamp(wall[0], timezone.utc) + timedelta(hours=1))
    keys.add_api_key("other", "foreign", hash_token(foreign), "h3")
    table = RouteTable()
    for name in ("chat", "embed"):
        table.set_route(route(name, start_upstream(f"{name}-0").upstream))
    server = GatewayServer(create_gateway_app(table, StoreKeys(keys), rate_limiter=RateLimiter(clock=Clock())),
                           "127.0.0.1", 0)
    server.start()
    try:
        import httpx

        def get(token: str, name: str) -> httpx.Response:
            return httpx.get(f"{server.url}/proj/{name}/v1/models", headers={"Authorization": f"Bearer {token}"},
                             timeout=30)

        assert get(limited, "chat").status_code == 200
        assert get(limited, "embed").status_code == 403
        assert (r := get(limited, "chat")).status_code == 429 and r.headers["retry-after"] == "2"
        assert get(expiring, "embed").status_code == 200
        wall[0] += 3601  # past it (expiry is kept to the microsecond; the clock here is a float)
        assert get(expiring, "embed").status_code == 401
        assert get(foreign, "chat").status_code == 401
        keys.revoke_api_key("proj", "limited")
        assert get(limited, "chat").status_code == 401
    finally:
        server.stop()
