"""SQLite store (SQLAlchemy, WAL): the embedded control plane's source of truth.

Objects are kept whole as JSON with their version columns beside them; one global, persisted
resourceVersion counter orders every change, as etcd's revision does, so watchers can resume. Watch history
is kept in memory only (a restart compacts it: watchers get Gone and relist, exactly as with Kubernetes).
All writes are serialised by one lock: the daemon is the only writer, and SQLite would serialise anyway.
"""

from __future__ import annotations

import json
import secrets
import threading
import uuid
from collections import deque
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from sqlalchemy import (
    Column, Integer, MetaData, String, Table, Text, and_, create_engine, delete, event, func, insert, not_, or_, select,
    update,
)
from sqlalchemy.engine import Connection

from shipyard.resources import Resource, kind_class
from shipyard.resources.base import utcnow
from shipyard.resources.selector import Selector

from . import paging
from .apikeys import SQLiteApiKeys
from .audit import SQLiteAudit
from .identities import SQLiteIdentities, load_or_create_key
from .protocol import ApplyResult, Conflict, Event, Gone, Invalid, ListPage, NotFound, WatchEvent
from .rbac import SQLiteRbac
from .secret_values import DELETE_SEALED, SELECT_SEALED, UPSERT_SEALED, SecretCipher, define_table

metadata = MetaData()
objects = Table(
    "objects", metadata,
    Column("kind", String, primary_key=True),
    Column("namespace", String, primary_key=True),
    Column("name", String, primary_key=True),
    Column("uid", String, nullable=False, unique=True),
    Column("resource_version", Integer, nullable=False),
    Column("body", Text, nullable=False),
)
# A Secret's values, sealed (store/secret_values.py): never in `objects.body`, which is what the API answers.
secret_values = define_table(metadata)
counters = Table(
    "counters", metadata,
    Column("name", String, primary_key=True),
    Column("value", Integer, nullable=False),
)
events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uid", String, index=True, nullable=False),
    Column("kind", String, nullable=False),
    Column("namespace", String, nullable=False),
    Column("name", String, nullable=False),
    Column("type", String, nullable=False),
    Column("reason", String, nullable=False),
    Column("message", Text, nullable=False),
    Column("count", Integer, nullable=False),
    Column("first_timestamp", String, nullable=False),
    Column("last_timestamp", String, nullable=False),
)

WATCH_HISTORY = 10_000
# The hot paths (get, apply, status writes) as plain SQL: building a SQLAlchemy statement per row cost more
# than the write itself (apply ran at under 100 objects/s on a loaded machine).
_GET_BODY = "SELECT body FROM objects WHERE kind = ? AND namespace = ? AND name = ?"
_INSERT = "INSERT INTO objects (kind, namespace, name, uid, resource_version, body) VALUES (?, ?, ?, ?, ?, ?)"
_UPDATE = "UPDATE objects SET resource_version = ?, body = ? WHERE kind = ? AND namespace = ? AND name = ?"
_SET_VERSION = "UPDATE counters SET value = ? WHERE name = 'resourceVersion'"
MAX_EVENTS_PER_OBJECT = 200


def _label_clauses(selector: Selector) -> list[Any]:
    """A label selector as SQL over the stored JSON (SQLite's JSON functions): the rows that do not match are
    never read into Python, so a controller asking for its few children among 10,000 objects pays for a scan
    in C, not for parsing and validating every row. Keys are valid label keys (the parser checked), which
    contain no double quote, so quoting the key in the JSON path is safe."""
    clauses = []
    for req in selector.requirements:
        label = func.json_extract(objects.c.body, f'$.metadata.labels."{req.key}"')
        if req.op == "exists":
            clauses.append(label.is_not(None))
        elif req.op == "!exists":
            clauses.append(label.is_(None))
        elif req.op in ("=", "in"):
            clauses.append(label.in_(req.values))
        else:  # != and notin also hold where the label is absent, as in Kubernetes
            clauses.append(or_(label.is_(None), not_(label.in_(req.values))))
    return clauses


def _iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).isoformat()


class SQLiteStore:
    def __init__(self, path: Path | str):
        url = "sqlite://" if str(path) == ":memory:" else f"sqlite:///{path}"
        self._engine = create_engine(url, connect_args={"check_same_thread": False})

        @event.listens_for(self._engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a process crash (kill -9)
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()

        metadata.create_all(self._engine)
        self.api_keys = SQLiteApiKeys(self._engine)
        # Who may do what (api/authz.py): identities with keyed token hashes (the key in a 0600 file beside
        # the database; in memory, a key of this process), the roles and bindings, and the audit trail.
        key = secrets.token_bytes(32) if str(path) == ":memory:" else \
            load_or_create_key(Path(path).with_name("identity.key"))
        self.identities = SQLiteIdentities(self._engine, key)
        self.rbac = SQLiteRbac(self._engine)
        self.audit = SQLiteAudit(self._engine)
        self._cipher = SecretCipher.beside(path)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._history: deque[WatchEvent] = deque(maxlen=WATCH_HISTORY)
        self._subscribers: list[Callable[[WatchEvent], None]] = []
        self._closed = False
        with self._engine.begin() as conn:
            self._version = self._read_version(conn)
        # Versions at or below this happened before this process started: their history is not kept.
        self._compacted = self._version

    # --- reads ---------------------------------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> Resource | None:
        with self._engine.connect() as conn:
            row = conn.exec_driver_sql(_GET_BODY, (kind, namespace, name)).first()
            return self._load(row[0], conn) if row else None

    def list(self, kind: str | None = None, namespace: str | None = None,
             selector: Selector | None = None) -> list[Resource]:
        query = select(objects.c.body).order_by(objects.c.kind, objects.c.namespace, objects.c.name)
        if kind:
            query = query.where(objects.c.kind == kind)
        if namespace:
            query = query.where(objects.c.namespace == namespace)
        if selector:
            query = query.where(*_label_clauses(selector))
        with self._engine.connect() as conn:
            return [self._load(row[0], conn) for row in conn.execute(query)]

    def list_page(self, kind: str, namespace: str | None = None, name: str | None = None,
                  limit: int | None = None, continue_token: str | None = None,
                  selector: Selector | None = None) -> ListPage:
        """A page in wire form, straight from the stored JSON: every row was validated when it was written,
        so reading it back through the model would only cost time (most of what a list used to take)."""
        version, after = self._version, None  # version first: a watch from it never misses a later change
        if continue_token:
            token = paging.decode(kind, namespace, name, continue_token)
            version, after = token.resource_version, token.after
        limit = paging.check_limit(limit)
        query = select(objects.c.namespace, objects.c.name, objects.c.body).where(objects.c.kind == kind) \
            .order_by(objects.c.namespace, objects.c.name)
        if namespace:
            query = query.where(objects.c.namespace == namespace)
        if name:
            query = query.where(objects.c.name == name)
        if selector:
            query = query.where(*_label_clauses(selector))
        if after is not None:
            query = query.where(or_(objects.c.namespace > after[0],
                                    and_(objects.c.namespace == after[0], objects.c.name > after[1])))
        if limit is not None:
            query = query.limit(limit + 1)  # one more than asked says whether another page follows
        with self._engine.connect() as conn:
            rows = [(r[0], r[1], r[2]) for r in conn.execute(query)]
        return paging.page_of(rows, kind, namespace, name, limit, version)

    def current_version(self) -> int:
        return self._version

    # --- writes --------------------------------------------------------------------------------------

    def apply(self, resources: list[Resource]) -> list[ApplyResult]:
        results: list[ApplyResult] = []
        pending: list[WatchEvent] = []
        with self._transaction() as conn:
            for incoming in resources:
                existing = self._get_locked(conn, *incoming.key)
                if existing is None:
                    created, wire = self._new_object(conn, incoming)
                    pending.append(WatchEvent("ADDED", int(created.metadata.resource_version or 0), wire))
                    results.append(ApplyResult(created, "created"))
                    continue
                if existing.metadata.deletion_timestamp is not None:
                    raise Conflict(f"{existing.ref} is being deleted; apply it again once it is gone")
                spec_changed = existing.spec != incoming.spec  # type: ignore[attr-defined]
                if spec_changed and type(existing).SPEC_IMMUTABLE:
                    raise Invalid(f"{existing.ref}: spec is immutable for {existing.kind}; "
                                  f"delete it and apply again to change it")
                meta_changed = (existing.metadata.labels != incoming.metadata.labels
                                or existing.metadata.annotations != incoming.metadata.annotations)
                if not spec_changed and not meta_changed:
                    results.append(ApplyResult(existing, "unchanged"))
                    continue
                updated = existing.model_copy(deep=True, update={"spec": incoming.spec})  # type: ignore[attr-defined]
                updated.metadata.labels = dict(incoming.metadata.labels)
                updated.metadata.annotations = dict(incoming.metadata.annotations)
                if spec_changed:
                    updated.metadata.generation = (existing.metadata.generation or 1) + 1
                stored = self._write(conn, updated)
                pending.append(WatchEvent("MODIFIED", int(stored.metadata.resource_version or 0), stored.to_wire()))
                results.append(ApplyResult(stored, "configured"))
            self._publish_locked(pending)
        self._notify(pending)
        return results

    def update_status(self, resource: Resource) -> Resource:
        return self._update(resource, lambda current: current.model_copy(
            update={"status": resource.status}))  # type: ignore[attr-defined]

    def update_metadata(self, resource: Resource) -> Resource:
        def merge(current: Resource) -> Resource:
            copy = current.model_copy(deep=True)
            copy.metadata.finalizers = list(resource.metadata.finalizers)
            return copy
        return self._update(resource, merge)

    def delete(self, kind: str, namespace: str, name: str) -> Resource | None:
        pending: list[WatchEvent] = []
        with self._transaction() as conn:
            current = self._get_locked(conn, kind, namespace, name)
            if current is None:
                return None
            if current.metadata.finalizers:
                if current.metadata.deletion_timestamp is None:
                    current.metadata.deletion_timestamp = utcnow()
                    current = self._write(conn, current)
                    pending.append(WatchEvent("MODIFIED", int(current.metadata.resource_version or 0),
                                              current.to_wire()))
            else:
                pending.append(self._remove(conn, current))
            self._publish_locked(pending)
        self._notify(pending)
        return current

    # --- watch ---------------------------------------------------------------------------------------

    def watch(self, since: int, timeout: float) -> list[WatchEvent]:
        with self._changed:
            if since < self._compacted or (self._history and since < self._history[0].resource_version - 1):
                raise Gone(f"resourceVersion {since} is too old; list again and watch from the version returned")
            self._changed.wait_for(lambda: self._version > since or self._closed, timeout=timeout)
            return [e for e in self._history if e.resource_version > since]

    def subscribe(self, callback: Callable[[WatchEvent], None]) -> None:
        self._subscribers.append(callback)

    # --- events --------------------------------------------------------------------------------------

    def record_event(self, resource: Resource, type_: Literal["Normal", "Warning"], reason: str,
                     message: str) -> None:
        uid = resource.metadata.uid or ""
        now = _iso(utcnow())
        with self._transaction() as conn:
            last = conn.execute(select(events.c.id, events.c.reason, events.c.message, events.c.count)
                                .where(events.c.uid == uid).order_by(events.c.id.desc()).limit(1)).first()
            # Like Kubernetes' event correlator: a repeat of the latest event bumps its count.
            if last and last.reason == reason and last.message == message:
                conn.execute(update(events).where(events.c.id == last.id)
                             .values(count=last.count + 1, last_timestamp=now))
                return
            conn.execute(insert(events).values(
                uid=uid, kind=resource.kind, namespace=resource.metadata.namespace, name=resource.metadata.name,
                type=type_, reason=reason, message=message, count=1, first_timestamp=now, last_timestamp=now))
            stale = select(events.c.id).where(events.c.uid == uid).order_by(events.c.id.desc()) \
                .offset(MAX_EVENTS_PER_OBJECT)
            conn.execute(delete(events).where(events.c.id.in_(stale)))

    def list_events(self, kind: str, namespace: str, name: str) -> list[Event]:
        current = self.get(kind, namespace, name)
        if current is None:
            return []
        with self._engine.connect() as conn:
            rows = conn.execute(select(events).where(events.c.uid == current.metadata.uid)
                                .order_by(events.c.id)).all()
        return [Event(kind=r.kind, namespace=r.namespace, name=r.name, type=r.type, reason=r.reason,
                      message=r.message, count=r.count, first_timestamp=datetime.fromisoformat(r.first_timestamp),
                      last_timestamp=datetime.fromisoformat(r.last_timestamp)) for r in rows]

    def close(self) -> None:
        with self._changed:
            self._closed = True  # releases blocked watchers now rather than at their timeout
            self._changed.notify_all()
        self._engine.dispose()

    # --- internals -----------------------------------------------------------------------------------

    def _load(self, body: str, conn: Connection) -> Resource:
        data = json.loads(body)
        if data["kind"] == "Secret":
            # The body is the redacted wire form; the controllers that read through get/list need the values.
            row = conn.exec_driver_sql(SELECT_SEALED, (data["metadata"]["uid"],)).first()
            if row is not None:
                data["spec"]["stringData"] = self._cipher.open(data["metadata"]["uid"], row[0])
        return kind_class(data["kind"]).model_validate(data)

    def _seal(self, conn: Connection, obj: Resource) -> None:
        """Store a Secret's values, sealed, beside its (redacted) body; other kinds have none."""
        if obj.kind == "Secret":
            sealed = self._cipher.seal(obj.metadata.uid or "", obj.to_sealed())  # type: ignore[attr-defined]
            conn.exec_driver_sql(UPSERT_SEALED, (obj.metadata.uid, sealed))

    def _get_locked(self, conn: Connection, kind: str, namespace: str, name: str) -> Resource | None:
        row = conn.exec_driver_sql(_GET_BODY, (kind, namespace, name)).first()
        return self._load(row[0], conn) if row else None

    @staticmethod
    def _read_version(conn: Connection) -> int:
        row = conn.execute(select(counters.c.value).where(counters.c.name == "resourceVersion")).first()
        if row is None:
            conn.execute(insert(counters).values(name="resourceVersion", value=0))
            return 0
        return int(row[0])

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self._lock:
            saved = self._version
            try:
                with self._engine.begin() as conn:
                    yield conn
                    if self._version != saved:  # the counter once per transaction, not once per change
                        conn.exec_driver_sql(_SET_VERSION, (self._version,))
            except BaseException:
                self._version = saved  # the counter row rolled back with the transaction
                raise

    def _next_version(self, conn: Connection) -> int:
        self._version += 1  # stored when the transaction commits (see _transaction)
        return self._version

    def _new_object(self, conn: Connection, incoming: Resource) -> tuple[Resource, dict[str, Any]]:
        """The stored object and its wire form (serialised once, for both the row and the watch event)."""
        # Shallow: only metadata is changed here, so only it is copied (a deep copy of each incoming object
        # was the largest cost of an apply); the spec is shared with `incoming`, which the caller discards.
        obj = incoming.model_copy(update={"status": type(incoming.status)(),  # type: ignore[attr-defined]
                                          "metadata": incoming.metadata.model_copy()})
        obj.metadata.uid = str(uuid.uuid4())
        obj.metadata.generation = 1
        obj.metadata.creation_timestamp = utcnow()
        obj.metadata.deletion_timestamp = None
        obj.metadata.finalizers = []
        obj.metadata.resource_version = str(self._next_version(conn))
        wire = obj.to_wire()
        conn.exec_driver_sql(_INSERT, (obj.kind, obj.metadata.namespace, obj.metadata.name, obj.metadata.uid,
                                       int(obj.metadata.resource_version), json.dumps(wire)))
        self._seal(conn, obj)
        return obj, wire

    def _write(self, conn: Connection, obj: Resource) -> Resource:
        obj.metadata.resource_version = str(self._next_version(conn))
        conn.exec_driver_sql(_UPDATE, (int(obj.metadata.resource_version), json.dumps(obj.to_wire()), obj.kind,
                                       obj.metadata.namespace, obj.metadata.name))
        self._seal(conn, obj)
        return obj

    def _remove(self, conn: Connection, obj: Resource) -> WatchEvent:
        conn.execute(delete(objects).where(objects.c.kind == obj.kind, objects.c.namespace == obj.metadata.namespace,
                                           objects.c.name == obj.metadata.name))
        conn.execute(delete(events).where(events.c.uid == obj.metadata.uid))
        conn.exec_driver_sql(DELETE_SEALED, (obj.metadata.uid,))
        version = self._next_version(conn)
        return WatchEvent("DELETED", version, obj.to_wire())

    def _update(self, resource: Resource, merge: Callable[[Resource], Resource]) -> Resource:
        pending: list[WatchEvent] = []
        with self._transaction() as conn:
            current = self._get_locked(conn, *resource.key)
            if current is None:
                raise NotFound(f"{resource.ref} not found")
            if resource.metadata.resource_version != current.metadata.resource_version:
                raise Conflict(f"{resource.ref} was modified (resourceVersion {resource.metadata.resource_version}"
                               f" is not {current.metadata.resource_version}); read it again")
            merged = merge(current)
            if merged.metadata.deletion_timestamp is not None and not merged.metadata.finalizers:
                pending.append(self._remove(conn, merged))
                result = merged
            else:
                result = self._write(conn, merged)
                pending.append(WatchEvent("MODIFIED", int(result.metadata.resource_version or 0), result.to_wire()))
            self._publish_locked(pending)
        self._notify(pending)
        return result

    def _publish_locked(self, pending: list[WatchEvent]) -> None:
        if pending:
            self._history.extend(pending)
            self._changed.notify_all()

    def _notify(self, pending: list[WatchEvent]) -> None:
        for ev in pending:
            for callback in self._subscribers:
                callback(ev)
