"""The local runtime's own object store: native objects as JSON files, written atomically.

Kept apart from the Shipyard store on purpose: it is the local stand-in for a cluster's etcd, and what
lets a restarted daemon find the pods (and processes) it was running before a crash.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

Key = tuple[str, str, str]  # kind, namespace, name
StateOf = Callable[[dict[str, Any]], "str | None"]


def key_of(obj: dict[str, Any]) -> Key:
    return (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])


class ObjectFiles:
    """Native objects in memory and on disk, with the indexes the sync loop asks by: label, owner uid, uid and
    a caller-defined state (`state_of`, e.g. a pod's phase), so that one tick costs what is moving, not what
    is stored: 5,000 pods that wait must not be walked ten times a second to find the three that run."""

    def __init__(self, root: Path, state_of: StateOf | None = None):
        self._root = root
        self._state_of = state_of or (lambda obj: None)
        # By kind: the sync loop asks for one kind at a time, several times a tick, and thousands of idle
        # objects of other kinds must not make each of those asks a scan of everything.
        self._objects: dict[str, dict[Key, dict[str, Any]]] = {}
        # (kind, namespace, label, value) → keys, and the labels each key was indexed under: a controller
        # lists one job's pods by label on every reconcile, which must not be a scan of every pod.
        self._by_label: dict[tuple[str, str, str, str], set[Key]] = {}
        self._indexed: dict[Key, dict[str, str]] = {}
        self._by_uid: dict[str, Key] = {}
        self._by_owner: dict[str, set[Key]] = {}  # owner uid -> keys of the objects that name it
        self._by_state: dict[tuple[str, str], set[Key]] = {}  # (kind, state) -> keys
        self._facts: dict[Key, tuple[str | None, tuple[str, ...], str | None]] = {}  # uid, owner uids, state
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

    def by_uid(self, uid: str) -> dict[str, Any] | None:
        key = self._by_uid.get(uid)
        return self._objects.get(key[0], {}).get(key) if key else None

    def owned(self, uid: str, kind: str | None = None) -> list[dict[str, Any]]:
        """The objects (of `kind`, if given) whose ownerReferences name this uid."""
        keys = self._by_owner.get(uid, ())
        return [self._objects[k[0]][k] for k in sorted(keys) if kind is None or k[0] == kind]

    def in_state(self, kind: str, state: str) -> list[dict[str, Any]]:
        """Objects of a kind whose `state_of` was `state` when last saved."""
        return [self._objects[kind][k] for k in sorted(self._by_state.get((kind, state), ()))]

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
        self._index_facts(key, obj)
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

    def _index_facts(self, key: Key, obj: dict[str, Any] | None) -> None:
        old_uid, old_owners, old_state = self._facts.pop(key, (None, (), None))
        if obj is not None:
            meta = obj.get("metadata", {})
            facts = (meta.get("uid"), tuple(r.get("uid") for r in meta.get("ownerReferences") or ()),
                     self._state_of(obj))
            self._facts[key] = facts
            if facts == (old_uid, old_owners, old_state):
                return
        else:
            facts = (None, (), None)
        uid, owners, state = facts
        if old_uid and old_uid != uid and self._by_uid.get(old_uid) == key:
            del self._by_uid[old_uid]
        if uid:
            self._by_uid[uid] = key
        for owner in set(old_owners) - set(owners):
            keys = self._by_owner.get(owner)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_owner[owner]
        for owner in owners:
            if owner:
                self._by_owner.setdefault(owner, set()).add(key)
        if old_state != state:
            if old_state is not None:
                keys = self._by_state.get((key[0], old_state))
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._by_state[(key[0], old_state)]
            if state is not None:
                self._by_state.setdefault((key[0], state), set()).add(key)

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
