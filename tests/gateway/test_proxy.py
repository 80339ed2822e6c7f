"""HTTP through the gateway to real upstreams: routing, keys, headers, streaming, bodies, failures."""

from __future__ import annotations

import threading

import httpx
import pytest

from shipyard.gateway import GatewayServer, Route, RouteTable, StaticKeys, create_gateway_app
from tests.conftest import wait_for
from tests.gateway.conftest import KEY, OTHER_PROJECT_KEY, route


@pytest.fixture
def echo(gateway, start_upstream):
    upstream = start_upstream("echo-0")
    gateway.table.set_route(route("echo", upstream.upstream))
    return upstream


def test_routes_by_path_strips_the_prefix_and_keeps_the_query(gateway, echo):
    with gateway.client() as client:
        r = client.post("/proj/echo/v1/a%20b/c?x=1&y=%2F", content=b"hello", headers={"X-Custom": "yes"})
    assert r.status_code == 200, r.text
    seen = r.json()
    assert (seen["method"], seen["path"], seen["raw_path"], seen["query"]) == ("POST", "/v1/a b/c", "/v1/a%20b/c",
                                                                               "x=1&y=%2F")
    assert seen["body"] == "hello"
    headers = echo.app.headers_of()
    assert headers["x-custom"] == "yes"
    assert headers["x-forwarded-prefix"] == "/proj/echo"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["host"] == headers["x-forwarded-host"] == f"127.0.0.1:{gateway.server.port}"
    assert headers["x-request-id"] == r.headers["x-request-id"]
    assert "authorization" not in headers


def test_bare_route_path_redirects_to_its_trailing_slash(gateway, echo):
    with gateway.client() as client:
        r = client.get("/proj/echo?a=1")
        assert (r.status_code, r.headers["location"]) == (308, "/proj/echo/?a=1")
        assert client.get("/proj/echo/").json()["path"] == "/"


def test_client_forwarded_headers_are_replaced_and_x_forwarded_for_appended(gateway, echo):
    with gateway.client() as client:
        client.get("/proj/echo/", headers={"X-Forwarded-For": "10.0.0.1", "X-Forwarded-Prefix": "/evil",
                                           "X-Request-Id": "req-42", "Connection": "keep-alive, X-Secret-Hop",
                                           "X-Secret-Hop": "1"})
    headers = echo.app.headers_of()
    assert headers["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert headers["x-forwarded-prefix"] == "/proj/echo"
    assert headers["x-request-id"] == "req-42"
    assert "x-secret-hop" not in headers


def test_missing_or_wrong_key_is_401_in_openai_shape(gateway, echo):
    for key in (None, "sk-wrong", OTHER_PROJECT_KEY):
        with gateway.client(key) as client:
            r = client.get("/proj/echo/")
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert set(r.json()["error"]) >= {"message", "type", "code"}
        assert r.headers["www-authenticate"].startswith("Bearer")
    with gateway.client(None) as client:
        assert client.get("/proj/echo/", headers={"Authorization": f"Basic {KEY}"}).status_code == 401
    assert echo.app.seen == []
    with gateway.client(KEY) as client:
        assert client.get("/proj/echo/").status_code == 200


def test_public_route_needs_no_key_and_never_sees_one(gateway, start_upstream):
    upstream = start_upstream("pub-0")
    gateway.table.set_route(route("app", upstream.upstream, public=True))
    with gateway.client(None) as client:
        assert client.get("/proj/app/").status_code == 200
    with gateway.client(KEY) as client:
        assert client.get("/proj/app/").status_code == 200
    assert all("authorization" not in dict(s["headers"]) for s in upstream.app.seen)


def test_unknown_routes(gateway, echo):
    with gateway.client() as client:
        r = client.get("/proj/nothing/here")
        assert r.status_code == 404 and r.json()["error"]["code"] == "route_not_found"
        assert client.get("/").status_code == 404
        assert client.get("/-/unknown").status_code == 404
        assert client.get("/-/healthz").text == "ok\n"
    with gateway.client(None) as client:
        # without a key of the project, whether a name exists is not revealed
        assert client.get("/proj/nothing/here").status_code == 401


def test_host_based_routing_with_a_domain(make_gateway, start_upstream):
    gateway = make_gateway(domain="apps.example.test")
    upstream = start_upstream("host-0")
    gateway.table.set_route(route("echo", upstream.upstream))
    with gateway.client() as client:
        r = client.get("/v1/models?x=1", headers={"Host": "echo.proj.apps.example.test:8080"})
        assert r.status_code == 200, r.text
        assert (r.json()["path"], r.json()["query"]) == ("/v1/models", "x=1")
        assert "x-forwarded-prefix" not in upstream.app.headers_of()
        assert client.get("/proj/echo/x").json()["path"] == "/x"  # path routing still works


def test_sse_events_arrive_while_the_upstream_is_still_producing(gateway, echo):
    with gateway.client() as client, client.stream("GET", "/proj/echo/sse") as r:
        assert r.headers["content-type"] == "text/event-stream"
        lines = r.iter_lines()
        assert next(lines) == "data: first"
        assert not echo.app.sse_finished.is_set()  # the first event came before the upstream finished
        echo.app.gate.set()
        rest = [line for line in lines if line]
    assert rest == ["data: event 0", "data: event 1", "data: event 2", "data: [DONE]"]


def test_client_leaving_a_stream_is_noticed_by_the_upstream(gateway, echo):
    with gateway.client() as client, client.stream("GET", "/proj/echo/forever") as r:
        assert next(r.iter_lines()) == "data: tick"
    wait_for(echo.app.disconnected.is_set, timeout=10, message="the upstream to see the client go")
    wait_for(lambda: gateway.table.stats("proj", "echo").in_flight == 0, timeout=10, message="in-flight back to 0")


def test_large_bodies_stream_to_the_upstream(make_gateway, start_upstream):
    gateway = make_gateway(retry_body_limit=1024)
    upstream = start_upstream("big-0")
    gateway.table.set_route(route("echo", upstream.upstream))

    def chunks():
        for _ in range(64):
            yield b"x" * 1000

    with gateway.client() as client:
        r = client.post("/proj/echo/upload", content=chunks())
    assert r.status_code == 200 and r.json()["body_length"] == 64_000


def test_upstream_dying_mid_response_truncates_the_client_response(gateway, start_upstream):
    async def dies_mid_body(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]})
        await send({"type": "http.response.body", "body": b"x" * 10, "more_body": True})
        raise RuntimeError("replica crashed")  # uvicorn closes the connection mid-body

    upstream = start_upstream("dying-0", dies_mid_body)
    gateway.table.set_route(route("echo", upstream.upstream))
    with gateway.client() as client, pytest.raises(httpx.RemoteProtocolError):
        client.get("/proj/echo/")


def test_unreachable_only_upstream_is_502_after_bounded_attempts(gateway, start_upstream):
    upstream = start_upstream("gone-0")
    upstream.stop()
    gateway.table.set_route(route("echo", upstream.upstream))
    with gateway.client() as client:
        r = client.get("/proj/echo/")
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unreachable"


def test_concurrent_requests_all_succeed(gateway, echo):
    errors: list[object] = []

    def worker():
        with gateway.client() as client:
            for _ in range(20):
                r = client.get("/proj/echo/work")
                if r.status_code != 200:
                    errors.append(r.status_code)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert gateway.table.stats("proj", "echo").requests_total == 80


def test_head_responses_keep_their_headers_and_leave_the_connection_usable(gateway, echo):
    with gateway.client() as client:
        for _ in range(3):
            r = client.head("/proj/echo/x")
            assert r.status_code == 200 and int(r.headers["content-length"]) > 0 and r.content == b""
            assert client.get("/proj/echo/y").json()["path"] == "/y"


def test_ready_reports_standby_with_503_so_a_service_sends_it_no_traffic():
    leading = threading.Event()
    app = create_gateway_app(RouteTable(), StaticKeys({}), ready=leading.is_set)
    server = GatewayServer(app, "127.0.0.1", 0)
    server.start()
    try:
        standby = httpx.get(f"{server.url}/-/ready", timeout=10)
        assert standby.status_code == 503 and "standby" in standby.text
        assert httpx.get(f"{server.url}/-/healthz", timeout=10).status_code == 200  # alive all the same
        leading.set()
        assert httpx.get(f"{server.url}/-/ready", timeout=10).status_code == 200
    finally:
        server.stop()


def test_a_keep_prefix_route_forwards_the_whole_path(make_gateway, start_upstream):
    upstream = start_upstream("lab")
    gateway = make_gateway()
    gateway.table.set_route(Route(project="proj", name="lab", kind="Workspace", public=True,
                                   upstreams=(upstream.upstream,), scalable_from_zero=False, keep_prefix=True))
    with gateway.client(None) as client:
        assert client.get("/proj/lab/api/kernels?x=1").json()["path"] == "/proj/lab/api/kernels"


def test_a_public_route_passes_the_apps_own_authorization_on_and_a_keyed_route_never(make_gateway, start_upstream):
    upstream = start_upstream("ide")
    gateway = make_gateway()
    gateway.table.set_route(route("ide", upstream.upstream, public=True))
    gateway.table.set_route(route("chat", upstream.upstream))
    with gateway.client(None) as client:
        client.get("/proj/ide/api", headers={"Authorization": "token the-ides-own"})
    assert upstream.app.headers_of(-1)["authorization"] == "token the-ides-own"
    with gateway.client() as client:  # the project key: consumed by the gateway
        client.get("/proj/chat/x")
    assert "authorization" not in upstream.app.headers_of(-1)
