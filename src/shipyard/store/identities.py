"""Users, per-project service accounts and their named, expiring bearer tokens, in the control plane's SQLite.

Identities follow Kubernetes: a user is a name plus groups; a service account NAME in project (namespace) NS
authenticates as `system:serviceaccount:NS:NAME` in the groups `system:serviceaccounts` and
`system:serviceaccounts:NS`. User names cannot contain ':', so no user can be named like a service account.

Tokens are shown once. Only a keyed hash (HMAC-SHA256 with a key kept in a file outside the database) is
stored: the issue requires that a leaked database alone be useless for testing guesses, which a plain sha256
(as `shipyard.tokens` uses for the admin token) would allow. Every request authenticates, so the active
tokens are also held in memory (HMAC -> who) and checked without touching SQLite; each write updates the
map under one lock in the same call that commits, so a revocation denies the very next request. The daemon is
the only writer: a second process over the same database would not see this one's revocations until restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Literal

from sqlalchemy import Column, Integer, MetaData, String, Table, Text, delete, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from shipyard.secretfile import load_or_create

from .protocol import Conflict, NotFound

log = logging.getLogger(__name__)

SubjectKind = Literal["User", "ServiceAccount"]
USER_TOKEN_PREFIX = "sy_u_"
SERVICE_ACCOUNT_TOKEN_PREFIX = "sy_sa_"
_PREFIXES: dict[str, str] = {"User": USER_TOKEN_PREFIX, "ServiceAccount": SERVICE_ACCOUNT_TOKEN_PREFIX}
HINT_CHARS = 10  # the prefix and a few random characters: enough to tell tokens apart, useless to an attacker
KEY_BYTES = 32
# A real token is its prefix plus 43 characters; anything much longer is not one, and is refused before
# hashing so that a request cannot make us HMAC megabytes.
_MAX_TOKEN_CHARS = 128
LAST_USED_EVERY = timedelta(minutes=1)  # last-used is for humans; writing it per request would cost a commit

_USER_NAME = re.compile(r"[a-z0-9]([-a-z0-9.@_]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_GROUP = re.compile(r"[a-z0-9]([-a-z0-9.@_:]*[a-z0-9])?")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
SA_GROUP = "system:serviceaccounts"

metadata = MetaData()
users = Table(
    "identity_users", metadata,
    Column("name", String, primary_key=True),
    Column("email", String, nullable=True),
    Column("groups", Text, nullable=False),  # JSON list
    Column("created_at", String, nullable=False),
)
service_accounts = Table(
    "identity_service_accounts", metadata,
    Column("namespace", String, primary_key=True),
    Column("name", String, primary_key=True),
    Column("created_at", String, nullable=False),
)
tokens = Table(
    "identity_tokens", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject_kind", String, nullable=False),
    Column("subject", String, nullable=False, index=True),
    Column("namespace", String, nullable=False),  # "" for users: plain equality in SQL, None in records
    Column("name", String, nullable=False),
    Column("token_hmac", String, nullable=False, unique=True),
    Column("hint", String, nullable=False),
    Column("created_at", String, nullable=False),
    Column("expires_at", String, nullable=True),
    Column("revoked_at", String, nullable=True),
    Column("last_used_at", String, nullable=True),
)


@dataclass(frozen=True)
class User:
    name: str
    email: str | None
    groups: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True)
class ServiceAccount:
    namespace: str
    name: str
    created_at: datetime

    @property
    def username(self) -> str:
        return service_account_username(self.namespace, self.name)


@dataclass(frozen=True)
class TokenRecord:  # a token as listed: never the token nor its hash
    subject_kind: SubjectKind
    subject: str
    namespace: str | None
    name: str
    hint: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class Identity:  # who a request is: what authorization and the audit log see
    name: str
    groups: tuple[str, ...]
    kind: SubjectKind
    namespace: str | None
    token_name: str


@dataclass
class _Active:  # what the in-memory map holds per active token
    id: int
    identity: Identity
    expires_at: datetime | None
    last_used_written: datetime | None


def service_account_username(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def _sa_where(namespace: str, name: str) -> tuple:
    return service_accounts.c.namespace == namespace, service_accounts.c.name == name


def _service_account_identity(namespace: str, name: str, token_name: str) -> Identity:
    return Identity(service_account_username(namespace, name), (SA_GROUP, f"{SA_GROUP}:{namespace}"),
                    "ServiceAccount", namespace, token_name)


def _check(field: str, value: object, pattern: re.Pattern[str], max_len: int, what: str) -> str:
    if not isinstance(value, str) or len(value) > max_len or not pattern.fullmatch(value):
        raise ValueError(f"invalid {field} {value!r}: must be {what}, at most {max_len} characters")
    return value


def _check_subdomain(field: str, name: str) -> str:
    return _check(field, name, _DNS_SUBDOMAIN, 253, "a DNS-1123 subdomain (lower-case letters, digits, '-' and '.')")


def _check_groups(groups: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    if isinstance(groups, str):  # a bare string would otherwise become one group per character
        raise ValueError(f"invalid groups {groups!r}: must be a list of group names")
    out: list[str] = []
    for group in groups:
        _check("group", group, _GROUP, 253, "lower-case letters, digits, '-', '.', '@', '_' or ':'")
        # Service-account groups come with being a service account; a user in them would pass RBAC bindings
        # meant for a project's robots. (This prefix also covers system:serviceaccounts and its :NS groups.)
        if group.startswith("system:serviceaccount"):
            raise ValueError(f"invalid group {group!r}: reserved for service accounts")
        if group not in out:
            out.append(group)
    return tuple(out)


def _utc(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).isoformat()


def _parse(ts: str | None) -> datetime | None:
    return datetime.fromisoformat(ts) if ts else None


def _user(row) -> User:
    return User(row.name, row.email, tuple(json.loads(row.groups)), datetime.fromisoformat(row.created_at))


def _service_account(row) -> ServiceAccount:
    return ServiceAccount(row.namespace, row.name, datetime.fromisoformat(row.created_at))


def _token(row) -> TokenRecord:
    return TokenRecord(row.subject_kind, row.subject, row.namespace or None, row.name, row.hint,
                       datetime.fromisoformat(row.created_at), _parse(row.expires_at), _parse(row.revoked_at),
                       _parse(row.last_used_at))


def _read_key(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) < KEY_BYTES:
        # A short key weakens every token; refuse rather than guess. Replacing it invalidates all tokens.
        raise ValueError(f"{path} holds {len(key)} bytes, expected {KEY_BYTES}; replacing it invalidates every "
                         "user and service-account token")
    return key


def load_or_create_key(path: Path | str) -> bytes:
    """Return the token HMAC key stored at `path`, creating 32 random bytes (mode 0600) on first use; a
    concurrent reader sees no file or a complete one, and two racing creators agree on a single key
    (secretfile.py, as the admin token is)."""
    return load_or_create(path, lambda: secrets.token_bytes(KEY_BYTES), _read_key)


class SQLiteIdentities:
    def __init__(self, engine: Engine, key: bytes, *, clock: Callable[[], datetime] | None = None):
        if len(key) < KEY_BYTES:
            raise ValueError(f"the token key must be at least {KEY_BYTES} bytes")
        self._engine = engine
        self._key = bytes(key)
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._lock = threading.Lock()
        metadata.create_all(engine)
        with engine.connect() as conn:
            rows = conn.execute(select(tokens).where(tokens.c.revoked_at.is_(None))).all()
            groups = {r.name: tuple(json.loads(r.groups)) for r in conn.execute(select(users.c.name, users.c.groups))}
        self._active: dict[str, _Active] = {}  # HMAC -> who; expired entries stay, refused at call time
        for row in rows:
            identity = (Identity(row.subject, groups.get(row.subject, ()), "User", None, row.name)
                        if row.subject_kind == "User" else
                        _service_account_identity(row.namespace, row.subject, row.name))
            self._active[row.token_hmac] = _Active(row.id, identity, _parse(row.expires_at), _parse(row.last_used_at))

    def _now(self) -> datetime:
        return self._clock().astimezone(timezone.utc)

    def _hmac(self, token: str) -> str:
        return hmac.new(self._key, token.encode(), hashlib.sha256).hexdigest()

    # --- users ---------------------------------------------------------------------------------------

    def create_user(self, name: str, email: str | None = None, groups: tuple[str, ...] | list[str] = ()) -> User:
        _check("user name", name, _USER_NAME, 253,
               "lower-case letters, digits, '-', '.', '@' or '_', starting and ending with a letter or digit")
        if email is not None:
            _check("email", email, _EMAIL, 254, "an address like name@example.com")
        groups = _check_groups(groups)
        with self._lock, self._engine.begin() as conn:
            if conn.execute(select(users.c.name).where(users.c.name == name)).first():
                raise Conflict(f"user {name!r} already exists")
            conn.execute(insert(users).values(name=name, email=email, groups=json.dumps(list(groups)),
                                              created_at=_utc(self._now())))
            return _user(conn.execute(select(users).where(users.c.name == name)).one())

    def get_user(self, name: str) -> User | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.name == name)).first()
        return _user(row) if row else None

    def list_users(self) -> list[User]:
        with self._engine.connect() as conn:
            return [_user(row) for row in conn.execute(select(users).order_by(users.c.name))]

    def delete_user(self, name: str) -> User:
        """Delete a user and revoke its tokens (a user re-created later under the same name gets none back)."""
        with self._lock, self._engine.begin() as conn:
            row = conn.execute(select(users).where(users.c.name == name)).first()
            if row is None:
                raise NotFound(f"user {name!r} not found")
            conn.execute(delete(users).where(users.c.name == name))
            self._revoke_all(conn, "User", name, "")
        return _user(row)

    # --- service accounts ----------------------------------------------------------------------------

    def create_service_account(self, namespace: str, name: str) -> ServiceAccount:
        _check("namespace", namespace, _DNS_LABEL, 63, "a DNS-1123 label (lower-case letters, digits and '-')")
        _check_subdomain("service account name", name)
        with self._lock, self._engine.begin() as conn:
            if conn.execute(select(service_accounts.c.name).where(*_sa_where(namespace, name))).first():
                raise Conflict(f"service account {name!r} already exists in project {namespace}")
            conn.execute(insert(service_accounts).values(namespace=namespace, name=name, created_at=_utc(self._now())))
            return _service_account(conn.execute(select(service_accounts).where(*_sa_where(namespace, name))).one())

    def get_service_account(self, namespace: str, name: str) -> ServiceAccount | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(service_accounts).where(*_sa_where(namespace, name))).first()
        return _service_account(row) if row else None

    def list_service_accounts(self, namespace: str | None = None) -> list[ServiceAccount]:
        query = select(service_accounts).order_by(service_accounts.c.namespace, service_accounts.c.name)
        if namespace is not None:
            query = query.where(service_accounts.c.namespace == namespace)
        with self._engine.connect() as conn:
            return [_service_account(row) for row in conn.execute(query)]

    def delete_service_account(self, namespace: str, name: str) -> ServiceAccount:
        with self._lock, self._engine.begin() as conn:
            row = conn.execute(select(service_accounts).where(*_sa_where(namespace, name))).first()
            if row is None:
                raise NotFound(f"service account {name!r} not found in project {namespace}")
            conn.execute(delete(service_accounts).where(*_sa_where(namespace, name)))
            self._revoke_all(conn, "ServiceAccount", name, namespace)
        return _service_account(row)

    # --- tokens --------------------------------------------------------------------------------------

    def create_token(self, subject_kind: SubjectKind, subject: str, namespace: str | None, name: str,
                     expires_in: timedelta | None = None) -> tuple[str, TokenRecord]:
        """Issue a token; the plaintext is returned here and never again (only its HMAC is kept)."""
        ns = self._subject_namespace(subject_kind, namespace)
        _check_subdomain("token name", name)
        if expires_in is not None and expires_in <= timedelta(0):
            raise ValueError(f"invalid expires_in {expires_in}: must be positive")
        token = _PREFIXES[subject_kind] + secrets.token_urlsafe(32)
        digest = self._hmac(token)
        now = self._now()
        expires_at = now + expires_in if expires_in is not None else None
        with self._lock:
            with self._engine.begin() as conn:
                identity = self._subject_identity(conn, subject_kind, subject, ns, name)
                if identity is None:
                    raise NotFound(f"{self._describe(subject_kind, subject, ns)} not found")
                if self._find_active(conn, subject_kind, subject, ns, name, now) is not None:
                    raise Conflict(f"token {name!r} already exists for {self._describe(subject_kind, subject, ns)}; "
                                   "revoke it first")
                row_id = conn.execute(insert(tokens).values(
                    subject_kind=subject_kind, subject=subject, namespace=ns, name=name, token_hmac=digest,
                    hint=token[:HINT_CHARS], created_at=_utc(now),
                    expires_at=_utc(expires_at) if expires_at else None)).inserted_primary_key[0]
                row = conn.execute(select(tokens).where(tokens.c.id == row_id)).one()
            # Only once committed: a failed commit must not leave a usable token in memory.
            self._active[digest] = _Active(row_id, identity, expires_at, None)
        return token, _token(row)

    def list_tokens(self, subject_kind: SubjectKind | None = None, subject: str | None = None,
                    namespace: str | None = None) -> list[TokenRecord]:
        query = select(tokens).order_by(tokens.c.subject_kind, tokens.c.namespace, tokens.c.subject, tokens.c.name,
                                        tokens.c.id)
        for column, value in ((tokens.c.subject_kind, subject_kind), (tokens.c.subject, subject),
                              (tokens.c.namespace, namespace)):
            if value is not None:
                query = query.where(column == value)
        with self._engine.connect() as conn:
            return [_token(row) for row in conn.execute(query)]

    def revoke_token(self, subject_kind: SubjectKind, subject: str, namespace: str | None, name: str) -> TokenRecord:
        ns = self._subject_namespace(subject_kind, namespace)
        with self._lock, self._engine.begin() as conn:
            row = self._find_active(conn, subject_kind, subject, ns, name, self._now())
            if row is None:
                raise NotFound(f"no active token {name!r} for {self._describe(subject_kind, subject, ns)}")
            conn.execute(update(tokens).where(tokens.c.id == row.id).values(revoked_at=_utc(self._now())))
            # Dropped before the commit: should the commit fail, this process still refuses it (fail closed).
            self._active.pop(row.token_hmac, None)
            return _token(conn.execute(select(tokens).where(tokens.c.id == row.id)).one())

    def authenticate(self, token: str) -> Identity | None:
        """Who presents `token` (None: unknown, expired or revoked). A dict lookup, no I/O but the last-used
        write at most once a minute per token.

        The lookup compares HMACs, not tokens: without the key an attacker cannot choose inputs whose HMACs
        share a prefix with a stored one, so the timing of the dict's comparison reveals nothing about a token.
        """
        if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS or not token.startswith(
                (USER_TOKEN_PREFIX, SERVICE_ACCOUNT_TOKEN_PREFIX)):
            return None
        digest = self._hmac(token)
        entry = self._active.get(digest)
        if entry is None:
            return None
        now = self._now()
        if entry.expires_at is not None and now >= entry.expires_at:
            return None
        if entry.last_used_written is None or now - entry.last_used_written >= LAST_USED_EVERY:
            self._touch(digest, entry, now)
        return entry.identity

    # --- internals -----------------------------------------------------------------------------------

    def _touch(self, digest: str, entry: _Active, now: datetime) -> None:
        with self._lock:
            # Re-checked under the lock: of concurrent requests with one token, one writes.
            if digest not in self._active or (entry.last_used_written is not None
                                               and now - entry.last_used_written < LAST_USED_EVERY):
                return
            entry.last_used_written = now
            try:
                with self._engine.begin() as conn:
                    conn.execute(update(tokens).where(tokens.c.id == entry.id).values(last_used_at=_utc(now)))
            except SQLAlchemyError:
                # Last-used is informational: a busy database must not turn a valid token into a 401.
                log.warning("could not record last use of token %r", entry.identity.token_name, exc_info=True)

    @staticmethod
    def _subject_identity(conn: Connection, kind: str, subject: str, ns: str, token_name: str) -> Identity | None:
        """Who a new token of an existing subject stands for (None: no such subject)."""
        if kind == "User":
            groups = conn.execute(select(users.c.groups).where(users.c.name == subject)).scalar()
            return None if groups is None else Identity(subject, tuple(json.loads(groups)), "User", None, token_name)
        found = conn.execute(select(service_accounts.c.name).where(*_sa_where(ns, subject))).first()
        return _service_account_identity(ns, subject, token_name) if found else None

    @staticmethod
    def _subject_namespace(subject_kind: str, namespace: str | None) -> str:
        if subject_kind == "User":
            if namespace:
                raise ValueError("invalid namespace: users are not namespaced")
            return ""
        if subject_kind == "ServiceAccount":
            if not namespace:
                raise ValueError("invalid namespace: a service account's token needs its namespace")
            return namespace
        raise ValueError(f"invalid subject_kind {subject_kind!r}: must be 'User' or 'ServiceAccount'")

    @staticmethod
    def _describe(subject_kind: str, subject: str, ns: str) -> str:
        return f"user {subject!r}" if subject_kind == "User" else f"service account {subject!r} in project {ns}"

    @staticmethod
    def _find_active(conn: Connection, subject_kind: str, subject: str, ns: str, name: str, now: datetime):
        """The subject's unrevoked, unexpired token called `name`. Expiry is compared in Python: the stored
        ISO strings need not compare correctly as text."""
        rows = conn.execute(select(tokens).where(
            tokens.c.subject_kind == subject_kind, tokens.c.subject == subject, tokens.c.namespace == ns,
            tokens.c.name == name, tokens.c.revoked_at.is_(None))).all()
        return next((r for r in rows if r.expires_at is None or datetime.fromisoformat(r.expires_at) > now), None)

    def _revoke_all(self, conn: Connection, subject_kind: str, subject: str, ns: str) -> None:
        where = (tokens.c.subject_kind == subject_kind, tokens.c.subject == subject, tokens.c.namespace == ns,
                 tokens.c.revoked_at.is_(None))
        for digest in conn.execute(select(tokens.c.token_hmac).where(*where)).scalars():
            self._active.pop(digest, None)
        conn.execute(update(tokens).where(*where).values(revoked_at=_utc(self._now())))
