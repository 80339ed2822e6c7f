"""Balancing and retries: a busy replica is avoided, a dead one costs no failed request."""

from __future__ import annotations

import socketserver
import threading
from collections import Counter

import httpx

from shipyard.gateway import Upstream
from tests.conftest import wait_for
from tests.gateway.conftest import KEY, metric_value, route


def test_a_new_request_goes_to_the_idle_upstream_while_the_other_is_busy(gateway, start_upstream):
    a, b = start_upstream("a"), start_upstream("b")
    gateway.table.set_route(route("llm", a.upstream, b.upstream))
    slow = threading.Thread(target=_get, args=(gateway, "/proj/llm/slow"))
    slow.start()
    busy = wait_for(lambda: next((u for u in (a, b) if u.app.in_flight == 1), None), timeout=10,
                    message="the slow request to reach an upstream")
    idle = b if busy is a else a
    assert gateway.table.upstream_stats("proj", "llm")[busy.upstream.id].in_flight == 1
    with gateway.client() as client:
        served_by = Counter(client.get("/proj/llm/quick").json()["upstream"] for _ in range(20))
    assert served_by == {idle.upstream.id: 20}
    busy.app.gate.set()
    slow.join(10)
    with gateway.client() as client:  # both idle again: both get traffic
        served_by = Counter(client.get("/proj/llm/quick").json()["upstream"] for _ in range(40))
    assert set(served_by) == {"a", "b"}


def _load(gateway, total: int, workers: int, path: str, on_progress) -> tuple[list[int], Counter]:
    """`total` requests over `workers` keep-alive clients; on_progress(done) after each one."""
    statuses: list[int] = []
    served_by: Counter = Counter()
    lock = threading.Lock()
    remaining = iter(range(total))

    def worker() -> None:
        with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as client:
            while True:
                with lock:
                    if next(remaining, None) is None:
                        return
                try:
                    r = client.post(path, json={"n": 1})
                    status, upstream = r.status_code, r.json().get("upstream") if r.status_code == 200 else None
                except httpx.HTTPError as exc:
                    status, upstream = repr(exc), None
                with lock:
                    statuses.append(status)
                    served_by[upstream] += 1
                    done = len(statuses)
                on_progress(done)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return statuses, served_by


def test_killing_one_of_two_upstreams_under_load_fails_no_request(gateway, start_upstream, start_process_upstream):
    live = start_upstream("live")
    doomed = start_process_upstream("doomed")
    gateway.table.set_route(route("llm", live.upstream, doomed.upstream))
    killed = threading.Event()

    def kill_midway(done: int) -> None:
        if done == 60 and not killed.is_set():
            killed.set()
            doomed.kill()  # SIGKILL: requests in flight there die before any response byte

    statuses, served_by = _load(gateway, 200, workers=8, path="/proj/llm/work", on_progress=kill_midway)
    assert killed.is_set()
    assert statuses == [200] * 200, Counter(map(str, statuses))
    assert served_by["doomed"] > 0 and served_by["live"] > 100
    with gateway.client() as client:
        metrics = client.get("/-/metrics").text
    # requests in flight at the kill (each takes 20 ms there) and those the dead port refused were resent
    assert metric_value(metrics, "shipyard_gateway_retries_total", project="proj", route="llm") >= 1


def test_stopping_one_of_two_upstreams_under_load_fails_no_request(gateway, start_upstream):
    live, stopping = start_upstream("live"), start_upstream("stopping")
    gateway.table.set_route(route("llm", live.upstream, stopping.upstream))
    stopper: list[threading.Thread] = []

    def stop_midway(done: int) -> None:
        if done == 60 and not stopper:
            stopper.append(threading.Thread(target=stopping.stop))  # graceful: drains, then refuses
            stopper[0].start()

    statuses, served_by = _load(gateway, 200, workers=8, path="/proj/llm/work", on_progress=stop_midway)
    stopper[0].join(30)
    assert statuses == [200] * 200, Counter(map(str, statuses))
    assert served_by["stopping"] > 0 and served_by["live"] > 100


class _ClosesSecondRequest(socketserver.BaseRequestHandler):
    """Answers the first request of each connection, then closes it upon the next one without answering:
    what a keep-alive connection looks like when the upstream closed it just as the gateway reused it."""

    def handle(self) -> None:
        stream = self.request.makefile("rb")
        for n in range(2):
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = stream.readline()
                if not line:
                    return
                head += line
            length = next((int(v) for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
                           if k.strip().lower() == b"content-length"), 0)
            stream.read(length)
            if n == 1:
                return  # closed before any response byte
            body = b'{"upstream": "flaky"}'
            self.request.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                                 + str(len(body)).encode() + b"\r\n\r\n" + body)


def test_a_connection_closed_before_any_response_byte_is_retried(gateway):
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _ClosesSecondRequest)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        gateway.table.set_route(route("llm", Upstream("flaky", "127.0.0.1", server.server_address[1])))
        with gateway.client() as client:
            for _ in range(5):  # POST too: it never reached an upstream that answered, so it is safe to resend
                assert client.post("/proj/llm/x", json={}).status_code == 200
                assert client.get("/proj/llm/x").status_code == 200
            metrics = client.get("/-/metrics").text
        # every POST after the first met a closed connection and was sent again (the client's own retry
        # of idempotent requests may hide the GETs' from this count)
        assert metric_value(metrics, "shipyard_gateway_retries_total", project="proj", route="llm") >= 4
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _get(gateway, path: str) -> None:
    with gateway.client() as client:
        client.get(path)
