"""API-key checks for routes that are not public.

The gateway asks a `KeyVerifier` what a bearer token grants: None for no live key, else a `KeyGrant` (the
key's project and its restrictions: the Endpoints/Apps it may reach, a request rate, an expiry). The real
verifier (hashed per-project keys kept by the control plane) lives elsewhere, and `StaticKeys` serves tests and
the `python -m shipyard.gateway` command. A verifier is called on the gateway's event loop for every request
to a private route, so it must answer from memory: no database round trip, no blocking hash function. Grants
are immutable records built when a key is written, so that answering costs a lookup, not an allocation.

Tokens are looked up by their sha256 (a dict lookup on a digest tells nothing of how much of a token matched)
and never logged.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import AbstractSet, Iterable, Mapping, Protocol


class KeyGrant(Protocol):
    """What a live key allows (structural: the store's own immutable record fits it, unconverted)."""

    @property
    def id(self) -> str:
        """Names the key's rate bucket (the store uses the token's hash)."""
        ...

    @property
    def project(self) -> str: ...

    @property
    def endpoints(self) -> AbstractSet[str]:
        """The Endpoint/App names it may reach; empty: every one of its project."""
        ...

    @property
    def requests_per_second(self) -> float | None:
        """None (or 0): no rate limit."""
        ...

    @property
    def burst(self) -> int:
        """The bucket's size; 0: one second's worth of requests (see default_burst)."""
        ...

    @property
    def expires_at(self) -> float | None:
        """Epoch seconds; None: never."""
        ...


class KeyVerifier(Protocol):
    def grant(self, token: str) -> KeyGrant | None:
        """What `token` grants if it is a live key (None: unknown, revoked or expired). Fast, non-blocking."""
        ...


def default_burst(requests_per_second: float) -> int:
    """One second's worth of requests, and at least one (or no request would ever pass)."""
    return max(1, math.ceil(requests_per_second))


@dataclass(frozen=True, slots=True)
class Grant:
    """A KeyGrant of StaticKeys."""

    id: str
    project: str
    endpoints: frozenset[str] = frozenset()
    requests_per_second: float | None = None
    burst: int = 0
    expires_at: float | None = None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class StaticKeys:
    """In-memory keys: {project: [token, …]}, unrestricted; `add` can give one restrictions.

    Every change replaces the whole map (copy on write), so the event loop reads it without a lock while
    another thread adds or revokes."""

    def __init__(self, keys: Mapping[str, Iterable[str]] | None = None):
        self._grants: dict[str, Grant] = {}
        for project, tokens in (keys or {}).items():
            for token in tokens:
                self.add(project, token)

    def add(self, project: str, token: str, *, endpoints: Iterable[str] = (),
            requests_per_second: float | None = None, burst: int = 0, expires_at: float | None = None) -> Grant:
        digest = _digest(token)
        grant = Grant(digest, project, frozenset(endpoints), requests_per_second, burst, expires_at)
        self._grants = {**self._grants, digest: grant}
        return grant

    def revoke(self, project: str, token: str) -> None:
        digest = _digest(token)
        if (found := self._grants.get(digest)) is not None and found.project == project:
            self._grants = {k: v for k, v in self._grants.items() if k != digest}

    def grant(self, token: str) -> Grant | None:
        return self._grants.get(_digest(token))

    def verify(self, project: str, token: str) -> bool:
        """True if `token` is a key of `project` (whatever its restrictions)."""
        found = self.grant(token)
        return found is not None and found.project == project


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of an `Authorization: Bearer …` header (scheme case-insensitive), or None."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                return token
            return None
    return None
