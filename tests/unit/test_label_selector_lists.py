"""Server-side label selectors: the SQLite store filters in SQL, the API's `labelSelector` narrows lists and
watches (a malformed one is a 400), the client sends it, and the Kubernetes store passes it to the cluster."""

from __future__ import annotations

import pytest

from shipyard.resources.selector import Selector, parse_selector
from shipyard.store.sqlite import SQLiteStore
from tests.unit.test_api import API, JOBS, TOKEN, api, app, items, job, read_events, server, store  # noqa: F401

LABELS = {"a": {"team": "x", "tier": "gold"}, "b": {"team": "y"}, "c": {"team": "x"}, "d": {},
          "e": {"team": "z", "tier": "bronze"}}

CASES = [
    ("team=x", ["a", "c"]),
    ("team==x", ["a", "c"]),
    ("team!=x", ["b", "d", "e"]),  # absent labels match != as in Kubernetes
    ("team in (x,z)", ["a", "c", "e"]),
    ("team notin (x,z)", ["b", "d"]),
    ("tier", ["a", "e"]),
    ("!tier", ["b", "c", "d"]),
    ("team=x,tier=gold", ["a"]),
    ("team=x,team!=x", []),
    ("example.com/owner=me", []),
]


def labelled(name: str) -> dict:
    obj = job(name)
    obj["metadata"]["labels"] = LABELS[name]
    return obj


@pytest.fixture
def filled(store: SQLiteStore, api):  # noqa: F811
    api.post(f"{API}/apply", json=items(*(labelled(n) for n in LABELS)))
    return store


@pytest.mark.parametrize("text,expected", CASES)
def test_the_sqlite_store_filters_by_every_selector_form(filled: SQLiteStore, text: str, expected: list[str]):
    selector = parse_selector(text)
    assert [r.metadata.name for r in filled.list("TrainingJob", "default", selector)] == expected
    # The same answer as the selector's own matching over everything (the SQL and the Python agree).
    every = filled.list("TrainingJob", "default")
    assert [r.metadata.name for r in every if selector.matches(r.metadata.labels)] == expected
    page = filled.list_page("TrainingJob", "default", selector=selector, limit=2)
    assert len(page.items) == min(2, len(expected))


@pytest.mark.parametrize("text,expected", CASES)
def test_the_api_lists_only_what_the_label_selector_matches(filled, api, text: str, expected: list[str]):  # noqa: F811
    answer = api.get(JOBS, params={"labelSelector": text})
    assert answer.status_code == 200
    assert [o["metadata"]["name"] for o in answer.json()["items"]] == expected
    # Paged, the pages together are the same list.
    names, params = [], {"labelSelector": text, "limit": 1}
    while True:
        page = api.get(JOBS, params=params).json()
        names += [o["metadata"]["name"] for o in page["items"]]
        if not page["metadata"].get("continue"):
            break
        params["continue"] = page["metadata"]["continue"]
    assert names == expected


def test_a_malformed_label_selector_is_a_400_naming_it(api):  # noqa: F811
    answer = api.get(JOBS, params={"labelSelector": "team in (x"})
    assert answer.status_code == 400
    assert "label selector" in answer.json()["detail"]
    assert api.get(f"{API}/trainingjobs", params={"labelSelector": "=x"}).status_code == 400


def test_a_watch_with_a_label_selector_sends_only_matching_changes(filled, api, store):  # noqa: F811
    since = store.current_version()
    annotated = [labelled(n) for n in ("b", "a", "d", "c")]
    for obj in annotated:
        obj["metadata"]["annotations"] = {"note": "changed"}
    assert api.post(f"{API}/apply", json=items(*annotated)).status_code == 200
    events = read_events(api, 2, resourceVersion=since, labelSelector="team=x")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("MODIFIED", "a"), ("MODIFIED", "c")]


def test_the_client_sends_the_selector_to_the_server(filled, server):  # noqa: F811
    from shipyard.client import Client

    with Client(url=server[1], token=TOKEN) as client:
        found, _ = client.list_wire("TrainingJob", "default", selector="team in (x,y),!tier")
    assert [o["metadata"]["name"] for o in found] == ["b", "c"]


class SelectorKubeApi:
    """Just enough of KubeApi for KubernetesStore.list: records the selector it is asked with."""

    def __init__(self, objects: list[dict]):
        self.objects = objects
        self.asked: list[Selector | None] = []

    def register(self, rtype) -> None:
        pass

    def list(self, kind, namespace=None, labels=None, fields=None, selector=None):
        self.asked.append(selector)
        return [o for o in self.objects if selector is None or selector.matches(o["metadata"].get("labels"))]


def test_the_kubernetes_store_asks_the_cluster_with_the_selector():
    from shipyard.store.kubernetes import KubernetesStore

    cluster = [{**labelled(n), "metadata": {"name": n, "namespace": "default", "uid": f"u-{n}",
                                            "resourceVersion": "3", "labels": LABELS[n]}} for n in LABELS]
    api = SelectorKubeApi(cluster)
    store = KubernetesStore(api, ["default"])  # type: ignore[arg-type]
    selector = parse_selector("team=x")
    assert [r.metadata.name for r in store.list("TrainingJob", "default", selector)] == ["a", "c"]
    assert api.asked == [selector]


def test_lightkube_gets_every_selector_term():
    from shipyard.cluster.api import _label_selector

    from lightkube.core.selector import build_selector

    selector = parse_selector("team in (x,z),tier,!gone,owner!=me,app=web,zone notin (a)")
    assert build_selector(_label_selector({"k": "v"}, selector)) == \
        "k=v,team in (x,z),tier,!gone,owner!=me,app=web,zone notin (a)"
    assert parse_selector(selector.text()) == selector
