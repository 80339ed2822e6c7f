"""The Store protocol: what controllers and the API may ask of storage, and nothing more.

Modelled on the Kubernetes API server's contract (resourceVersion for optimistic concurrency, watch from a
version, finalizers that delay deletion) so the same controllers run over SQLite locally and over custom
resources on a cluster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Literal, Protocol

from shipyard.resources import Resource
from shipyard.resources.selector import Selector


class StoreError(Exception):
    """Base class; `status` is the HTTP status the API answers with."""

    status = 500


class NotFound(StoreError):
    status = 404


class Conflict(StoreError):
    status = 409


class Invalid(StoreError):
    status = 422


class BadRequest(StoreError):
    """The request itself cannot be answered as asked (a malformed or foreign continue token)."""

    status = 400


class Gone(StoreError):
    """A watch asked for history that is no longer kept: relist and watch from the new version."""

    status = 410


WatchType = Literal["ADDED", "MODIFIED", "DELETED"]


@dataclass(frozen=True)
class WatchEvent:
    type: WatchType
    resource_version: int
    object: dict[str, Any]  # wire form, so that watchers never share a mutable model with the store


@dataclass(frozen=True)
class ApplyResult:
    resource: Resource
    action: Literal["created", "configured", "unchanged"]


@dataclass(frozen=True)
class ListPage:
    """One page of a list, as JSON texts of wire objects: a store that already holds valid objects hands them
    out as stored, so a list costs no model validation per row. `resource_version` is the first page's, on
    every page: watching from it after the last page misses no change (it may repeat one a page already shows).
    `continue_token` is None on the last page."""

    items: list[str]
    resource_version: int
    continue_token: str | None = None


@dataclass(frozen=True)
class Event:
    """A Kubernetes-style event about an object: what a controller did or saw, for `describe`."""

    kind: str
    namespace: str
    name: str
    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    count: int
    first_timestamp: datetime
    last_timestamp: datetime


@dataclass(frozen=True)
class RateLimit:
    """A key's request rate: a token bucket refilled at `requests_per_second`, holding at most `burst`."""

    requests_per_second: float
    burst: int


def default_burst(requests_per_second: float) -> int:
    """A burst of one second's worth of requests (at least one, or no request would ever pass)."""
    return max(1, math.ceil(requests_per_second))


@dataclass(frozen=True)
class ApiKey:
    """A project's API key as listed: never the token, only a hint of its first characters."""

    project: str
    name: str
    hint: str
    created_at: datetime
    revoked_at: datetime | None
    created_by: str = "unknown"  # the API caller's user name; "unknown" for keys older than the field
    expires_at: datetime | None = None
    endpoints: tuple[str, ...] = ()  # Endpoint/App names it may reach; empty: every one of its project
    rate_limit: RateLimit | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@dataclass(frozen=True, slots=True)
class ApiKeyGrant:
    """What the gateway needs of a live key on every request: one immutable record, built when the key is
    written (or seen by a watch), so a request costs a hash and a dict lookup. It is structurally the
    gateway's `KeyGrant` (the gateway imports nothing of the store)."""

    id: str  # the token's hash: names the key's rate bucket
    project: str
    endpoints: frozenset[str] = frozenset()
    requests_per_second: float | None = None
    burst: int = 0
    expires_at: float | None = None  # epoch seconds: an expiry is a date, not a monotonic instant

    @staticmethod
    def of(token_hash: str, key: ApiKey) -> "ApiKeyGrant":
        rate = key.rate_limit
        return ApiKeyGrant(token_hash, key.project, frozenset(key.endpoints),
                           rate.requests_per_second if rate else None, rate.burst if rate else 0,
                           key.expires_at.timestamp() if key.expires_at else None)


class ApiKeyStore(Protocol):
    """A capability beside Store: hashed per-project keys that the gateway accepts as bearer tokens."""

    def add_api_key(self, project: str, name: str, token_hash: str, hint: str, *, created_by: str = "unknown",
                    expires_at: datetime | None = None, endpoints: tuple[str, ...] = (),
                    rate_limit: RateLimit | None = None) -> ApiKey:
        """Conflict if the project already has an unrevoked key of that name (expired included)."""

    def list_api_keys(self, project: str | None = None) -> list[ApiKey]: ...

    def revoke_api_key(self, project: str, name: str) -> ApiKey:
        """NotFound if the project has no unrevoked key of that name."""

    def api_key_grant(self, token_hash: str) -> ApiKeyGrant | None:
        """The grant of a live key with this hash (None: unknown, revoked or expired); must not block (called
        per gateway request)."""

    def api_key_project(self, token_hash: str) -> str | None:
        """The project of a live key with this hash (`api_key_grant`'s project)."""


class Store(Protocol):
    def get(self, kind: str, namespace: str, name: str) -> Resource | None: ...

    def list(self, kind: str | None = None, namespace: str | None = None,
             selector: Selector | None = None) -> list[Resource]:
        """Objects ordered by kind, namespace and name; only those whose labels match `selector`, if given
        (filtered where the objects are stored, so asking for a few among many costs little)."""

    def apply(self, resources: list[Resource]) -> list[ApplyResult]:
        """Create or update the user-owned parts (labels, annotations, spec) of all, atomically."""

    def update_status(self, resource: Resource) -> Resource:
        """Write status; Conflict if resource.metadata.resourceVersion is stale."""

    def update_metadata(self, resource: Resource) -> Resource:
        """Write controller-owned metadata (finalizers); completes a pending deletion when none remain."""

    def delete(self, kind: str, namespace: str, name: str) -> Resource | None:
        """Delete, or mark for deletion while finalizers remain. Returns the object, None if absent."""

    def current_version(self) -> int: ...

    def watch(self, since: int, timeout: float) -> list[WatchEvent]:
        """Changes after version `since`, waiting up to `timeout` seconds for the first; Gone if too old."""

    def subscribe(self, callback: Callable[[WatchEvent], None]) -> None: ...

    def record_event(self, resource: Resource, type_: Literal["Normal", "Warning"], reason: str,
                     message: str) -> None: ...

    def list_events(self, kind: str, namespace: str, name: str) -> list[Event]: ...


class PagedLister(Protocol):
    """An optional capability beside Store: lists in pages (`limit`/`continue`, as Kubernetes lists), in wire
    form. The API uses it when a store has it, and pages `Store.list` itself otherwise."""

    def list_page(self, kind: str, namespace: str | None = None, name: str | None = None,
                  limit: int | None = None, continue_token: str | None = None,
                  selector: Selector | None = None) -> ListPage:
        """Objects of `kind` (one `name`, if given) ordered by namespace and name; BadRequest if the token is
        malformed or from another list."""
