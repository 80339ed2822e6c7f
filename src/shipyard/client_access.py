"""The SDK's half for identities and access: users, service accounts, their tokens, roles and bindings,
access reviews and the audit log (the API's routers/access.py and routers/rbac.py). A mixin of `Client`,
kept apart so the client's core (objects, logs, watches) stays one mechanism per module."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

RBAC = "/apis/rbac.authorization.k8s.io/v1"
AUTHZ = "/apis/authorization.k8s.io/v1"
NAMESPACED_RBAC = {"Role": "roles", "RoleBinding": "rolebindings"}
CLUSTER_RBAC = {"ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings"}


class AccessMixin:
    def _request(self, method: str, path: str, **kwargs: Any) -> Any:  # provided by Client
        raise NotImplementedError

    # --- who am I ---------------------------------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        return dict(self._request("GET", "/api/v1/whoami"))

    def can_i(self, verb: str, resource: str, namespace: str = "", name: str = "", subresource: str = "",
              group: str = "shipyard.dev", as_user: str | None = None, as_groups: tuple[str, ...] = ()) -> dict[str, Any]:
        """{allowed, reason} for the caller (or, with `as_user`, for that user: needs the right to ask)."""
        if resource.startswith("/"):
            spec: dict[str, Any] = {"nonResourceAttributes": {"verb": verb, "path": resource}}
        else:
            spec = {"resourceAttributes": {"verb": verb, "resource": resource, "namespace": namespace,
                                           "name": name, "subresource": subresource, "group": group}}
        if as_user:
            spec.update(user=as_user, groups=list(as_groups))
            answer = self._request("POST", f"{AUTHZ}/subjectaccessreviews",
                                   json={"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                                         "spec": spec})
        else:
            answer = self._request("POST", f"{AUTHZ}/selfsubjectaccessreviews",
                                   json={"apiVersion": "authorization.k8s.io/v1",
                                         "kind": "SelfSubjectAccessReview", "spec": spec})
        return dict(answer.get("status") or {})

    # --- users and service accounts ---------------------------------------------------------------------

    def create_user(self, name: str, email: str | None = None, groups: tuple[str, ...] = ()) -> dict[str, Any]:
        return dict(self._request("POST", "/api/v1/users", json={"name": name, "email": email,
                                                                  "groups": list(groups)}))

    def get_user(self, name: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/api/v1/users/{quote(name, safe='')}"))

    def list_users(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/api/v1/users").get("items", []))

    def delete_user(self, name: str) -> dict[str, Any]:
        return dict(self._request("DELETE", f"/api/v1/users/{quote(name, safe='')}"))

    def create_service_account(self, name: str, project: str = "default") -> dict[str, Any]:
        return dict(self._request("POST", f"/api/v1/namespaces/{project}/serviceaccounts", json={"name": name}))

    def list_service_accounts(self, project: str = "default") -> list[dict[str, Any]]:
        return list(self._request("GET", f"/api/v1/namespaces/{project}/serviceaccounts").get("items", []))

    def delete_service_account(self, name: str, project: str = "default") -> dict[str, Any]:
        return dict(self._request("DELETE", f"/api/v1/namespaces/{project}/serviceaccounts/{name}"))

    # --- tokens -----------------------------------------------------------------------------------------

    @staticmethod
    def _tokens_path(user: str | None, service_account: str | None, project: str) -> str:
        if service_account:
            return f"/api/v1/namespaces/{project}/serviceaccounts/{service_account}/tokens"
        return f"/api/v1/users/{quote(user or '', safe='')}/tokens"

    def create_token(self, name: str, *, user: str | None = None, service_account: str | None = None,
                     project: str = "default", expires_in_days: float | None = None) -> dict[str, Any]:
        """A new token of a user or service account: `token` is in this answer only, never again."""
        body: dict[str, Any] = {"name": name}
        if expires_in_days:
            body["expiresInDays"] = expires_in_days
        return dict(self._request("POST", self._tokens_path(user, service_account, project), json=body))

    def list_tokens(self, *, user: str | None = None, service_account: str | None = None,
                    project: str = "default") -> list[dict[str, Any]]:
        return list(self._request("GET", self._tokens_path(user, service_account, project)).get("items", []))

    def revoke_token(self, name: str, *, user: str | None = None, service_account: str | None = None,
                     project: str = "default") -> dict[str, Any]:
        return dict(self._request("DELETE", self._tokens_path(user, service_account, project) + f"/{name}"))

    # --- roles and bindings -----------------------------------------------------------------------------

    @staticmethod
    def _rbac_path(kind: str, namespace: str | None) -> str:
        if kind in NAMESPACED_RBAC:
            return f"{RBAC}/namespaces/{namespace or 'default'}/{NAMESPACED_RBAC[kind]}"
        if kind in CLUSTER_RBAC:
            return f"{RBAC}/{CLUSTER_RBAC[kind]}"
        raise ValueError(f"{kind} is not an RBAC kind (Role, RoleBinding, ClusterRole, ClusterRoleBinding)")

    def put_rbac(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace a Role, RoleBinding, ClusterRole or ClusterRoleBinding."""
        namespace = (obj.get("metadata") or {}).get("namespace")
        return dict(self._request("POST", self._rbac_path(str(obj.get("kind")), namespace), json=obj))

    def list_rbac(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return list(self._request("GET", self._rbac_path(kind, namespace)).get("items", []))

    def delete_rbac(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        return dict(self._request("DELETE", self._rbac_path(kind, namespace) + f"/{name}"))

    # --- audit ------------------------------------------------------------------------------------------

    def audit(self, project: str | None = None, user: str | None = None, since_seconds: int | None = None,
              limit: int = 1000) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("project", project), ("user", user), ("sinceSeconds", since_seconds),
                                    ("limit", limit)) if v}
        return list(self._request("GET", "/api/v1/audit", params=params).get("items", []))
