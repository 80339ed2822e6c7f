"""The local runtime's own object store: native objects as JSON files, written atomically.

Kept apart from the Shipyard store on purpose: it is the local stand-in for a cluster's etcd, and what
lets a restarted daemon find the pods (and processes) it was running before a crash.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

Key = tuple[str, str, str]  # kind, namespace, name


def key_of(obj: dict[str, Any]) -> Key:
    return (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])


class ObjectFiles:
    def __init__(self, root: Path):
        self._root = root
        # By kind: the sync loop asks for one kind at a time, several times a tick, and thousands of idle
        # objects of other kinds must not make each of those asks a scan of everything.
        self._objects: dict[str, dict[Key, dict[str, Any]]] = {}
        # (kind, namespace, label, value) → keys, and the labels each key was indexed under: a controller
        # lists one job's pods by label on every reconcile, which must not be a scan of every pod.
        self._by_label: dict[tuple[str, str, str, str], set[Key]] = {}
        self._indexed: dict[Key, dict[str, str]] = {}
        root.mkdir(parents=True, exist_ok=True)
        for path in sorted(root.glob("*/*/*.json")):
            try:
                obj = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a torn write cannot happen (atomic replace), but never refuse to start over one file
            self._objects.setdefault(obj["kind"], {})[key_of(obj)] = obj
            self._index(key_of(obj), obj)

    def _path(self, key: Key) -> Path:
        kind, namespace, name = key
        return self._root / kind / namespace / f"{name}.json"

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects.get(kind, {}).get((kind, namespace, name))

    def all(self, kind: str | None = None) -> Iterator[dict[str, Any]]:
        kinds = [kind] if kind is not None else list(self._objects)
        for k in kinds:
            yield from list(self._objects.get(k, {}).values())

    def select(self, kind: str, namespace: str, labels: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
        """Objects of a kind in a namespace carrying every one of `labels`."""
        if not labels:
            yield from (o for o in self.all(kind) if o["metadata"]["namespace"] == namespace)
            return
        candidates = min((self._by_label.get((kind, namespace, k, v), set()) for k, v in labels.items()), key=len)
        for key in sorted(candidates):
            obj = self._objects.get(kind, {}).get(key)
            if obj is not None and all(obj["metadata"].get("labels", {}).get(k) == v for k, v in labels.items()):
                yield obj

    def _index(self, key: Key, obj: dict[str, Any] | None) -> None:
        labels = dict((obj or {}).get("metadata", {}).get("labels") or {})
        old = self._indexed.pop(key, {})
        if old == labels and obj is not None:
            self._indexed[key] = labels
            return
        for k, v in old.items():
            keys = self._by_label.get((key[0], key[1], k, v))
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_label[(key[0], key[1], k, v)]
        if obj is None:
            return
        self._indexed[key] = labels
        for k, v in labels.items():
            self._by_label.setdefault((key[0], key[1], k, str(v)), set()).add(key)

    def save(self, obj: dict[str, Any]) -> None:
        key = key_of(obj)
        self._objects.setdefault(key[0], {})[key] = obj
        self._index(key, obj)
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        # Secrets hold tokens: readable by the daemon's user only, from the first byte written.
        mode = 0o600 if obj["kind"] == "Secret" else 0o644
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(obj))
        os.chmod(tmp, mode)  # O_CREAT's mode applies only to a new file (and through the umask)
        os.replace(tmp, path)

    def remove(self, kind: str, namespace: str, name: str) -> None:
        self._objects.get(kind, {}).pop((kind, namespace, name), None)
        self._index((kind, namespace, name), None)
        try:
            self._path((kind, namespace, name)).unlink()
        except FileNotFoundError:
            pass
