"""API-key checks for routes that are not public.

The gateway only asks a `KeyVerifier` whether a bearer token is a valid key of a project; the real verifier
(hashed per-project keys kept by the control plane) lives elsewhere, and `StaticKeys` serves tests and the
`python -m shipyard.gateway` command. A verifier is called on the gateway's event loop for every request
to a private route, so it must answer from memory: no database round trip, no blocking hash function.

Tokens are compared with `hmac.compare_digest` and never logged.
"""

from __future__ import annotations

import hmac
from typing import Iterable, Mapping, Protocol


class KeyVerifier(Protocol):
    def verify(self, project: str, token: str) -> bool:
        """True if `token` is a live API key of `project`. Must be fast and must not block."""
        ...


class StaticKeys:
    """In-memory keys: {project: [token, …]}."""

    def __init__(self, keys: Mapping[str, Iterable[str]] | None = None):
        self._keys = {project: [t.encode() for t in tokens] for project, tokens in (keys or {}).items()}

    def add(self, project: str, token: str) -> None:
        self._keys = {**self._keys, project: [*self._keys.get(project, []), token.encode()]}

    def revoke(self, project: str, token: str) -> None:
        self._keys = {**self._keys, project: [t for t in self._keys.get(project, []) if t != token.encode()]}

    def verify(self, project: str, token: str) -> bool:
        candidate = token.encode()
        # compare every key so the time taken does not tell which prefix matched
        return any([hmac.compare_digest(candidate, key) for key in self._keys.get(project, ())])


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
