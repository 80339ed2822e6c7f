"""The audit log: record and query with filters, pruning by age and by count, the JSON line."""

import json
from dataclasses import fields, replace
from datetime import datetime, timedelta, timezone

import pytest

from shipyard.store.audit import AuditRecord, SQLiteAudit, to_json_line
from shipyard.store.sqlite import SQLiteStore

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


def rec(i=0, user="alice", namespace="prod", time=None, **kw):
    base = AuditRecord(time=time or T0 + timedelta(seconds=i), user=user, groups=("dev",), token_name="laptop",
                       verb="create", resource="trainingjobs", subresource=None, namespace=namespace,
                       name=f"job-{i}", code=201, client="10.0.0.1")
    return replace(base, **kw)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(tmp_path / "db")
    yield s
    s.close()


def test_record_and_query_filters(store, clock):
    audit = SQLiteAudit(store._engine, clock=clock)
    audit.record(rec(0))
    audit.record(rec(1, user="bob", namespace="dev", verb="delete", code=403, reason="forbidden"))
    audit.record(rec(2, namespace=None, resource="namespaces", subresource="status", token_name=None))
    everything = audit.query()
    assert [r.name for r in everything] == ["job-0", "job-1", "job-2"]  # newest last
    assert everything[0] == rec(0)
    assert everything[1].reason == "forbidden" and everything[1].code == 403
    assert everything[2].namespace is None and everything[2].subresource == "status"
    assert everything[2].token_name is None
    assert [r.name for r in audit.query(namespace="prod")] == ["job-0"]
    assert [r.name for r in audit.query(user="bob")] == ["job-1"]
    assert [r.name for r in audit.query(user="alice", namespace="dev")] == []
    assert [r.name for r in audit.query(since=T0 + timedelta(seconds=1))] == ["job-1", "job-2"]
    assert [r.name for r in audit.query(limit=2)] == ["job-1", "job-2"]  # the newest, still oldest first
    assert all(r.time.tzinfo is not None for r in everything)


def test_naive_time_refused(store):
    with pytest.raises(ValueError, match="time"):
        SQLiteAudit(store._engine).record(rec(time=datetime(2025, 1, 1)))


def test_retention_prunes_old_rows_at_most_once_a_minute(store, clock):
    audit = SQLiteAudit(store._engine, retention=timedelta(days=1), clock=clock)
    audit.record(rec(0))
    audit.record(rec(40))
    clock.now = T0 + timedelta(days=1, seconds=30)
    audit.record(rec(time=clock.now, name="late"))  # prunes: job-0 is over a day old, job-40 not yet
    assert [r.name for r in audit.query()] == ["job-40", "late"]
    clock.now += timedelta(seconds=30)
    audit.record(rec(time=clock.now, name="later"))  # job-40 has expired, but the last prune was 30 s ago
    assert [r.name for r in audit.query()] == ["job-40", "late", "later"]
    clock.now += timedelta(seconds=30)
    audit.record(rec(time=clock.now, name="latest"))
    assert [r.name for r in audit.query()] == ["late", "later", "latest"]


def test_max_rows(store, clock):
    audit = SQLiteAudit(store._engine, max_rows=3, clock=clock)
    for i in range(5):
        audit.record(rec(i))
    assert len(audit.query()) == 5  # pruning waits for its minute ...
    audit.prune()  # ... or an explicit call
    assert [r.name for r in audit.query()] == ["job-2", "job-3", "job-4"]
    clock.now += timedelta(minutes=1)
    audit.record(rec(5))
    assert [r.name for r in audit.query()] == ["job-3", "job-4", "job-5"]


def test_rows_survive_a_restart(tmp_path, clock):
    store = SQLiteStore(tmp_path / "db")
    SQLiteAudit(store._engine, clock=clock).record(rec(0))
    store.close()
    store = SQLiteStore(tmp_path / "db")
    try:
        assert SQLiteAudit(store._engine, clock=clock).query() == [rec(0)]
    finally:
        store.close()


def test_json_line_has_exactly_the_fields():
    record = rec(0, name="evil\n{\"verb\":\"get\"}", reason="naïve")
    line = to_json_line(record)
    assert "\n" not in line
    data = json.loads(line)
    assert set(data) == {f.name for f in fields(AuditRecord)}
    assert data["time"] == "2025-01-01T00:00:00.000000Z"
    assert data["groups"] == ["dev"] and data["name"] == record.name and data["reason"] == "naïve"
    assert data["subresource"] is None and data["code"] == 201
