"""SQLite store: versions, atomic apply, immutability, status conflicts, finalizers, watch and events."""

import threading

import pytest

from shipyard.resources import TrainingJob
from shipyard.store import Conflict, Gone, Invalid
from shipyard.store.sqlite import SQLiteStore


def job(name="a", **spec):
    return TrainingJob.model_validate({"metadata": {"name": name}, "spec": {"command": ["x"], **spec}})


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(tmp_path / "db")
    yield s
    s.close()


def test_apply_create_unchanged_configured(store):
    [r] = store.apply([job()])
    assert r.action == "created" and r.resource.metadata.uid and r.resource.metadata.generation == 1
    assert store.apply([job()])[0].action == "unchanged"
    labelled = job()
    labelled.metadata.labels = {"team": "x"}
    assert store.apply([labelled])[0].action == "configured"


def test_immutable_spec_rolls_back_whole_apply(store):
    store.apply([job("a")])
    version = store.current_version()
    with pytest.raises(Invalid):
        store.apply([job("b"), job("a", replicas=3)])
    assert store.get("TrainingJob", "default", "b") is None
    assert store.current_version() == version


def test_status_update_needs_current_version(store):
    [r] = store.apply([job()])
    first = r.resource.model_copy(deep=True)
    first.status.phase = "Running"
    store.update_status(first)
    stale = r.resource.model_copy(deep=True)
    stale.status.phase = "Failed"
    with pytest.raises(Conflict):
        store.update_status(stale)


def test_finalizer_delays_delete(store):
    [r] = store.apply([job()])
    obj = r.resource
    obj.metadata.finalizers = ["x"]
    obj = store.update_metadata(obj)
    store.delete("TrainingJob", "default", "a")
    pending = store.get("TrainingJob", "default", "a")
    assert pending.metadata.deletion_timestamp is not None
    pending.metadata.finalizers = []
    store.update_metadata(pending)
    assert store.get("TrainingJob", "default", "a") is None


def test_state_survives_reopen(tmp_path):
    s = SQLiteStore(tmp_path / "db")
    s.apply([job()])
    version = s.current_version()
    s.close()
    again = SQLiteStore(tmp_path / "db")
    assert again.get("TrainingJob", "default", "a") is not None
    assert again.current_version() == version
    with pytest.raises(Gone):  # history before the restart is compacted
        again.watch(0, timeout=0)
    again.close()


def test_watch_sees_changes_in_order(store):
    start = store.current_version()
    seen = []

    def watcher():
        since = start
        while len(seen) < 2:
            for ev in store.watch(since, timeout=5):
                seen.append(ev.type)
                since = ev.resource_version

    t = threading.Thread(target=watcher)
    t.start()
    store.apply([job()])
    store.delete("TrainingJob", "default", "a")
    t.join(10)
    assert seen == ["ADDED", "DELETED"]


def test_events_are_correlated(store):
    [r] = store.apply([job()])
    store.record_event(r.resource, "Warning", "Unschedulable", "no cpu")
    store.record_event(r.resource, "Warning", "Unschedulable", "no cpu")
    store.record_event(r.resource, "Normal", "Running", "ok")
    events = store.list_events("TrainingJob", "default", "a")
    assert [(e.reason, e.count) for e in events] == [("Unschedulable", 2), ("Running", 1)]


def test_close_releases_blocked_watchers(tmp_path):
    s = SQLiteStore(tmp_path / "db")
    returned = threading.Event()

    def watcher():
        s.watch(s.current_version(), timeout=60)
        returned.set()

    t = threading.Thread(target=watcher)
    t.start()
    s.close()
    assert returned.wait(10)  # well before the 60 s timeout
    t.join()


def test_api_keys_are_hashed_persisted_and_revocable(tmp_path):
    from shipyard.store import Conflict, NotFound

    store = SQLiteStore(tmp_path / "keys.db")
    store.api_keys.add_api_key("team-a", "ci", "h1", "sy_key_abcde")
    store.api_keys.add_api_key("team-b", "ci", "h2", "sy_key_fghij")  # names are per project
    with pytest.raises(Conflict):
        store.api_keys.add_api_key("team-a", "ci", "h3", "sy_key_klmno")
    store.close()
    reopened = SQLiteStore(tmp_path / "keys.db")  # the in-memory index is rebuilt from the table
    assert reopened.api_keys.api_key_project("h1") == "team-a"
    assert reopened.api_keys.revoke_api_key("team-a", "ci").revoked_at is not None
    assert reopened.api_keys.api_key_project("h1") is None and reopened.api_keys.api_key_project("h2") == "team-b"
    with pytest.raises(NotFound):
        reopened.api_keys.revoke_api_key("team-a", "ci")
    assert [(k.project, k.name, k.revoked_at is None) for k in reopened.api_keys.list_api_keys()] == [
        ("team-a", "ci", False), ("team-b", "ci", True)]
    reopened.close()
