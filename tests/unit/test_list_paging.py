"""Paged lists (`limit`/`continue`, as Kubernetes lists): the API over a real SQLite store, and the client that
follows continue tokens by itself."""

from __future__ import annotations

import base64
import json

import pytest

import shipyard.client as client_module
from shipyard.client import Client
from shipyard.resources import TrainingJob
from shipyard.store.sqlite import SQLiteStore
from tests.unit.test_api import API, JOBS, TOKEN, api, app, items, job, read_events, server, store  # noqa: F401

NAMES = ["a", "b", "c", "d", "e", "f", "g"]


def names(page: dict) -> list[str]:
    return [o["metadata"]["name"] for o in page["items"]]


def pages(api, path: str, **params) -> list[dict]:
    out = [api.get(path, params=params).json()]
    while out[-1]["metadata"].get("continue"):
        out.append(api.get(path, params={**params, "continue": out[-1]["metadata"]["continue"]}).json())
    return out


def test_limit_and_continue_walk_the_list_in_order(api, store):
    api.post(f"{API}/apply", json=items(*(job(n) for n in reversed(NAMES))))
    other = job("zz")
    other["metadata"]["namespace"] = "other"
    api.post(f"{API}/apply", json=items(other))
    walked = pages(api, JOBS, limit=3)
    assert [names(p) for p in walked] == [["a", "b", "c"], ["d", "e", "f"], ["g"]]
    assert "continue" not in walked[-1]["metadata"]
    assert {p["metadata"]["resourceVersion"] for p in walked} == {str(store.current_version())}
    assert all(p["kind"] == "TrainingJobList" for p in walked)
    # Across projects, and with no limit (or 0, as Kubernetes): everything in one answer.
    assert [names(p) for p in pages(api, f"{API}/trainingjobs", limit=4)] == [["a", "b", "c", "d"],
                                                                           ["e", "f", "g", "zz"]]
    assert names(api.get(JOBS, params={"limit": 0}).json()) == NAMES
    assert names(api.get(JOBS).json()) == NAMES
    assert names(api.get(JOBS, params={"limit": 2, "fieldSelector": "metadata.name=e"}).json()) == ["e"]


def test_pages_stay_consistent_while_the_list_changes_and_a_watch_from_their_version_misses_nothing(api, store):
    api.post(f"{API}/apply", json=items(*(job(n) for n in NAMES)))
    first = api.get(JOBS, params={"limit": 3}).json()
    version = first["metadata"]["resourceVersion"]
    # Meanwhile: one served object goes, one not yet served goes, one is added before the cursor, one changes.
    api.delete(f"{JOBS}/b")
    api.delete(f"{JOBS}/f")
    changed = job("e")
    changed["metadata"]["labels"] = {"team": "x"}
    api.post(f"{API}/apply", json=items(job("aa"), changed))
    rest = pages(api, JOBS, limit=3, **{"continue": first["metadata"]["continue"]})
    listed = names(first) + [n for p in rest for n in names(p)]
    assert listed == ["a", "b", "c", "d", "e", "g"]  # each object that existed throughout, exactly once
    assert {p["metadata"]["resourceVersion"] for p in rest} == {version}  # every page has the first's
    events = read_events(api, 4, resourceVersion=version)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("DELETED", "b"), ("DELETED", "f"), ("ADDED", "aa"), ("MODIFIED", "e")]


@pytest.mark.parametrize("token", [
    "not-a-token!",
    base64.urlsafe_b64encode(b"[1, 2]").decode(),
    base64.urlsafe_b64encode(json.dumps({"rv": 1, "of": ["TrainingJob", "default", ""], "after": 5}).encode()).decode(),
])
def test_a_bad_continue_token_is_a_one_line_400(api, store, token):
    resp = api.get(JOBS, params={"limit": 2, "continue": token})
    assert resp.status_code == 400
    detail = resp.json()["detail"]
    assert "continue token is not valid" in detail and "\n" not in detail


def test_a_token_of_another_list_is_refused(api, store):
    api.post(f"{API}/apply", json=items(*(job(n) for n in NAMES)))
    token = api.get(JOBS, params={"limit": 2}).json()["metadata"]["continue"]
    for path in (f"{API}/namespaces/other/trainingjobs", f"{API}/namespaces/default/sweeps", f"{API}/trainingjobs"):
        resp = api.get(path, params={"limit": 2, "continue": token})
        assert resp.status_code == 400 and "another list" in resp.json()["detail"], path


def test_lists_serve_the_stored_json_without_validating_each_row(api, store, monkeypatch):
    api.post(f"{API}/apply", json=items(*(job(n) for n in NAMES)))
    expected = [store.get("TrainingJob", "default", n).to_wire() for n in NAMES]

    def no_validation(body):
        raise AssertionError("a list must not parse rows through the models")
    monkeypatch.setattr(SQLiteStore, "_load", staticmethod(no_validation))
    assert api.get(JOBS).json()["items"] == expected
    assert [o for p in pages(api, JOBS, limit=3) for o in p["items"]] == expected


class PlainStore:
    """A store with no `list_page` of its own (the API pages its `list`)."""

    def __init__(self, inner: SQLiteStore):
        self._inner = inner

    def __getattr__(self, name: str):
        if name == "list_page":
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_a_store_without_paging_of_its_own_is_paged_by_the_api(api, store, app):
    api.post(f"{API}/apply", json=items(*(job(n) for n in NAMES)))
    app.state.store = PlainStore(store)
    walked = pages(api, JOBS, limit=3)
    assert [names(p) for p in walked] == [["a", "b", "c"], ["d", "e", "f"], ["g"]]
    assert api.get(JOBS, params={"limit": 2, "continue": "garbage"}).status_code == 400


def test_the_client_follows_continue_tokens(server, store, monkeypatch):
    store.apply([TrainingJob.model_validate(job(n)) for n in NAMES])
    monkeypatch.setattr(client_module, "LIST_PAGE", 3)
    with Client(url=server[1], token=TOKEN) as client:
        sent: list[dict] = []
        real = client._request

        def counting(method, path, **kwargs):
            sent.append(dict(kwargs.get("params") or {}))
            return real(method, path, **kwargs)
        monkeypatch.setattr(client, "_request", counting)
        listed, version = client.list_with_version("TrainingJob")
    assert [r.metadata.name for r in listed] == NAMES
    assert version == str(store.current_version())
    assert len(sent) == 3 and all(p["limit"] == 3 for p in sent)
    assert "continue" not in sent[0] and all("continue" in p for p in sent[1:])


class PagingKubeApi:
    """Just enough of KubeApi for KubernetesStore.list_page: a cluster that pages by its own opaque tokens."""

    def __init__(self, objects: list[dict]):
        self.objects = objects
        self.asked: list[tuple] = []

    def register(self, rtype) -> None:
        pass

    def list_page(self, kind, namespace, limit, continue_token, selector=None):
        self.asked.append((kind, namespace, limit, continue_token))
        start = int(continue_token[len("cluster-"):]) if continue_token else 0
        end = len(self.objects) if limit is None else start + limit
        return self.objects[start:end], (f"cluster-{end}" if end < len(self.objects) else None)


def test_the_kubernetes_store_passes_limit_and_the_clusters_token_through():
    from shipyard.store.kubernetes import KubernetesStore

    cluster = [{**job(n), "metadata": {"name": n, "namespace": "default", "uid": f"u-{n}",
                                       "resourceVersion": "7", "managedFields": [{"manager": "x"}]}}
               for n in NAMES]
    api = PagingKubeApi(cluster)
    store = KubernetesStore(api, ["default"])  # type: ignore[arg-type]
    first = store.list_page("TrainingJob", "default", limit=3)
    assert [json.loads(i)["metadata"]["name"] for i in first.items] == ["a", "b", "c"]
    assert "managedFields" not in json.loads(first.items[0])["metadata"]
    second = store.list_page("TrainingJob", "default", limit=3, continue_token=first.continue_token)
    assert [json.loads(i)["metadata"]["name"] for i in second.items] == ["d", "e", "f"]
    assert api.asked == [("TrainingJob", "default", 3, None), ("TrainingJob", "default", 3, "cluster-3")]
    assert second.resource_version == first.resource_version
    with pytest.raises(Exception, match="another list"):
        store.list_page("Sweep", "default", limit=3, continue_token=first.continue_token)
