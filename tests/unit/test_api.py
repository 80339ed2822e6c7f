"""The REST API over a real SQLite store, served by uvicorn on a loopback port (streams included)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import threading
from typing import Iterator

import httpx
import pytest
import uvicorn
from fastapi.routing import APIRoute

from shipyard.api import create_app, hash_token, load_or_create_admin_token
from shipyard.api.logs import LogOptions
from shipyard.api.routers import resources, system
from shipyard.resources import Resource, TrainingJob
from shipyard.store import NotFound
from shipyard.store.sqlite import SQLiteStore

TOKEN = "sy_test-token"
API = "/apis/shipyard.dev/v1alpha1"
JOBS = f"{API}/namespaces/default/trainingjobs"


def job(name: str = "train", **spec: object) -> dict:
    return {"apiVersion": "shipyard.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name},
            "spec": {"command": ["python", "train.py"], **spec}}


def items(*objects: dict, source: str = "jobs.yaml") -> dict:
    return {"items": [{"source": source, "document": i, "object": o} for i, o in enumerate(objects, 1)]}


class FakeLogs:
    def stream(self, resource: Resource, options: LogOptions) -> Iterator[bytes]:
        if options.replica not in (None, 0):
            raise NotFound(f"{resource.ref} has no replica {options.replica}")
        lines = [f"{resource.metadata.name} line {i}\n".encode() for i in range(5)]
        yield from lines[-options.tail_lines:] if options.tail_lines else lines


@contextlib.contextmanager
def serve(app) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 in a thread. The socket listens before uvicorn starts, so clients can connect
    at once (the kernel queues them): no waiting for startup."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # proto set: asyncio then disables Nagle
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture(scope="module")
def server():
    # One server for the module (starting and stopping uvicorn dominates otherwise); each test gets its own store.
    app = create_app(None, FakeLogs(), hash_token(TOKEN), "9.9.9")  # type: ignore[arg-type]
    with serve(app) as url:
        yield app, url


@pytest.fixture
def app(server):
    return server[0]


@pytest.fixture
def store(tmp_path, app):
    s = SQLiteStore(tmp_path / "db")
    app.state.store, app.state.bookmark_seconds = s, 15.0
    yield s
    s.close()


@pytest.fixture
def api(server, store):
    with httpx.Client(base_url=server[1], headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


def test_healthz_is_open_and_every_other_route_needs_the_token(api):
    assert api.get("/healthz", headers={"Authorization": ""}).json() == {"status": "ok"}
    routes = [(m, r.path) for router in (system.public, system.router, resources.router)
              for r in router.routes if isinstance(r, APIRoute) for m in r.methods]
    assert len(routes) >= 9
    for method, path in routes:
        path = path.format(plural="trainingjobs", namespace="default", name="train")
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            resp = api.request(method, path, headers={"Authorization": "", **headers})
            if path == "/healthz":
                assert resp.status_code == 200
                continue
            assert resp.status_code == 401, (method, path)
            assert resp.json() == {"detail": "missing or invalid API token"}
            assert resp.headers["www-authenticate"] == "Bearer"
    assert api.get("/version").json() == {"version": "9.9.9", "apiVersion": "shipyard.dev/v1alpha1"}
    assert api.get("/docs").status_code == 404 and api.get("/openapi.json").status_code == 404


def test_admin_token_file_is_private_and_stable(tmp_path):
    path = tmp_path / "home" / "admin-token"
    token = load_or_create_admin_token(path)
    assert token.startswith("sy_") and len(token) > 40
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_admin_token(path) == token
    assert [p.name for p in path.parent.iterdir()] == ["admin-token"]  # no temporary file left behind


def test_apply_created_unchanged_configured(api):
    def apply(obj: dict) -> list[dict]:
        resp = api.post(f"{API}/apply", json=items(obj))
        assert resp.status_code == 200, resp.text
        return resp.json()["items"]

    assert apply(job()) == [{"kind": "TrainingJob", "namespace": "default", "name": "train", "action": "created"}]
    assert apply(job())[0]["action"] == "unchanged"
    labelled = job()
    labelled["metadata"]["labels"] = {"team": "research"}
    assert apply(labelled)[0]["action"] == "configured"
    assert api.get(f"{JOBS}/train").json()["metadata"]["labels"] == {"team": "research"}


def test_dry_run_stores_nothing(api):
    resp = api.post(f"{API}/apply", json={**items(job()), "dryRun": True})
    assert resp.status_code == 200 and resp.json()["items"][0]["action"] == "created"
    assert api.get(JOBS).json()["items"] == []


def test_immutable_spec_change_is_refused(api):
    assert api.post(f"{API}/apply", json=items(job())).status_code == 200
    resp = api.post(f"{API}/apply", json=items(job(replicas=4)))
    assert resp.status_code == 422
    assert "immutable" in resp.json()["detail"]


def test_one_bad_document_refuses_the_whole_apply(api):
    resp = api.post(f"{API}/apply", json=items(job("a"), job("b", replicaz=2), job("c")))
    assert resp.status_code == 422
    body = resp.json()
    assert body["detail"] == "jobs.yaml: document 2: spec.replicaz: unknown field"
    assert body["errors"] == [{"source": "jobs.yaml", "document": 2, "path": "spec.replicaz",
                               "message": "unknown field"}]
    assert api.get(JOBS).json()["items"] == []


@pytest.mark.parametrize("obj, words", [
    ({**job(), "kind": "Nope"}, "jobs.yaml: document 1: kind: 'Nope' is not a Shipyard kind"),
    (job(replicas=-1), "spec.replicas"),
    ({**job(), "apiVersion": "v1"}, "apiVersion"),
    ("just a string", "must be a mapping"),
])
def test_invalid_objects_get_one_line_422(api, obj, words):
    resp = api.post(f"{API}/apply", json=items(obj))
    assert resp.status_code == 422
    assert words in resp.json()["detail"] and "\n" not in resp.json()["detail"]


def test_duplicate_objects_are_refused(api):
    resp = api.post(f"{API}/apply", json=items(job(), job()))
    assert resp.status_code == 422
    assert "document 2: metadata.name: trainingjob/train is also defined in document 1" in resp.json()["detail"]


def test_oversized_bodies_get_413(api):
    huge = job(args=["x" * (10 * 1000 * 1000)])  # a 10 MB object: under the body cap, over the object cap
    resp = api.post(f"{API}/apply", json=items(huge))
    assert resp.status_code == 413 and "document 1" in resp.json()["detail"]
    too_big = b"x" * (17 << 20)
    assert api.post(f"{API}/apply", content=too_big).status_code == 413  # refused by Content-Length

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap applies while reading
        for _ in range(17):
            yield b" " * (1 << 20)

    resp = api.post(f"{API}/apply", content=chunks())
    assert resp.status_code == 413 and "16 MiB" in resp.json()["detail"]


@pytest.mark.parametrize("content, status", [
    (b"{not json", 400),
    (b"[]", 422),
    (b'{"items": "nope"}', 422),
    (b'{"items": [{"source": "f", "document": 0, "object": {}}]}', 422),
    (b'{"items": []}', 422),
    (b'{"items": [], "extra": 1}', 422),
])
def test_malformed_requests_are_client_errors(api, content, status):
    resp = api.post(f"{API}/apply", content=content, headers={"Content-Type": "application/json"})
    assert resp.status_code == status
    assert isinstance(resp.json()["detail"], str) and "\n" not in resp.json()["detail"]


def test_get_list_delete(api, store):
    api.post(f"{API}/apply", json=items(job("a"), job("b")))
    other = job("c")
    other["metadata"]["namespace"] = "other"
    api.post(f"{API}/apply", json=items(other))
    listed = api.get(JOBS).json()
    assert listed["kind"] == "TrainingJobList" and listed["apiVersion"] == "shipyard.dev/v1alpha1"
    assert [o["metadata"]["name"] for o in listed["items"]] == ["a", "b"]
    assert listed["metadata"]["resourceVersion"] == str(store.current_version())
    assert len(api.get(f"{API}/trainingjobs").json()["items"]) == 3
    assert api.get(f"{JOBS}/a").json()["spec"]["command"] == ["python", "train.py"]
    assert api.get(f"{JOBS}/nope").json() == {"detail": "trainingjob/nope not found in project default"}
    assert api.get(f"{JOBS}/nope").status_code == 404
    assert api.delete(f"{JOBS}/a").json()["metadata"]["name"] == "a"
    assert api.delete(f"{JOBS}/a").status_code == 404
    resp = api.get(f"{API}/namespaces/default/widgets")
    assert resp.status_code == 404 and "trainingjobs" in resp.json()["detail"]


def test_delete_with_finalizers_marks_and_blocks_reapply(api, store):
    api.post(f"{API}/apply", json=items(job()))
    obj = store.get("TrainingJob", "default", "train")
    obj.metadata.finalizers = ["shipyard.dev/runtime"]
    store.update_metadata(obj)
    assert "deletionTimestamp" in api.delete(f"{JOBS}/train").json()["metadata"]
    resp = api.post(f"{API}/apply", json=items(job()))
    assert resp.status_code == 409 and "being deleted" in resp.json()["detail"]


def test_events(api, store):
    api.post(f"{API}/apply", json=items(job()))
    obj = store.get("TrainingJob", "default", "train")
    store.record_event(obj, "Normal", "Started", "2 replicas started")
    store.record_event(obj, "Normal", "Started", "2 replicas started")
    [event] = api.get(f"{JOBS}/train/events").json()["items"]
    assert (event["type"], event["reason"], event["count"]) == ("Normal", "Started", 2)
    assert event["firstTimestamp"] and event["lastTimestamp"]
    assert api.get(f"{JOBS}/nope/events").status_code == 404


def test_logs_stream(api, store):
    api.post(f"{API}/apply", json=items(job()))
    resp = api.get(f"{JOBS}/train/log")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    assert resp.text.splitlines() == [f"train line {i}" for i in range(5)]
    assert api.get(f"{JOBS}/train/log", params={"tailLines": 2}).text == "train line 3\ntrain line 4\n"
    assert api.get(f"{JOBS}/train/log", params={"replica": 3}).status_code == 404
    assert api.get(f"{JOBS}/nope/log").status_code == 404
    resp = api.get(f"{JOBS}/train/log", params={"tailLines": "many"})
    assert resp.status_code == 422 and "tailLines" in resp.json()["detail"]


def test_logs_without_a_source_is_501(store):
    app = create_app(store, None, hash_token(TOKEN), "9.9.9")
    with serve(app) as url, httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        api.post(f"{API}/apply", json=items(job()))
        assert api.get(f"{JOBS}/train/log").status_code == 501


def read_events(api: httpx.Client, count: int, **params: object) -> list[dict]:
    out = []
    with api.stream("GET", JOBS, params={"watch": "true", **params}, timeout=httpx.Timeout(10)) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/x-ndjson"
        for line in resp.iter_lines():
            out.append(json.loads(line))
            if len(out) == count:
                break
    return out


def test_watch_streams_changes(api, store):
    since = store.current_version()
    api.post(f"{API}/apply", json=items(job("a"), job("b")))
    obj = store.get("TrainingJob", "default", "a")
    obj.status.phase = "Running"
    store.update_status(obj)
    api.delete(f"{JOBS}/a")
    events = read_events(api, 3, resourceVersion=since, fieldSelector="metadata.name=a")
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert all(e["object"]["metadata"]["name"] == "a" for e in events)
    assert events[1]["object"]["status"]["phase"] == "Running"
    # A deletion carries the deletion's version, so resuming from it does not replay it.
    assert events[2]["object"]["metadata"]["resourceVersion"] == str(store.current_version())


def test_watch_sends_bookmarks_and_ends_on_timeout(app, api, store):
    app.state.bookmark_seconds = 0.05
    [bookmark] = read_events(api, 1, resourceVersion=store.current_version())
    assert bookmark == {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "0"}}}
    resp = api.get(JOBS, params={"watch": "true", "timeoutSeconds": 0})
    assert resp.status_code == 200 and resp.text == ""


def test_watch_from_a_compacted_version_is_410(tmp_path):
    first = SQLiteStore(tmp_path / "db")
    first.apply([TrainingJob.model_validate(job())])
    first.close()
    reopened = SQLiteStore(tmp_path / "db")  # history is in memory only: version 0 is gone
    app = create_app(reopened, None, hash_token(TOKEN), "9.9.9")
    with serve(app) as url, httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        resp = api.get(JOBS, params={"watch": "true", "resourceVersion": "0"})
        assert resp.status_code == 410 and "too old" in resp.json()["detail"]
        assert api.get(JOBS, params={"watch": "true", "resourceVersion": "x"}).status_code == 400
        resp = api.get(JOBS, params={"watch": "true", "fieldSelector": "spec.replicas=2"})
        assert resp.status_code == 400
    reopened.close()

