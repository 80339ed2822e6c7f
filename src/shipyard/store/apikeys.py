"""Per-project API keys for the gateway, kept as sha256 hashes in the same SQLite database.

Keys are random 256-bit tokens, so a fast hash is enough (there is nothing to brute-force that a slow hash
would protect); only the hash and a short hint are stored. Verification happens on every gateway request,
so each live key's grant (project and restrictions, see protocol.ApiKeyGrant) is also held in memory and
answered without touching SQLite; every write updates both under one lock.

A key records who created it, and may expire, be limited to named Endpoints/Apps and carry a request rate.
Databases older than those fields get their columns added on open (SQLite's ALTER TABLE ADD COLUMN); their
keys read as created by "unknown", never expiring, unrestricted.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
from typing import Callable

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, insert, select, text, update
from sqlalchemy.engine import Engine

from .protocol import ApiKey, ApiKeyGrant, Conflict, NotFound, RateLimit

UNKNOWN_CREATOR = "unknown"

metadata = MetaData()
api_keys = Table(
    "api_keys", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project", String, nullable=False, index=True),
    Column("name", String, nullable=False),
    Column("token_hash", String, nullable=False, unique=True),
    Column("hint", String, nullable=False),
    Column("created_at", String, nullable=False),
    Column("revoked_at", String, nullable=True),
    # added after the first release: nullable, so that ADD COLUMN can add them to an existing table
    Column("created_by", String, nullable=True),
    Column("expires_at", String, nullable=True),
    Column("endpoints", String, nullable=True),  # a JSON list; NULL or [] for every Endpoint/App of the project
    Column("rate_per_second", Float, nullable=True),
    Column("rate_burst", Integer, nullable=True),
)
_ADDED_COLUMNS = {"created_by": "VARCHAR", "expires_at": "VARCHAR", "endpoints": "VARCHAR",
                  "rate_per_second": "FLOAT", "rate_burst": "INTEGER"}


def migrate(engine: Engine) -> None:
    """Add the columns a database made by an older Shipyard lacks (idempotent)."""
    with engine.begin() as conn:
        present = {row[1] for row in conn.execute(text("PRAGMA table_info(api_keys)"))}
        for name, type_ in _ADDED_COLUMNS.items():
            if name not in present:
                conn.execute(text(f"ALTER TABLE api_keys ADD COLUMN {name} {type_}"))


def _record(row) -> ApiKey:
    rate = RateLimit(row.rate_per_second, row.rate_burst) if row.rate_per_second else None
    return ApiKey(project=row.project, name=row.name, hint=row.hint,
                  created_at=datetime.fromisoformat(row.created_at),
                  revoked_at=datetime.fromisoformat(row.revoked_at) if row.revoked_at else None,
                  created_by=row.created_by or UNKNOWN_CREATOR,
                  expires_at=datetime.fromisoformat(row.expires_at) if row.expires_at else None,
                  endpoints=tuple(json.loads(row.endpoints)) if row.endpoints else (), rate_limit=rate)


class SQLiteApiKeys:
    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time):
        """`clock`: epoch seconds, for expiry (tests inject one)."""
        self._engine = engine
        self._clock = clock
        metadata.create_all(engine)
        migrate(engine)
        self._lock = threading.Lock()
        with engine.connect() as conn:
            rows = conn.execute(select(api_keys).where(api_keys.c.revoked_at.is_(None))).all()
        # token hash → grant, unrevoked keys only (expired ones stay until revoked: the lookup checks expiry)
        self._active: dict[str, ApiKeyGrant] = {row.token_hash: ApiKeyGrant.of(row.token_hash, _record(row))
                                                for row in rows}

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), timezone.utc)

    def add_api_key(self, project: str, name: str, token_hash: str, hint: str, *,
                    created_by: str = UNKNOWN_CREATOR, expires_at: datetime | None = None,
                    endpoints: tuple[str, ...] = (), rate_limit: RateLimit | None = None) -> ApiKey:
        now = self._now().isoformat()
        with self._lock, self._engine.begin() as conn:
            taken = conn.execute(select(api_keys.c.id).where(
                api_keys.c.project == project, api_keys.c.name == name, api_keys.c.revoked_at.is_(None))).first()
            if taken:
                raise Conflict(f"API key {name!r} already exists in project {project}; revoke it first")
            conn.execute(insert(api_keys).values(
                project=project, name=name, token_hash=token_hash, hint=hint, created_at=now, created_by=created_by,
                expires_at=expires_at.astimezone(timezone.utc).isoformat() if expires_at else None,
                endpoints=json.dumps(list(endpoints)) if endpoints else None,
                rate_per_second=rate_limit.requests_per_second if rate_limit else None,
                rate_burst=rate_limit.burst if rate_limit else None))
            row = conn.execute(select(api_keys).where(api_keys.c.token_hash == token_hash)).one()
            record = _record(row)
            self._active[token_hash] = ApiKeyGrant.of(token_hash, record)
        return record

    def list_api_keys(self, project: str | None = None) -> list[ApiKey]:
        query = select(api_keys).order_by(api_keys.c.project, api_keys.c.name, api_keys.c.id)
        if project is not None:
            query = query.where(api_keys.c.project == project)
        with self._engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def revoke_api_key(self, project: str, name: str) -> ApiKey:
        now = self._now().isoformat()
        with self._lock, self._engine.begin() as conn:
            row = conn.execute(select(api_keys).where(
                api_keys.c.project == project, api_keys.c.name == name, api_keys.c.revoked_at.is_(None))).first()
            if row is None:
                raise NotFound(f"no active API key {name!r} in project {project}")
            conn.execute(update(api_keys).where(api_keys.c.id == row.id).values(revoked_at=now))
            self._active.pop(row.token_hash, None)
            row = conn.execute(select(api_keys).where(api_keys.c.id == row.id)).one()
        return _record(row)

    def api_key_grant(self, token_hash: str) -> ApiKeyGrant | None:
        """The grant of a live key (None: unknown, revoked or expired). A dict lookup and a clock read: no I/O."""
        grant = self._active.get(token_hash)
        if grant is None or (grant.expires_at is not None and self._clock() >= grant.expires_at):
            return None
        return grant

    def api_key_project(self, token_hash: str) -> str | None:
        grant = self.api_key_grant(token_hash)
        return grant.project if grant is not None else None
