"""Project API keys on a cluster: one Secret per key in Shipyard's own namespace, holding only the key's hash.

Why Secrets: they are the API server's object for credentials, so RBAC, encryption at rest and audit apply
to them as to any credential, and no second database is needed. The gateway asks `api_key_grant` on every
request, so it answers from a map a watch keeps current, never from an API call.

A key's creator, expiry, Endpoint/App list and rate are annotations on its Secret (annotations, not labels:
label values cannot hold a list or a timestamp with colons); a Secret written before those existed reads as
created by "unknown", never expiring, unrestricted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

from shipyard.cluster.api import KubeApi, KubeError

from .protocol import ApiKey, ApiKeyGrant, Conflict, NotFound, RateLimit, StoreError

log = logging.getLogger(__name__)

KEY_LABEL = "shipyard.dev/api-key"
PROJECT_ANNOTATION = "shipyard.dev/project"
NAME_ANNOTATION = "shipyard.dev/key-name"
HINT_ANNOTATION = "shipyard.dev/hint"
CREATED_ANNOTATION = "shipyard.dev/created-at"
REVOKED_ANNOTATION = "shipyard.dev/revoked-at"
CREATED_BY_ANNOTATION = "shipyard.dev/created-by"
EXPIRES_ANNOTATION = "shipyard.dev/expires-at"
ENDPOINTS_ANNOTATION = "shipyard.dev/endpoints"  # a JSON list of names; absent: every one of the project
RATE_ANNOTATION = "shipyard.dev/rate-limit"  # JSON {"requestsPerSecond": float, "burst": int}; absent: none


def _secret_name(project: str, name: str) -> str:
    return "apikey-" + hashlib.sha256(f"{project}/{name}".encode()).hexdigest()[:24]


def _iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _parse(ts: str | None) -> datetime | None:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")) if ts else None


def _rate(text: str | None) -> RateLimit | None:
    if not text:
        return None
    value = json.loads(text)
    return RateLimit(float(value["requestsPerSecond"]), int(value["burst"]))


def _record(secret: dict[str, Any]) -> ApiKey:
    notes = secret["metadata"].get("annotations") or {}
    try:
        endpoints = tuple(json.loads(notes[ENDPOINTS_ANNOTATION])) if notes.get(ENDPOINTS_ANNOTATION) else ()
        rate = _rate(notes.get(RATE_ANNOTATION))
    except (ValueError, KeyError, TypeError):
        # edited by hand into nonsense: let the key reach nothing ("-" names no resource) rather than lift its
        # limits
        log.warning("API key Secret %s has unreadable restrictions: it reaches nothing until fixed",
                    secret["metadata"].get("name"))
        endpoints, rate = ("-",), None
    return ApiKey(project=notes.get(PROJECT_ANNOTATION, ""), name=notes.get(NAME_ANNOTATION, ""),
                  hint=notes.get(HINT_ANNOTATION, ""),
                  created_at=_parse(notes.get(CREATED_ANNOTATION)) or datetime.now(timezone.utc),
                  revoked_at=_parse(notes.get(REVOKED_ANNOTATION)),
                  created_by=notes.get(CREATED_BY_ANNOTATION) or "unknown",
                  expires_at=_parse(notes.get(EXPIRES_ANNOTATION)), endpoints=endpoints, rate_limit=rate)


def _hash_of(secret: dict[str, Any]) -> str:
    return base64.b64decode((secret.get("data") or {}).get("sha256", "")).decode()


class KubernetesApiKeys:
    def __init__(self, api: KubeApi, namespace: str, clock: Callable[[], float] = time.time):
        """`clock`: epoch seconds, for expiry (tests inject one)."""
        self._api = api
        self._namespace = namespace
        self._clock = clock
        self._by_hash: dict[str, ApiKeyGrant] = {}  # token hash → grant, unrevoked keys only
        self._by_secret: dict[str, str] = {}  # secret name → token hash
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._watch, name="watch-apikeys", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def sync(self) -> None:
        """Load every key now (the watch catches up later): a gateway starts serving with its keys known."""
        for secret in self._secrets():
            self._remember("ADDED", secret)

    def _watch(self) -> None:
        for type_, secret in self._api.watch("Secret", self._namespace, {KEY_LABEL: "true"}, self._stop):
            self._remember(type_, secret)

    def _remember(self, type_: str, secret: dict[str, Any]) -> None:
        name = secret["metadata"]["name"]
        with self._lock:
            old = self._by_secret.pop(name, None)
            if old is not None:
                self._by_hash.pop(old, None)
            if type_ != "DELETED":
                record, token_hash = _record(secret), _hash_of(secret)
                self._by_secret[name] = token_hash
                if record.revoked_at is None:
                    self._by_hash[token_hash] = ApiKeyGrant.of(token_hash, record)

    def _secrets(self) -> list[dict[str, Any]]:
        try:
            return self._api.list("Secret", self._namespace, {KEY_LABEL: "true"})
        except KubeError as exc:
            raise StoreError(f"cannot list API keys: {exc}") from None

    def add_api_key(self, project: str, name: str, token_hash: str, hint: str, *, created_by: str = "unknown",
                    expires_at: datetime | None = None, endpoints: tuple[str, ...] = (),
                    rate_limit: RateLimit | None = None) -> ApiKey:
        secret_name = _secret_name(project, name)
        current = self._api.get("Secret", self._namespace, secret_name)
        if current is not None and not (current["metadata"].get("annotations") or {}).get(REVOKED_ANNOTATION):
            raise Conflict(f"project {project!r} already has an API key named {name!r}")
        if current is not None:
            self._api.delete("Secret", self._namespace, secret_name)  # a revoked key's name may be reused
        notes = {PROJECT_ANNOTATION: project, NAME_ANNOTATION: name, HINT_ANNOTATION: hint,
                 CREATED_ANNOTATION: _iso(datetime.fromtimestamp(self._clock(), timezone.utc)),
                 CREATED_BY_ANNOTATION: created_by}
        if expires_at is not None:
            notes[EXPIRES_ANNOTATION] = _iso(expires_at)
        if endpoints:
            notes[ENDPOINTS_ANNOTATION] = json.dumps(list(endpoints))
        if rate_limit is not None:
            notes[RATE_ANNOTATION] = json.dumps({"requestsPerSecond": rate_limit.requests_per_second,
                                                 "burst": rate_limit.burst})
        secret = {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": secret_name, "namespace": self._namespace, "labels": {KEY_LABEL: "true"},
                         "annotations": notes},
            "data": {"sha256": base64.b64encode(token_hash.encode()).decode()},
        }
        try:
            created = self._api.create(secret)
        except KubeError as exc:
            raise Conflict(f"could not store the API key: {exc}") from None
        self._remember("ADDED", created)
        return _record(created)

    def list_api_keys(self, project: str | None = None) -> list[ApiKey]:
        records = [_record(s) for s in self._secrets()]
        return sorted((r for r in records if project is None or r.project == project),
                      key=lambda r: (r.project, r.name))

    def revoke_api_key(self, project: str, name: str) -> ApiKey:
        secret_name = _secret_name(project, name)
        current = self._api.get("Secret", self._namespace, secret_name)
        if current is None or (current["metadata"].get("annotations") or {}).get(REVOKED_ANNOTATION):
            raise NotFound(f"project {project!r} has no active API key named {name!r}")
        patched = self._api.merge_patch("Secret", self._namespace, secret_name, {"metadata": {
            "annotations": {REVOKED_ANNOTATION: _iso(datetime.fromtimestamp(self._clock(), timezone.utc))}}})
        self._remember("MODIFIED", patched)
        return _record(patched)

    def api_key_grant(self, token_hash: str) -> ApiKeyGrant | None:
        """The grant of a live key (None: unknown, revoked or expired): a dict lookup, never an API call. No
        lock: a dict read is atomic in CPython and the grants are immutable."""
        grant = self._by_hash.get(token_hash)
        if grant is None or (grant.expires_at is not None and self._clock() >= grant.expires_at):
            return None
        return grant

    def api_key_project(self, token_hash: str) -> str | None:
        grant = self.api_key_grant(token_hash)
        return grant.project if grant is not None else None
