"""A fake of the KubeApi calls the node agent makes: objects in dicts, every write recorded."""

from __future__ import annotations

import copy
import itertools
import uuid
from typing import Any

from shipyard.cluster.api import KubeConflict, KubeNotFound


def merge(target: dict[str, Any], patch: dict[str, Any], strategic: bool) -> dict[str, Any]:
    """JSON merge patch; with `strategic`, lists of dicts with a `type` or `name` merge by that key."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value, strategic)
        elif strategic and isinstance(value, list) and value and isinstance(value[0], dict) and \
                isinstance(target.get(key), list) and ("type" in value[0] or "name" in value[0]):
            mkey = "type" if "type" in value[0] else "name"
            by_key = {item[mkey]: item for item in target[key]}
            for item in value:
                if item[mkey] in by_key:
                    merge(by_key[item[mkey]], item, strategic)
                else:
                    fresh: dict[str, Any] = {}
                    merge(fresh, item, strategic)
                    target[key].append(fresh)
        else:
            if isinstance(value, dict):
                fresh = {}
                merge(fresh, value, strategic)
                value = fresh
            target[key] = copy.deepcopy(value)
    return target


class FakeKubeApi:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, Any]] = []
        self._rv = itertools.count(1)

    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["resourceVersion"] = str(next(self._rv))
        self.objects[(obj["kind"], meta.get("namespace"), meta["name"])] = obj
        return copy.deepcopy(obj)

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, kind: str, namespace: str | None = None, labels: dict[str, str] | None = None,
             fields: dict[str, str] | None = None) -> list[dict[str, Any]]:
        out = []
        for (k, ns, _), obj in sorted(self.objects.items(), key=lambda kv: str(kv[0])):
            if k != kind or (namespace and ns != namespace):
                continue
            if fields and any(_field(obj, f) != v for f, v in fields.items()):
                continue
            out.append(copy.deepcopy(obj))
        return out

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        key = (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if key in self.objects:
            raise KubeConflict(409, "exists")
        self.calls.append(("create", obj))
        return self.add(obj)

    def merge_patch(self, kind: str, namespace: str | None, name: str, patch: dict[str, Any], status: bool = False,
                    strategic: bool = False) -> dict[str, Any]:
        obj = self.objects.get((kind, namespace, name))
        if obj is None:
            raise KubeNotFound(404, "not found")
        uid = patch.get("metadata", {}).get("uid")
        if uid and uid != obj["metadata"]["uid"]:
            raise KubeConflict(409, "uid precondition")
        self.calls.append(("patch_status" if status else "patch", (kind, namespace, name, copy.deepcopy(patch))))
        if status:
            patch = {"status": patch.get("status", {})}
        merge(obj, patch, strategic)
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        return copy.deepcopy(obj)

    def delete(self, kind: str, namespace: str | None, name: str, foreground: bool = False,
               grace_period_seconds: int | None = None, uid: str | None = None) -> bool:
        obj = self.objects.get((kind, namespace, name))
        if obj is None:
            return False
        if uid and obj["metadata"]["uid"] != uid:
            raise KubeConflict(409, "uid precondition")
        self.calls.append(("delete", (kind, namespace, name, grace_period_seconds, uid)))
        del self.objects[(kind, namespace, name)]
        return True

    def status_writes(self, name: str) -> list[dict[str, Any]]:
        return [args[3]["status"] for call, args in self.calls if call == "patch_status" and args[2] == name]


def _field(obj: dict[str, Any], path: str) -> Any:
    value: Any = obj
    for part in path.split("."):
        value = (value or {}).get(part)
    return value


def pod(name: str, namespace: str = "default", node: str = "node-a", **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": "python:3.11", **spec.pop("container", {})}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
            "spec": {"nodeName": node, "containers": [container], **spec},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"}]}}
