"""Roles, ClusterRoles and their bindings, kept locally as the `rbac.authorization.k8s.io/v1` objects a cluster
would hold natively, in the same SQLite database as everything else.

The authorizer needs all of them on every request, so the evaluated `Policy` (with the built-in roles and
bindings, `shipyard.rbac.builtin`) is cached and rebuilt only after a write. Objects are validated before
they are stored (one line naming the object and field), and the built-in ones cannot be changed or deleted:
they are what makes the bootstrap admin an admin.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from sqlalchemy import Column, MetaData, String, Table, Text, delete, insert, select, update
from sqlalchemy.engine import Engine

from shipyard.rbac import Attributes, Decision, Policy, authorize, builtin_objects, validate_object

from .protocol import Invalid, NotFound

RBAC_GROUP = "rbac.authorization.k8s.io"
KINDS = {"roles": "Role", "rolebindings": "RoleBinding", "clusterroles": "ClusterRole",
         "clusterrolebindings": "ClusterRoleBinding"}
NAMESPACED = {"Role", "RoleBinding"}

metadata = MetaData()
rbac_objects = Table(
    "rbac_objects", metadata,
    Column("kind", String, primary_key=True),
    Column("namespace", String, primary_key=True),  # "" for the cluster-scoped kinds
    Column("name", String, primary_key=True),
    Column("body", Text, nullable=False),
)


def _builtin_keys() -> set[tuple[str, str, str]]:
    return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in builtin_objects()}


class SQLiteRbac:
    def __init__(self, engine: Engine):
        self._engine = engine
        metadata.create_all(engine)
        self._lock = threading.Lock()
        self._policy: Policy | None = None
        self._builtin = _builtin_keys()

    def policy(self) -> Policy:
        policy = self._policy
        if policy is None:
            with self._lock:
                if self._policy is None:
                    self._policy = Policy.from_objects([*builtin_objects(), *self._stored()])
                policy = self._policy
        return policy

    def authorize(self, attrs: Attributes) -> Decision:
        return authorize(self.policy(), attrs)

    def _stored(self) -> list[dict[str, Any]]:
        with self._engine.connect() as conn:
            return [json.loads(row.body) for row in conn.execute(select(rbac_objects.c.body))]

    def put(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create or replace; (the stored object, whether it was created). Invalid for a malformed object."""
        try:
            validate_object(obj)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        kind, meta = obj["kind"], obj["metadata"]
        namespace = meta.get("namespace", "") if kind in NAMESPACED else ""
        key = (kind, namespace, meta["name"])
        if key in self._builtin:
            raise Invalid(f"{kind.lower()}/{meta['name']} is built in and cannot be changed")
        body = {"apiVersion": f"{RBAC_GROUP}/v1", "kind": kind,
                "metadata": {k: v for k, v in meta.items() if k in ("name", "namespace", "labels", "annotations")},
                **{k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}}
        if kind not in NAMESPACED:
            body["metadata"].pop("namespace", None)
        text = json.dumps(body, separators=(",", ":"), sort_keys=True)
        with self._lock, self._engine.begin() as conn:
            where = (rbac_objects.c.kind == kind, rbac_objects.c.namespace == namespace,
                     rbac_objects.c.name == meta["name"])
            exists = conn.execute(select(rbac_objects.c.name).where(*where)).first() is not None
            if exists:
                conn.execute(update(rbac_objects).where(*where).values(body=text))
            else:
                conn.execute(insert(rbac_objects).values(kind=kind, namespace=namespace, name=meta["name"], body=text))
            self._policy = None
        return body, not exists

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        namespace = namespace if kind in NAMESPACED else ""
        for obj in builtin_objects():
            if (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]) == (kind, namespace, name):
                return obj
        with self._engine.connect() as conn:
            row = conn.execute(select(rbac_objects.c.body).where(
                rbac_objects.c.kind == kind, rbac_objects.c.namespace == namespace,
                rbac_objects.c.name == name)).first()
        return json.loads(row.body) if row else None

    def list(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Stored and built-in objects of a kind (in one namespace, if given), by namespace and name."""
        found = [o for o in builtin_objects() if o["kind"] == kind]
        query = select(rbac_objects.c.body).where(rbac_objects.c.kind == kind)
        if namespace and kind in NAMESPACED:
            query = query.where(rbac_objects.c.namespace == namespace)
            found = [o for o in found if o["metadata"].get("namespace") == namespace]
        with self._engine.connect() as conn:
            found += [json.loads(row.body) for row in conn.execute(query)]
        return sorted(found, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))

    def delete(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        namespace = namespace if kind in NAMESPACED else ""
        if (kind, namespace, name) in self._builtin:
            raise Invalid(f"{kind.lower()}/{name} is built in and cannot be deleted")
        with self._lock, self._engine.begin() as conn:
            where = (rbac_objects.c.kind == kind, rbac_objects.c.namespace == namespace, rbac_objects.c.name == name)
            row = conn.execute(select(rbac_objects.c.body).where(*where)).first()
            if row is None:
                where_text = f" in project {namespace}" if namespace else ""
                raise NotFound(f"{kind.lower()}/{name} not found{where_text}")
            conn.execute(delete(rbac_objects).where(*where))
            self._policy = None
        return json.loads(row.body)


class BuiltinRbac:
    """The built-in roles and bindings alone, for a control plane that stores none (tests, and a cluster
    until Kubernetes decides there): the bootstrap admin is cluster-admin, and nobody else is anything."""

    def __init__(self) -> None:
        self._policy = Policy.from_objects(builtin_objects())

    def policy(self) -> Policy:
        return self._policy

    def authorize(self, attrs: Attributes) -> Decision:
        return authorize(self._policy, attrs)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        namespace = namespace if kind in NAMESPACED else ""
        return next((o for o in builtin_objects() if (o["kind"], o["metadata"].get("namespace", ""),
                                                       o["metadata"]["name"]) == (kind, namespace, name)), None)

    def list(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return [o for o in builtin_objects() if o["kind"] == kind
                and (not namespace or kind not in NAMESPACED or o["metadata"].get("namespace") == namespace)]

    def put(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        raise Invalid("this control plane stores no roles or bindings")

    def delete(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        raise Invalid("this control plane stores no roles or bindings")
