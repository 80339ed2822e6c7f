"""The audit log: who did what to which object, and the answer, in the control plane's SQLite.

One row per request the API chooses to audit (every mutating one): identity, verb, target and status code,
never the request body (it may hold secrets, and would make the log as large as the data). Recording is one
INSERT; pruning, by age and by row count, runs at most once a minute so a busy API pays for it rarely.
Times are kept as integer microseconds since the epoch: indexed, compared and pruned as numbers.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from sqlalchemy import Column, Index, Integer, MetaData, String, Table, Text, delete, func, insert, select
from sqlalchemy.engine import Engine

__all__ = ["AuditRecord", "SQLiteAudit", "to_json_line"]

PRUNE_EVERY = timedelta(minutes=1)
# Free text (a reason can echo a validation error) is bounded so that no single row can grow the log much.
MAX_TEXT = 1024
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

metadata = MetaData()
audit_log = Table(
    "audit_log", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time_us", Integer, nullable=False, index=True),
    Column("user", String, nullable=False),
    Column("groups", Text, nullable=False),  # JSON list
    Column("token_name", String, nullable=True),
    Column("verb", String, nullable=False),
    Column("resource", String, nullable=False),
    Column("subresource", String, nullable=True),
    Column("namespace", String, nullable=True),
    Column("name", String, nullable=True),
    Column("code", Integer, nullable=False),
    Column("client", String, nullable=False),
    Column("reason", Text, nullable=False),
    # The two filters `query` offers, each newest-first by id.
    Index("ix_audit_log_namespace_id", "namespace", "id"),
    Index("ix_audit_log_user_id", "user", "id"),
)


@dataclass(frozen=True)
class AuditRecord:
    time: datetime
    user: str
    groups: tuple[str, ...]
    token_name: str | None
    verb: str
    resource: str
    subresource: str | None
    namespace: str | None
    name: str | None
    code: int
    client: str
    reason: str = ""


def _micros(ts: datetime) -> int:
    if ts.tzinfo is None:  # a naive time would be read as the host's local time; refuse to guess
        raise ValueError("invalid time: must be timezone-aware")
    return (ts - _EPOCH) // timedelta(microseconds=1)


def _from_micros(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _rfc3339(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _row(row) -> AuditRecord:
    return AuditRecord(time=_from_micros(row.time_us), user=row.user, groups=tuple(json.loads(row.groups)),
                       token_name=row.token_name, verb=row.verb, resource=row.resource, subresource=row.subresource,
                       namespace=row.namespace, name=row.name, code=row.code, client=row.client, reason=row.reason)


def to_json_line(record: AuditRecord) -> str:
    """The record as one line of JSON for the operator's log: exactly the record's fields, time in RFC 3339 UTC.
    json.dumps escapes newlines and non-ASCII, so a hostile name or reason cannot forge a second line."""
    data = {f.name: getattr(record, f.name) for f in fields(record)}
    data["time"] = _rfc3339(record.time)
    data["groups"] = list(record.groups)
    return json.dumps(data, separators=(",", ":"))


class SQLiteAudit:
    def __init__(self, engine: Engine, retention: timedelta = timedelta(days=30), max_rows: int = 1_000_000, *,
                 clock: Callable[[], datetime] | None = None):
        if retention <= timedelta(0) or max_rows < 1:
            raise ValueError("invalid audit limits: retention must be positive and max_rows at least 1")
        self._engine = engine
        self._retention = retention
        self._max_rows = max_rows
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._lock = threading.Lock()
        self._last_prune: datetime | None = None  # None: prune on the first record (a restart may be overdue)
        metadata.create_all(engine)
        self._insert = insert(audit_log)

    def record(self, record: AuditRecord) -> None:
        self.record_many([record])

    def record_many(self, records: list[AuditRecord]) -> None:
        """Several records in one transaction: an apply of 500 objects is one commit, not 500."""
        if not records:
            return
        rows = [self._values(r) for r in records]
        now = self._clock()
        with self._lock, self._engine.begin() as conn:
            conn.execute(self._insert, rows)
            if self._last_prune is None or now - self._last_prune >= PRUNE_EVERY:
                self._last_prune = now
                self._prune(conn, now)

    @staticmethod
    def _values(record: AuditRecord) -> dict[str, Any]:
        return {
            "time_us": _micros(record.time), "user": record.user, "groups": json.dumps(list(record.groups)),
            "token_name": record.token_name, "verb": record.verb, "resource": record.resource,
            "subresource": record.subresource, "namespace": record.namespace, "name": record.name,
            "code": int(record.code), "client": record.client[:MAX_TEXT], "reason": record.reason[:MAX_TEXT],
        }

    def prune(self) -> None:
        """Drop rows older than the retention and all but the newest max_rows, now."""
        now = self._clock()
        with self._lock, self._engine.begin() as conn:
            self._last_prune = now
            self._prune(conn, now)

    def query(self, namespace: str | None = None, user: str | None = None, since: datetime | None = None,
              limit: int = 1000) -> list[AuditRecord]:
        """The newest `limit` matching records, oldest first (as a log reads)."""
        stmt = select(audit_log).order_by(audit_log.c.id.desc()).limit(max(0, limit))
        if namespace is not None:
            stmt = stmt.where(audit_log.c.namespace == namespace)
        if user is not None:
            stmt = stmt.where(audit_log.c.user == user)
        if since is not None:
            stmt = stmt.where(audit_log.c.time_us >= _micros(since))
        with self._engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [_row(r) for r in reversed(rows)]

    def _prune(self, conn, now: datetime) -> None:
        conn.execute(delete(audit_log).where(audit_log.c.time_us < _micros(now - self._retention)))
        # Rows get ids max+1 in order of arrival and are only ever deleted, so ids above max(id) - max_rows are
        # at most max_rows rows: found by one index lookup, where counting a million rows would scan them.
        newest = conn.execute(select(func.max(audit_log.c.id))).scalar()
        if newest is not None and newest > self._max_rows:
            conn.execute(delete(audit_log).where(audit_log.c.id <= newest - self._max_rows))
