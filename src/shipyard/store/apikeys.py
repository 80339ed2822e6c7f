"""Per-project API keys for the gateway, kept as sha256 hashes in the same SQLite database.

Keys are random 256-bit tokens, so a fast hash is enough (there is nothing to brute-force that a slow hash
would protect); only the hash and a short hint are stored. Verification happens on every gateway request,
so the active hashes are also held in memory and checked without touching SQLite; every write updates both
under one lock.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone

from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, update
from sqlalchemy.engine import Engine

from .protocol import ApiKey, Conflict, NotFound

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
)


def _record(row) -> ApiKey:
    return ApiKey(project=row.project, name=row.name, hint=row.hint,
                  created_at=datetime.fromisoformat(row.created_at),
                  revoked_at=datetime.fromisoformat(row.revoked_at) if row.revoked_at else None)


class SQLiteApiKeys:
    def __init__(self, engine: Engine):
        self._engine = engine
        metadata.create_all(engine)
        self._lock = threading.Lock()
        with engine.connect() as conn:
            rows = conn.execute(select(api_keys.c.project, api_keys.c.token_hash)
                                .where(api_keys.c.revoked_at.is_(None))).all()
        self._active: dict[str, str] = {row.token_hash: row.project for row in rows}

    def add_api_key(self, project: str, name: str, token_hash: str, hint: str) -> ApiKey:
        now = datetime.now(timezone.utc).isoformat()
        with self._lock, self._engine.begin() as conn:
            taken = conn.execute(select(api_keys.c.id).where(
                api_keys.c.project == project, api_keys.c.name == name, api_keys.c.revoked_at.is_(None))).first()
            if taken:
                raise Conflict(f"API key {name!r} already exists in project {project}; revoke it first")
            conn.execute(insert(api_keys).values(project=project, name=name, token_hash=token_hash, hint=hint,
                                                 created_at=now))
            self._active[token_hash] = project
            row = conn.execute(select(api_keys).where(api_keys.c.token_hash == token_hash)).one()
        return _record(row)

    def list_api_keys(self, project: str | None = None) -> list[ApiKey]:
        query = select(api_keys).order_by(api_keys.c.project, api_keys.c.name, api_keys.c.id)
        if project is not None:
            query = query.where(api_keys.c.project == project)
        with self._engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def revoke_api_key(self, project: str, name: str) -> ApiKey:
        now = datetime.now(timezone.utc).isoformat()
        with self._lock, self._engine.begin() as conn:
            row = conn.execute(select(api_keys).where(
                api_keys.c.project == project, api_keys.c.name == name, api_keys.c.revoked_at.is_(None))).first()
            if row is None:
                raise NotFound(f"no active API key {name!r} in project {project}")
            conn.execute(update(api_keys).where(api_keys.c.id == row.id).values(revoked_at=now))
            self._active.pop(row.token_hash, None)
            row = conn.execute(select(api_keys).where(api_keys.c.id == row.id)).one()
        return _record(row)

    def api_key_project(self, token_hash: str) -> str | None:
        """The project an active key belongs to (None: unknown or revoked). A dict lookup: no I/O."""
        return self._active.get(token_hash)
