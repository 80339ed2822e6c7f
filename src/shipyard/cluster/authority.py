"""On a cluster, Kubernetes decides who calls Shipyard's API and what they may do.

A bearer token that is not the bootstrap admin's is authenticated with a TokenReview (the API server answers
for every kind of user it knows: ServiceAccount tokens, OIDC, static tokens, webhook), and every request is
authorized with a SubjectAccessReview for that user's own identity over the cluster's RBAC, where the chart's
ClusterRoles `shipyard-view/edit/admin` aggregate into Kubernetes' `view/edit/admin`. So the operator never
acts for a user with more rights than the user has, and nobody needs the admin token's Secret.

Answers are cached briefly (tokens 10 s, decisions 5 s; Kubernetes' own webhook authenticator caches two
minutes), so a burst of requests costs one review; a token revoked in the cluster stops working within 10 s.
The denial message names the built-in role that would grant the request, computed from Shipyard's own copy
of those roles (`shipyard.rbac.builtin`), which the chart installs.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

from shipyard.rbac import Attributes, Decision, Policy, builtin_objects, denial_message
from shipyard.store.identities import Identity
from shipyard.store.rbac import BuiltinRbac

from .api import KubeApi, KubeError, ResourceType

TOKEN_REVIEW = ResourceType("authentication.k8s.io/v1", "TokenReview", "tokenreviews", namespaced=False)
ACCESS_REVIEW = ResourceType("authorization.k8s.io/v1", "SubjectAccessReview", "subjectaccessreviews",
                             namespaced=False)
TOKEN_TTL = 10.0
DECISION_TTL = 5.0
CACHE_LIMIT = 10_000


class _TtlCache:
    def __init__(self, ttl: float):
        self._ttl, self._lock, self._items = ttl, threading.Lock(), {}  # type: ignore[var-annotated]

    def get(self, key: Any) -> Any:
        with self._lock:
            found = self._items.get(key)
            if found is None or found[0] < time.monotonic():
                return None
            return found[1]

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            if len(self._items) >= CACHE_LIMIT:
                self._items.clear()  # rare and cheap to refill: simpler than an LRU for a safety bound
            self._items[key] = (time.monotonic() + self._ttl, value)


class ClusterIdentities:
    """`authenticate(token)` by TokenReview: the identities capability of the API on a cluster."""

    def __init__(self, api: KubeApi):
        self._api = api
        api.register(TOKEN_REVIEW)
        self._cache = _TtlCache(TOKEN_TTL)

    def authenticate(self, token: str) -> Identity | None:
        key = hashlib.sha256(token.encode()).hexdigest()  # never the token itself as a key in memory
        cached = self._cache.get(key)
        if cached is not None:
            return cached or None
        try:
            review = self._api.create({"apiVersion": TOKEN_REVIEW.api_version, "kind": "TokenReview",
                                       "spec": {"token": token}})
        except KubeError:
            return None  # the cluster could not say: refuse (a 401), never guess
        status = review.get("status") or {}
        found: Identity | bool = False
        if status.get("authenticated"):
            user = status.get("user") or {}
            found = Identity(name=str(user.get("username", "")), groups=tuple(user.get("groups") or ()),
                             kind="User", namespace=None, token_name="kubernetes")
        self._cache.put(key, found)
        return found or None


class ClusterRbac(BuiltinRbac):
    """`authorize(attrs)` by SubjectAccessReview. Roles and bindings live in the cluster, written with kubectl
    (or the chart); through Shipyard's API they are read-only built-ins, as BuiltinRbac says."""

    def __init__(self, api: KubeApi):
        super().__init__()
        self._api = api
        api.register(ACCESS_REVIEW)
        self._cache = _TtlCache(DECISION_TTL)
        self._hints = Policy.from_objects(builtin_objects())

    def authorize(self, attrs: Attributes) -> Decision:
        if "system:masters" in attrs.user.groups:
            # The bootstrap admin token, or a cluster admin: Kubernetes' RBAC admits that group unasked too.
            return super().authorize(attrs)
        key = (attrs.user.name, attrs.user.groups, attrs.verb, attrs.namespace, attrs.api_group, attrs.resource,
               attrs.subresource, attrs.name, attrs.path)
        cached = self._cache.get(key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        spec: dict[str, Any] = {"user": attrs.user.name, "groups": list(attrs.user.groups)}
        if attrs.resource:
            spec["resourceAttributes"] = {"verb": attrs.verb, "namespace": attrs.namespace, "group": attrs.api_group,
                                          "resource": attrs.resource, "subresource": attrs.subresource,
                                          "name": attrs.name}
        else:
            spec["nonResourceAttributes"] = {"verb": attrs.verb, "path": attrs.path}
        try:
            review = self._api.create({"apiVersion": ACCESS_REVIEW.api_version, "kind": "SubjectAccessReview",
                                       "spec": spec})
        except KubeError as exc:
            return Decision(False, f"the cluster could not authorize the request: {exc}")
        status = review.get("status") or {}
        if status.get("allowed"):
            decision = Decision(True, str(status.get("reason") or "allowed by the cluster's RBAC"))
        else:
            decision = Decision(False, denial_message(self._hints, attrs))
        self._cache.put(key, decision)
        return decision
