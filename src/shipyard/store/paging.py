"""Continue tokens for paged lists, and paging of a plain `Store.list` for stores without their own.

Why keyset pages (each token names the last key served) rather than a held snapshot: the SQLite table keeps
no history, and a snapshot per listing client would hold memory for as long as a client might come back.
Pages are ordered by (namespace, name), so an object that exists throughout the listing appears exactly
once; one created or deleted meanwhile may or may not. Every page reports the first page's resourceVersion,
so a watch from it replays anything the pages missed: list-then-watch converges as with Kubernetes, where
the continue token is opaque too (base64 JSON with the version and the start key, as here).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from .protocol import BadRequest, ListPage

MAX_LIMIT = 10_000  # one page at most: a client asking for more gets a continue token


@dataclass(frozen=True)
class Continuation:
    resource_version: int
    after: tuple[str, str] | None = None  # (namespace, name) of the last object served
    upstream: str | None = None  # a cluster's own token, passed through (store.kubernetes)


def _scope(kind: str, namespace: str | None, name: str | None) -> list[str]:
    return [kind, namespace or "", name or ""]


def encode(kind: str, namespace: str | None, name: str | None, token: Continuation) -> str:
    body: dict[str, Any] = {"rv": token.resource_version, "of": _scope(kind, namespace, name)}
    if token.after is not None:
        body["after"] = list(token.after)
    if token.upstream is not None:
        body["up"] = token.upstream
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(kind: str, namespace: str | None, name: str | None, text: str) -> Continuation:
    """The token's content; BadRequest (one line) if it is malformed or belongs to another list."""
    try:
        body = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        rv, scope = body["rv"], body["of"]
        after, upstream = body.get("after"), body.get("up")
        if not isinstance(rv, int) or rv < 0 or not isinstance(scope, list):
            raise ValueError("bad fields")
        if after is not None and not (isinstance(after, list) and len(after) == 2
                                      and all(isinstance(x, str) for x in after)):
            raise ValueError("bad start key")
        if upstream is not None and not isinstance(upstream, str):
            raise ValueError("bad upstream token")
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
        raise BadRequest("continue token is not valid: pass back metadata.continue of the previous page "
                         "unchanged") from None
    if scope != _scope(kind, namespace, name):
        raise BadRequest("continue token belongs to another list: continue a list with the same kind, "
                         "project and selectors") from None
    return Continuation(rv, tuple(after) if after else None, upstream)  # type: ignore[arg-type]


def check_limit(limit: int | None) -> int | None:
    if limit is None or limit == 0:
        return None  # Kubernetes: limit=0 means no limit
    if limit < 0:
        raise BadRequest(f"limit must be positive, not {limit}")
    return min(limit, MAX_LIMIT)


def page_of(rows: list[tuple[str, str, str]], kind: str, namespace: str | None, name: str | None,
            limit: int | None, resource_version: int) -> ListPage:
    """The first `limit` of `rows` ((namespace, name, JSON text), ordered, already after the start key), with
    the token that continues after the last one."""
    if limit is None or len(rows) <= limit:
        return ListPage([body for _, _, body in rows], resource_version)
    kept = rows[:limit]
    last = kept[-1]
    token = encode(kind, namespace, name, Continuation(resource_version, (last[0], last[1])))
    return ListPage([body for _, _, body in kept], resource_version, token)


def page_resources(resources: list[Any], kind: str, namespace: str | None, name: str | None,
                   limit: int | None, continue_token: str | None, current_version: int) -> ListPage:
    """Pages a store's full list, for a store without `list_page` of its own (validates every row: slow)."""
    version, after = current_version, None
    if continue_token:
        token = decode(kind, namespace, name, continue_token)
        version, after = token.resource_version, token.after
    rows = [(r.metadata.namespace, r.metadata.name, r) for r in resources
            if (name is None or r.metadata.name == name)]
    rows.sort(key=lambda row: (row[0], row[1]))
    if after is not None:
        rows = [row for row in rows if (row[0], row[1]) > after]
    limit = check_limit(limit)
    cut = rows if limit is None else rows[:limit + 1]
    return page_of([(ns, n, json.dumps(r.to_wire())) for ns, n, r in cut], kind, namespace, name, limit, version)
