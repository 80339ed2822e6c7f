"""Project API keys on a cluster: one Secret per key in Shipyard's own namespace, holding only the key's hash.

Why Secrets: they are the API server's object for credentials, so RBAC, encryption at rest and audit apply
to them as to any credential, and no second database is needed. The gateway asks `api_key_project` on every
request, so it answers from a map a watch keeps current, never from an API call.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from datetime import datetime, timezone
from typing import Any

from shipyard.cluster.api import KubeApi, KubeError

from .protocol import ApiKey, Conflict, NotFound, StoreError

log = logging.getLogger(__name__)

KEY_LABEL = "shipyard.dev/api-key"
PROJECT_ANNOTATION = "shipyard.dev/project"
NAME_ANNOTATION = "shipyard.dev/key-name"
HINT_ANNOTATION = "shipyard.dev/hint"
CREATED_ANNOTATION = "shipyard.dev/created-at"
REVOKED_ANNOTATION = "shipyard.dev/revoked-at"


def _secret_name(project: str, name: str) -> str:
    return "apikey-" + hashlib.sha256(f"{project}/{name}".encode()).hexdigest()[:24]


def _iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _parse(ts: str | None) -> datetime | None:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")) if ts else None


def _record(secret: dict[str, Any]) -> ApiKey:
    notes = secret["metadata"].get("annotations") or {}
    return ApiKey(project=notes.get(PROJECT_ANNOTATION, ""), name=notes.get(NAME_ANNOTATION, ""),
                  hint=notes.get(HINT_ANNOTATION, ""),
                  created_at=_parse(notes.get(CREATED_ANNOTATION)) or datetime.now(timezone.utc),
                  revoked_at=_parse(notes.get(REVOKED_ANNOTATION)))


def _hash_of(secret: dict[str, Any]) -> str:
    return base64.b64decode((secret.get("data") or {}).get("sha256", "")).decode()


class KubernetesApiKeys:
    def __init__(self, api: KubeApi, namespace: str):
        self._api = api
        self._namespace = namespace
        self._by_hash: dict[str, str] = {}  # token hash → project, active keys only
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
                    self._by_hash[token_hash] = record.project

    def _secrets(self) -> list[dict[str, Any]]:
        try:
            return self._api.list("Secret", self._namespace, {KEY_LABEL: "true"})
        except KubeError as exc:
            raise StoreError(f"cannot list API keys: {exc}") from None

    def add_api_key(self, project: str, name: str, token_hash: str, hint: str) -> ApiKey:
        secret_name = _secret_name(project, name)
        current = self._api.get("Secret", self._namespace, secret_name)
        if current is not None and not (current["metadata"].get("annotations") or {}).get(REVOKED_ANNOTATION):
            raise Conflict(f"project {project!r} already has an API key named {name!r}")
        if current is not None:
            self._api.delete("Secret", self._namespace, secret_name)  # a revoked key's name may be reused
        secret = {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": secret_name, "namespace": self._namespace, "labels": {KEY_LABEL: "true"},
                         "annotations": {PROJECT_ANNOTATION: project, NAME_ANNOTATION: name, HINT_ANNOTATION: hint,
                                         CREATED_ANNOTATION: _iso(datetime.now(timezone.utc))}},
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
            "annotations": {REVOKED_ANNOTATION: _iso(datetime.now(timezone.utc))}}})
        self._remember("MODIFIED", patched)
        return _record(patched)

    def api_key_project(self, token_hash: str) -> str | None:
        with self._lock:
            return self._by_hash.get(token_hash)
