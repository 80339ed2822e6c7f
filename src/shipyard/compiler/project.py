"""Project → its Namespace + one RoleBinding per member + the project's NetworkPolicies + a LimitRange
(+ a ResourceQuota).

A Project is cluster-scoped and named like the namespace it owns; everything it compiles to but the Namespace
lives in that namespace. In order (Namespace first, so the rest has somewhere to go; deleting goes in reverse):

- **Namespace**, labelled for the Pod Security Standard `restricted` (enforced and warned, latest version):
  every pod Shipyard compiles already meets it (common.py's security contexts), and it stops anything else in
  the project from running privileged. Its display name, description and default priority class are
  annotations, for whoever reads the namespace with kubectl. It has no owner reference: the Project
  controller deletes it explicitly once the project is empty.
- **RoleBinding `member-<kind>-<name>`** per member (`member_binding_name`), labelled `shipyard.dev/member`,
  binding the built-in ClusterRole of its role (view/edit/admin: Kubernetes' own on a cluster, extended by
  the chart's user-roles.yaml; shipyard.rbac.builtin locally) in the project's namespace.
- **NetworkPolicy `default-deny-ingress`**: nothing reaches a project's pods unless a policy admits it.
  NetworkPolicies are additive (a pod is reachable by the union of what the policies selecting it admit),
  so the workloads' own policies keep working under it: a TrainingJob's gang admits its own pods
  (trainingjob.gang_network_policy), an Endpoint/App admits the gateway and, when it has an Ingress, the
  ingress controller (serving.py), a Workspace the gateway and the operator (workspace.py). There is
  deliberately no allow-same-project rule: isolation is per workload, so one job cannot reach another's
  processes even in its own project.
- **NetworkPolicy `allow-gateway-to-serving`**: the gateway's pods (in Shipyard's system namespace) may reach
  every serving pod of the project (`shipyard.dev/kind` endpoint or app) on its serving port, the same
  peers and port each serving resource's own policy admits, so a serving pod stays reachable by the gateway
  even in the moment between its Deployment and its own policy being applied.
- **LimitRange `defaults`**: what a container that names no requests/limits gets (spec.defaults.container).
- **ResourceQuota `quota`**, only when spec.quota is set: hard caps on the sums of the project's pods'
  requests/limits and on counts of its objects. Kubernetes refuses a pod that would exceed one, and, once a
  quota caps requests.cpu or limits.memory, a pod that names none (the LimitRange's defaults fill them in
  first, so a workload without resources still runs). Locally the runtime keeps it; enforcing it there is
  the scheduler's (admission) business.

Pure and deterministic, like every compiler: the same Project gives byte-identical objects.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from shipyard.resources import Project

from .common import GATEWAY_POD_LABELS, KIND_LABEL, SYSTEM_NAMESPACE_LABEL, object_labels
from .serving import PORT_NAME

MEMBER_LABEL = "shipyard.dev/member"
DISPLAY_NAME_ANNOTATION = "shipyard.dev/display-name"
DESCRIPTION_ANNOTATION = "shipyard.dev/description"
PRIORITY_CLASS_ANNOTATION = "shipyard.dev/default-priority-class"
POD_SECURITY_LABELS = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/warn-version": "latest",
}
DEFAULT_DENY_POLICY = "default-deny-ingress"
GATEWAY_POLICY = "allow-gateway-to-serving"
LIMIT_RANGE = "defaults"
RESOURCE_QUOTA = "quota"
# The kinds whose pods the gateway serves (their `shipyard.dev/kind` label).
SERVING_KINDS = ("app", "endpoint")
RBAC_API_GROUP = "rbac.authorization.k8s.io"

_MAX_NAME = 253
_HASH_LENGTH = 10
_INVALID = re.compile(r"[^a-z0-9.-]")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_LENGTH]


def _with_digest(base: str, key: str) -> str:
    return f"{base[:_MAX_NAME - _HASH_LENGTH - 1].rstrip('-.')}-{_digest(key)}"


def member_binding_name(kind: str, name: str) -> str:
    """The RoleBinding that gives the member `kind`/`name` its role: `member-<kind>-<name>`, the name made a
    valid object name (a DNS-1123 subdomain): `:` → `-`, `@` → `-at-` (`member-user-alice-at-example.com`,
    `member-group-system-authenticated`).

    Where more had to change (upper case, other characters, empty or edge labels, more than 253 characters),
    a hash of the name is appended, so that `Alice` and `alice` keep bindings of their own. The remaining
    clashes (`oidc:alice` and `oidc-alice`, both `member-user-oidc-alice`) are resolved by compile_project,
    which gives members of one project whose names clash hashed names too."""
    readable = name.replace(":", "-").replace("@", "-at-")
    labels = [label.strip("-") for label in _INVALID.sub("-", readable.lower()).split(".")]
    safe = ".".join(label for label in labels if label)
    base = f"member-{kind.lower()}-{safe}".rstrip("-.")
    if safe != readable or len(base) > _MAX_NAME:
        return _with_digest(base, name)
    return base


def _namespaced_meta(project: Project, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"labels": dict(sorted({**object_labels(project), **(labels or {})}.items())),
            "name": name, "namespace": project.metadata.name}


def namespace(project: Project) -> dict[str, Any]:
    spec = project.spec
    annotations = {DISPLAY_NAME_ANNOTATION: spec.display_name, DESCRIPTION_ANNOTATION: spec.description,
                   PRIORITY_CLASS_ANNOTATION: spec.defaults.priority_class or ""}
    # The Pod Security labels come last: a label of the Project's own cannot loosen them.
    meta: dict[str, Any] = {"labels": dict(sorted({**object_labels(project), **POD_SECURITY_LABELS}.items())),
                            "name": project.metadata.name}
    if any(annotations.values()):
        meta["annotations"] = {k: v for k, v in sorted(annotations.items()) if v}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def member_bindings(project: Project) -> list[dict[str, Any]]:
    """One RoleBinding per member, in the order the spec lists them."""
    members = project.spec.members
    names = [member_binding_name(m.kind, m.name) for m in members]
    clashing = {n for n in names if names.count(n) > 1}
    out = []
    for member, name in zip(members, names):
        if name in clashing:
            name = _with_digest(name, f"{member.kind}/{member.name}")
        subject: dict[str, Any] = {"kind": member.kind, "name": member.name}
        if member.kind == "ServiceAccount":
            subject["namespace"] = project.metadata.name
        else:
            subject["apiGroup"] = RBAC_API_GROUP
        out.append({
            "apiVersion": f"{RBAC_API_GROUP}/v1",
            "kind": "RoleBinding",
            "metadata": _namespaced_meta(project, name, {MEMBER_LABEL: "true"}),
            "roleRef": {"apiGroup": RBAC_API_GROUP, "kind": "ClusterRole", "name": member.role},
            "subjects": [dict(sorted(subject.items()))],
        })
    return out


def default_deny_policy(project: Project) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _namespaced_meta(project, DEFAULT_DENY_POLICY),
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }


def gateway_policy(project: Project) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _namespaced_meta(project, GATEWAY_POLICY),
        "spec": {
            "ingress": [{
                "from": [{"namespaceSelector": {"matchLabels": {SYSTEM_NAMESPACE_LABEL: "true"}},
                          "podSelector": {"matchLabels": dict(sorted(GATEWAY_POD_LABELS.items()))}}],
                "ports": [{"port": PORT_NAME, "protocol": "TCP"}],
            }],
            "podSelector": {"matchExpressions": [{"key": KIND_LABEL, "operator": "In",
                                                  "values": list(SERVING_KINDS)}]},
            "policyTypes": ["Ingress"],
        },
    }


def limit_range(project: Project) -> dict[str, Any]:
    container = project.spec.defaults.container
    limit: dict[str, Any] = {}
    if container.limits:
        limit["default"] = dict(sorted(container.limits.items()))
    if container.requests:
        limit["defaultRequest"] = dict(sorted(container.requests.items()))
    limit["type"] = "Container"
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": _namespaced_meta(project, LIMIT_RANGE),
        "spec": {"limits": [limit]},
    }


def resource_quota(project: Project) -> dict[str, Any] | None:
    if project.spec.quota is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": _namespaced_meta(project, RESOURCE_QUOTA),
        "spec": {"hard": dict(sorted(project.spec.quota.items()))},
    }


def compile_project(project: Project) -> list[dict[str, Any]]:
    quota = resource_quota(project)
    return [namespace(project), *member_bindings(project), default_deny_policy(project), gateway_policy(project),
            limit_range(project), *([quota] if quota is not None else [])]
