"""Shipyard's built-in ClusterRoles (and bindings), as `rbac.authorization.k8s.io/v1` object dicts.

They mirror Kubernetes' user-facing roles. Shipyard's permissions live in three ClusterRoles labelled to
aggregate into Kubernetes' own `view`, `edit` and `admin` (so on a cluster, binding `edit` in a namespace
grants Shipyard's edit permissions there too); locally `view`, `edit`, `admin` and `cluster-admin` are defined
as Kubernetes defines them: `view` aggregates `aggregate-to-view` and is itself labelled `aggregate-to-edit`,
`edit` aggregates `aggregate-to-edit` and is labelled `aggregate-to-admin`, `admin` aggregates
`aggregate-to-admin`, hence admin ⊇ edit ⊇ view. Bind `view`/`edit`/`admin` (with a RoleBinding in a project,
i.e. a namespace), not the `shipyard-*` pieces: like Kubernetes' `system:aggregate-to-*` roles, each of those
holds only what it adds to the role below.

All rules are for apiGroup `shipyard.dev`. Verbs are Kubernetes': get, list, watch (read); create, update,
patch, delete, deletecollection (write).

| role          | grants, in the project (namespace) it is bound in                  | why |
|---------------|--------------------------------------------------------------------|---|
| view          | get/list/watch: trainingjobs, sweeps, endpoints, apps, workspaces, | see what runs and how           |
|               | events, models, projects, `*/status`; the logs of trainingjobs,    | it went (1) |
|               | sweeps, endpoints, apps                                            | |
|               | NOT workspaces/log, workspaces/open, any */portforward             | (2) |
|               | NOT secrets, apikeys, roles, rolebindings, serviceaccounts, tokens | (3) |
| edit          | view + create/update/patch/delete/deletecollection: trainingjobs,  | run and change the work |
|               | sweeps, endpoints, apps, workspaces, models                        | (4) |
|               | secrets: get/list/watch/create/update/patch/delete                 | workloads need credentials |
|               | apikeys: get/list/watch/create/delete                              | keys to call the endpoints |
|               | workspaces/log; get/create on endpoints/portforward,               | reach what they run, their own |
|               | apps/portforward, workspaces/portforward, workspaces/open          | workspaces included |
|               | NOT roles, rolebindings, serviceaccounts, tokens                   | (5) |
| admin         | edit + all eight verbs on roles and rolebindings (apiGroup          | manage who may do what in the |
|               | rbac.authorization.k8s.io), serviceaccounts and their tokens;      | project, and the project (6); |
|               | read auditevents; get/update/patch projects                        | see who did what in it |
| cluster-admin | `*` verbs on `*` resources of `*` groups; every non-resource URL   | the bootstrap admin |

(1) Status carries no secret material. (2) A workspace is one member's interactive session: its log, its IDE
and its ports can show their files, notebooks and tokens, so a viewer must not reach into another member's
workspace; a viewer still sees that it exists. (3) Credentials, and who may do what, are not for viewers
(Kubernetes' view has no secrets and no roles either). (4) Registering and promoting models is part of the work
that editors do. (5) Granting access is an admin's, as in Kubernetes' edit; service-account tokens are
credentials that outlive the editor. (6) The API checks a project's own object with namespace = the project's
name, so a project admin can change their project but not create or delete projects (cluster-admin's).

`builtin_objects()` adds the bindings Kubernetes bootstraps with: `cluster-admin` to the group
`system:masters`, `system:public-info-viewer` (GET /healthz, /livez, /readyz, /version) to every caller, and
`system:basic-user` (who am I, may I: self reviews) to every authenticated caller.
"""

from __future__ import annotations

from typing import Any

GROUP = "shipyard.dev"
RBAC_API_VERSION = "rbac.authorization.k8s.io/v1"
AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"
BOOTSTRAP = {"kubernetes.io/bootstrapping": "rbac-defaults"}
BUILTIN_ROLE_ORDER = ("view", "edit", "admin", "cluster-admin")

READ = ("get", "list", "watch")
WRITE = ("create", "update", "patch", "delete", "deletecollection")
ALL = READ + WRITE
WORKLOADS = ("trainingjobs", "sweeps", "endpoints", "apps", "workspaces")


def _rule(resources: tuple[str, ...] | list[str], verbs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    return {"apiGroups": [GROUP], "resources": list(resources), "verbs": list(verbs)}


def _cluster_role(name: str, labels: dict[str, str], rules: list[dict[str, Any]],
                  aggregate: str | None = None) -> dict[str, Any]:
    role: dict[str, Any] = {"apiVersion": RBAC_API_VERSION, "kind": "ClusterRole",
                            "metadata": {"name": name, "labels": labels}, "rules": rules}
    if aggregate:
        role["aggregationRule"] = {"clusterRoleSelectors": [{"matchLabels": {AGGREGATE + aggregate: "true"}}]}
    return role


VIEW_RULES = [
    _rule([*WORKLOADS, "events", "models", "projects"], READ),
    _rule(["*/status"], READ),
    _rule(["trainingjobs/log", "sweeps/log", "endpoints/log", "apps/log"], READ),
]
EDIT_RULES = [
    _rule([*WORKLOADS, "models"], WRITE),
    _rule(["secrets"], ("get", "list", "watch", "create", "update", "patch", "delete")),
    _rule(["apikeys"], ("get", "list", "watch", "create", "delete")),
    _rule(["workspaces/log"], READ),
    _rule(["endpoints/portforward", "apps/portforward", "workspaces/portforward", "workspaces/open"],
          ("get", "create")),
]
ADMIN_RULES = [
    _rule(["serviceaccounts", "serviceaccounts/token", "tokens"], ALL),
    _rule(["auditevents"], READ),
    _rule(["projects"], ("get", "update", "patch")),
    # Roles and bindings are Kubernetes' own kinds (its admin role grants them the same way).
    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": list(ALL)},
]


def builtin_cluster_roles(*, include_kubernetes_roles: bool = True) -> list[dict[str, Any]]:
    """Shipyard's ClusterRoles; with `include_kubernetes_roles` (local mode) also Kubernetes' own
    cluster-admin, admin, edit and view, which a cluster already has."""
    roles = [
        _cluster_role("shipyard-view", {AGGREGATE + "view": "true"}, VIEW_RULES),
        _cluster_role("shipyard-edit", {AGGREGATE + "edit": "true"}, EDIT_RULES),
        _cluster_role("shipyard-admin", {AGGREGATE + "admin": "true"}, ADMIN_RULES),
    ]
    if include_kubernetes_roles:
        roles += [
            _cluster_role("cluster-admin", dict(BOOTSTRAP), [
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ]),
            _cluster_role("admin", dict(BOOTSTRAP), [], aggregate="admin"),
            _cluster_role("edit", {**BOOTSTRAP, AGGREGATE + "admin": "true"}, [], aggregate="edit"),
            _cluster_role("view", {**BOOTSTRAP, AGGREGATE + "edit": "true"}, [], aggregate="view"),
        ]
    return roles


def builtin_objects() -> list[dict[str, Any]]:
    """Everything a fresh local control plane starts with: the ClusterRoles above plus Kubernetes' bootstrap
    bindings (cluster-admin to `system:masters`; the public health/version URLs to everyone)."""
    group = "rbac.authorization.k8s.io"
    public = _cluster_role("system:public-info-viewer", dict(BOOTSTRAP), [
        {"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}])
    # As Kubernetes' system:basic-user: anyone signed in may ask who they are and what they may do.
    basic = _cluster_role("system:basic-user", dict(BOOTSTRAP), [
        {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
         "verbs": ["create"]},
        {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]}])
    return [
        *builtin_cluster_roles(),
        public,
        basic,
        {"apiVersion": RBAC_API_VERSION, "kind": "ClusterRoleBinding",
         "metadata": {"name": "system:basic-user", "labels": dict(BOOTSTRAP)},
         "roleRef": {"apiGroup": group, "kind": "ClusterRole", "name": "system:basic-user"},
         "subjects": [{"apiGroup": group, "kind": "Group", "name": "system:authenticated"}]},
        {"apiVersion": RBAC_API_VERSION, "kind": "ClusterRoleBinding",
         "metadata": {"name": "cluster-admin", "labels": dict(BOOTSTRAP)},
         "roleRef": {"apiGroup": group, "kind": "ClusterRole", "name": "cluster-admin"},
         "subjects": [{"apiGroup": group, "kind": "Group", "name": "system:masters"}]},
        {"apiVersion": RBAC_API_VERSION, "kind": "ClusterRoleBinding",
         "metadata": {"name": "system:public-info-viewer", "labels": dict(BOOTSTRAP)},
         "roleRef": {"apiGroup": group, "kind": "ClusterRole", "name": "system:public-info-viewer"},
         "subjects": [{"apiGroup": group, "kind": "Group", "name": "system:authenticated"},
                      {"apiGroup": group, "kind": "Group", "name": "system:unauthenticated"}]},
    ]
