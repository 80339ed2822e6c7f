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
        self._objects: dict[Key, dict[str, Any]] = {}
        root.mkdir(parents=True, exist_ok=True)
        for path in sorted(root.glob("*/*/*.json")):
            try:
                obj = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a torn write cannot happen (atomic replace), but never refuse to start over one file
            self._objects[key_of(obj)] = obj

    def _path(self, key: Key) -> Path:
        kind, namespace, name = key
        return self._root / kind / namespace / f"{name}.json"

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects.get((kind, namespace, name))

    def all(self, kind: str | None = None) -> Iterator[dict[str, Any]]:
        for key, obj in list(self._objects.items()):
            if kind is None or key[0] == kind:
                yield obj

    def save(self, obj: dict[str, Any]) -> None:
        key = key_of(obj)
        self._objects[key] = obj
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
        self._objects.pop((kind, namespace, name), None)
        try:
            self._path((kind, namespace, name)).unlink()
        except FileNotFoundError:
            pass
