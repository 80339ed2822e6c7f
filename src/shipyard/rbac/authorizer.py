"""Kubernetes RBAC, evaluated locally: a pure authorizer over `rbac.authorization.k8s.io/v1` objects.

The semantics are those of Kubernetes' RBAC authorizer (plugin/pkg/auth/authorizer/rbac and the rule matching
of pkg/apis/rbac/v1/evaluation_helpers.go), so a policy behaves the same here and on a cluster:

* a request is allowed when any rule reachable from a binding whose subjects include the user allows it; there
  are no deny rules. ClusterRoleBindings apply everywhere; RoleBindings only to requests in their namespace
  (a RoleBinding of a ClusterRole grants that role's rules in the binding's namespace only). Cluster-scoped
  and non-resource requests (`Attributes.path`) see ClusterRoleBindings only.
* verbs, apiGroups and resources match exactly or by `*`; `resource/subresource` must be named as such (or
  `*/subresource`): a rule for `trainingjobs` does not grant `trainingjobs/log`. resourceNames, when given,
  restrict to those names, so such a rule never grants list/create (requests without a name).
  nonResourceURLs match exactly, by `*`, or by prefix when they end in `*`.
* subjects: User by name, Group by any of the user's groups, ServiceAccount as the user
  `system:serviceaccount:NS:NAME` (NS defaults to the binding's namespace). Authenticated callers must carry
  the group `system:authenticated`: the caller (the API's authentication) adds it, not this module.
* a ClusterRole with an aggregationRule has its own rules plus those of every ClusterRole whose labels match
  any of its clusterRoleSelectors: the fixed point the aggregation controller converges to (each of its passes
  is one level; an aggregated role selected by another contributes its aggregated rules), cycles guarded.
* a binding to a missing role grants nothing.

`Policy` is immutable and indexed at construction (bindings by subject and namespace, ClusterRoles resolved
once), so one decision costs a few dict lookups plus the rules of the user's own bindings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, NamedTuple

RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC_API_VERSION = f"{RBAC_GROUP}/v1"
KINDS = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True, slots=True)
class UserInfo:
    """Who is asking. Callers add `system:authenticated` to `groups` for every authenticated user."""
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""


@dataclass(frozen=True, slots=True)
class Attributes:
    """One request: a resource request when `resource` is set, else a non-resource request for `path`."""
    user: UserInfo
    verb: str
    namespace: str = ""
    api_group: str = "shipyard.dev"
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str


@dataclass(frozen=True)
class PolicyRule:
    """One rule of a Role or ClusterRole (Kubernetes' rbac/v1 PolicyRule, snake_case)."""
    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()
    _sets: tuple[frozenset[str], ...] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_sets", (frozenset(self.verbs), frozenset(self.api_groups),
                                           frozenset(self.resources), frozenset(self.resource_names)))

    @classmethod
    def from_dict(cls, rule: Mapping[str, Any]) -> PolicyRule:
        return cls(tuple(rule.get("verbs") or ()), tuple(rule.get("apiGroups") or ()),
                   tuple(rule.get("resources") or ()), tuple(rule.get("resourceNames") or ()),
                   tuple(rule.get("nonResourceURLs") or ()))

    def to_dict(self) -> dict[str, list[str]]:
        pairs = (("verbs", self.verbs), ("apiGroups", self.api_groups), ("resources", self.resources),
                 ("resourceNames", self.resource_names), ("nonResourceURLs", self.non_resource_urls))
        return {k: list(v) for k, v in pairs if v or k == "verbs"}

    def allows(self, a: Attributes) -> bool:
        """Kubernetes' RuleAllows: verb, API group, resource and resource name match, or verb and URL match."""
        verbs, groups, resources, names = self._sets
        if "*" not in verbs and a.verb not in verbs:
            return False
        if a.resource:
            if "*" not in groups and a.api_group not in groups:
                return False
            if "*" not in resources:
                if a.subresource:
                    if f"{a.resource}/{a.subresource}" not in resources and f"*/{a.subresource}" not in resources:
                        return False
                elif a.resource not in resources:
                    return False
            return not names or a.name in names
        path = a.path
        for url in self.non_resource_urls:
            if url == "*" or url == path or (url.endswith("*") and path.startswith(url[:-1])):
                return True
        return False


def service_account_user(namespace: str, name: str) -> UserInfo:
    """The user a ServiceAccount's token authenticates as (its groups include `system:authenticated`)."""
    return UserInfo(f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}",
                    ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"))


# ---------------------------------------------------------------------------------------------- validation


class _Subject(NamedTuple):
    kind: str
    name: str
    namespace: str  # ServiceAccount: resolved (the binding's namespace when the subject has none)


class _Parsed(NamedTuple):
    kind: str
    namespace: str
    name: str
    labels: Mapping[str, str]
    rules: tuple[PolicyRule, ...] = ()
    selectors: tuple[Mapping[str, Any], ...] | None = None  # ClusterRole aggregationRule
    role_kind: str = ""
    role_name: str = ""
    subjects: tuple[_Subject, ...] = ()


def _ident(obj: Any) -> str:
    kind = obj.get("kind") if isinstance(obj, Mapping) else None
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    meta = meta if isinstance(meta, Mapping) else {}
    name, ns = meta.get("name") or "<unnamed>", meta.get("namespace")
    label = kind.lower() if isinstance(kind, str) and kind else "object"
    return f"{label}/{ns}/{name}" if kind in ("Role", "RoleBinding") and ns else f"{label}/{name}"


class _Invalid:
    def __init__(self, ident: str):
        self.ident = ident

    def __call__(self, message: str) -> ValueError:
        return ValueError(f"{self.ident}: {message}".replace("\n", " "))


def _strings(err: _Invalid, value: Any, where: str, allow_empty: bool = False) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(x, str) and (x or allow_empty) for x in value):
        raise err(f"{where} must be a list of non-empty strings")
    return tuple(value)


def _path_segment_name(err: _Invalid, value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise err(f"{where} is required")
    if value in (".", "..") or "/" in value or "%" in value:
        raise err(f"{where} {value!r} may not be '.', '..' or contain '/' or '%'")
    return value


def _rule(err: _Invalid, i: int, raw: Any, namespaced: bool) -> PolicyRule:
    where = f"rules[{i}]"
    if not isinstance(raw, Mapping):
        raise err(f"{where} must be an object")
    verbs = _strings(err, raw.get("verbs"), f"{where}.verbs")
    groups = _strings(err, raw.get("apiGroups"), f"{where}.apiGroups", allow_empty=True)  # "" is the core group
    resources = _strings(err, raw.get("resources"), f"{where}.resources")
    names = _strings(err, raw.get("resourceNames"), f"{where}.resourceNames")
    urls = _strings(err, raw.get("nonResourceURLs"), f"{where}.nonResourceURLs")
    if not verbs:
        raise err(f"{where}.verbs is required: at least one verb")
    if urls:
        if namespaced:
            raise err(f"{where}.nonResourceURLs: namespaced rules cannot apply to non-resource URLs")
        if groups or resources:
            raise err(f"{where}: rules cannot apply to both regular resources and non-resource URLs")
    elif not groups:
        raise err(f"{where}.apiGroups is required: resource rules must supply at least one api group")
    elif not resources:
        raise err(f"{where}.resources is required: resource rules must supply at least one resource")
    return PolicyRule(verbs, groups, resources, names, urls)


def _selector(err: _Invalid, i: int, raw: Any) -> Mapping[str, Any]:
    where = f"aggregationRule.clusterRoleSelectors[{i}]"
    if not isinstance(raw, Mapping):
        raise err(f"{where} must be an object")
    labels = raw.get("matchLabels") or {}
    if not isinstance(labels, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in labels.items()):
        raise err(f"{where}.matchLabels must map strings to strings")
    exprs = raw.get("matchExpressions") or []
    if not isinstance(exprs, list):
        raise err(f"{where}.matchExpressions must be a list")
    parsed = []
    for j, e in enumerate(exprs):
        at = f"{where}.matchExpressions[{j}]"
        if not isinstance(e, Mapping) or not isinstance(e.get("key"), str) or not e.get("key"):
            raise err(f"{at}.key is required")
        op, values = e.get("operator"), _strings(err, e.get("values"), f"{at}.values", allow_empty=True)
        if op not in _OPERATORS:
            raise err(f"{at}.operator must be one of {', '.join(_OPERATORS)}")
        if op in ("In", "NotIn") and not values:
            raise err(f"{at}.values must be non-empty for operator {op}")
        if op in ("Exists", "DoesNotExist") and values:
            raise err(f"{at}.values must be empty for operator {op}")
        parsed.append((e["key"], op, frozenset(values)))
    return {"matchLabels": dict(labels), "matchExpressions": tuple(parsed)}


def _subject(err: _Invalid, j: int, raw: Any, binding_ns: str) -> _Subject:
    where = f"subjects[{j}]"
    if not isinstance(raw, Mapping):
        raise err(f"{where} must be an object")
    kind, name, group = raw.get("kind"), raw.get("name"), raw.get("apiGroup") or ""
    if kind not in ("User", "Group", "ServiceAccount"):
        raise err(f"{where}.kind must be User, Group or ServiceAccount")
    if not isinstance(name, str) or not name:
        raise err(f"{where}.name is required")
    if kind != "ServiceAccount":
        if group not in ("", RBAC_GROUP):
            raise err(f"{where}.apiGroup must be {RBAC_GROUP} for a {kind}")
        return _Subject(kind, name, "")
    if group:
        raise err(f"{where}.apiGroup must be empty for a ServiceAccount")
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        raise err(f"{where}.name {name!r} is not a valid ServiceAccount name (a DNS-1123 subdomain)")
    ns = raw.get("namespace") or binding_ns
    if not isinstance(ns, str) or not ns:
        raise err(f"{where}.namespace is required for a ServiceAccount in a ClusterRoleBinding")
    return _Subject(kind, name, ns)


def _parse(obj: Any) -> _Parsed:
    err = _Invalid(_ident(obj))
    if not isinstance(obj, Mapping):
        raise err("must be an object")
    kind = obj.get("kind")
    if kind not in KINDS:
        raise err(f"kind must be one of {', '.join(KINDS)}")
    if obj.get("apiVersion") != RBAC_API_VERSION:
        raise err(f"apiVersion must be {RBAC_API_VERSION}")
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        raise err("metadata is required")
    name = _path_segment_name(err, meta.get("name"), "metadata.name")
    namespaced, ns = kind in ("Role", "RoleBinding"), meta.get("namespace") or ""
    if namespaced and (not isinstance(ns, str) or len(ns) > 63 or not _DNS_LABEL.match(ns)):
        raise err("metadata.namespace is required: a DNS-1123 label")
    if not namespaced and ns:
        raise err(f"metadata.namespace must not be set: a {kind} is cluster-scoped")
    labels = meta.get("labels") or {}
    if not isinstance(labels, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in labels.items()):
        raise err("metadata.labels must map strings to strings")
    if kind in ("Role", "ClusterRole"):
        raw_rules = obj.get("rules") or []
        if not isinstance(raw_rules, list):
            raise err("rules must be a list")
        rules = tuple(_rule(err, i, r, namespaced) for i, r in enumerate(raw_rules))
        agg = obj.get("aggregationRule")
        if agg is None:
            return _Parsed(kind, ns, name, dict(labels), rules)
        if kind == "Role":
            raise err("aggregationRule is only valid on a ClusterRole")
        raw_sel = agg.get("clusterRoleSelectors") if isinstance(agg, Mapping) else None
        if not isinstance(raw_sel, list) or not raw_sel:
            raise err("aggregationRule.clusterRoleSelectors must list at least one selector")
        return _Parsed(kind, ns, name, dict(labels), rules, tuple(_selector(err, i, s) for i, s in enumerate(raw_sel)))
    ref = obj.get("roleRef")
    if not isinstance(ref, Mapping):
        raise err("roleRef is required")
    if ref.get("apiGroup") != RBAC_GROUP:
        raise err(f"roleRef.apiGroup must be {RBAC_GROUP}")
    allowed = ("Role", "ClusterRole") if namespaced else ("ClusterRole",)
    if ref.get("kind") not in allowed:
        raise err(f"roleRef.kind must be {' or '.join(allowed)}")
    role_name = _path_segment_name(err, ref.get("name"), "roleRef.name")
    raw_subjects = obj.get("subjects") or []
    if not isinstance(raw_subjects, list):
        raise err("subjects must be a list")
    subjects = tuple(_subject(err, j, s, ns) for j, s in enumerate(raw_subjects))
    return _Parsed(kind, ns, name, dict(labels), role_kind=ref["kind"], role_name=role_name, subjects=subjects)


def validate_object(obj: Any) -> None:
    """Raise ValueError (one line: the object, the field, what is wrong) unless `obj` is a valid RBAC object."""
    _parse(obj)


# ------------------------------------------------------------------------------------------------- policy


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector["matchLabels"].items()):
        return False
    for key, op, values in selector["matchExpressions"]:
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def _aggregate(cluster_roles: Mapping[str, _Parsed]) -> dict[str, tuple[PolicyRule, ...]]:
    children = {name: [other for other, o in cluster_roles.items()
                       if other != name and any(_selects(s, o.labels) for s in cr.selectors)]
                for name, cr in cluster_roles.items() if cr.selectors is not None}
    resolved = {}
    for name, cr in cluster_roles.items():
        rules, seen, stack = list(cr.rules), {name}, list(children.get(name, ()))
        while stack:  # every ClusterRole reachable through selectors, each once (cycles end here)
            child = stack.pop(0)
            if child not in seen:
                seen.add(child)
                rules.extend(cluster_roles[child].rules)
                stack.extend(children.get(child, ()))
        resolved[name] = tuple(dict.fromkeys(rules))
    return resolved


class _Grant(NamedTuple):
    order: tuple[int, int, int]  # ClusterRoleBindings first, then input order, then subject order
    reason: str
    rules: tuple[PolicyRule, ...]


def _describe(subject: _Subject) -> str:
    if subject.kind == "ServiceAccount":
        return f'ServiceAccount "{subject.name}/{subject.namespace}"'  # as Kubernetes: name/namespace
    return f'{subject.kind} "{subject.name}"'


class Policy:
    """An immutable, indexed set of Roles, ClusterRoles and bindings. Rebuild it when any of them changes."""

    __slots__ = ("_cluster_roles", "_roles", "_cluster_users", "_cluster_groups", "_ns_users", "_ns_groups",
                 "_count")

    def __init__(self, parsed: Iterable[_Parsed] = ()):
        objects: dict[tuple[str, str, str], _Parsed] = {}
        for p in parsed:
            key = (p.kind, p.namespace, p.name)
            if key in objects:
                where = f"{p.namespace}/{p.name}" if p.namespace else p.name
                raise ValueError(f"{p.kind.lower()}/{where}: defined more than once")
            objects[key] = p
        self._count = len(objects)
        self._cluster_roles = _aggregate({p.name: p for p in objects.values() if p.kind == "ClusterRole"})
        self._roles = {(p.namespace, p.name): p.rules for p in objects.values() if p.kind == "Role"}
        self._cluster_users: dict[str, list[_Grant]] = {}
        self._cluster_groups: dict[str, list[_Grant]] = {}
        self._ns_users: dict[str, dict[str, list[_Grant]]] = {}
        self._ns_groups: dict[str, dict[str, list[_Grant]]] = {}
        for seq, p in enumerate(objects.values()):
            if p.kind not in ("RoleBinding", "ClusterRoleBinding"):
                continue
            rules = (self._roles.get((p.namespace, p.role_name), ()) if p.role_kind == "Role"
                     else self._cluster_roles.get(p.role_name, ()))
            if not rules:
                continue  # a missing (or empty) role grants nothing
            users = self._ns_users.setdefault(p.namespace, {}) if p.namespace else self._cluster_users
            groups = self._ns_groups.setdefault(p.namespace, {}) if p.namespace else self._cluster_groups
            for j, s in enumerate(p.subjects):
                reason = f'RBAC: allowed by {p.kind} "{p.name}" of {p.role_kind} "{p.role_name}" to {_describe(s)}'
                if p.namespace:
                    reason += f' in namespace "{p.namespace}"'
                grant = _Grant((1 if p.namespace else 0, seq, j), reason, rules)
                if s.kind == "Group":
                    groups.setdefault(s.name, []).append(grant)
                else:
                    user = s.name if s.kind == "User" else f"{SERVICE_ACCOUNT_PREFIX}{s.namespace}:{s.name}"
                    users.setdefault(user, []).append(grant)

    @classmethod
    def from_objects(cls, objs: Iterable[Mapping[str, Any]]) -> Policy:
        """A policy from rbac.authorization.k8s.io/v1 object dicts; ValueError (one line) for an invalid one."""
        return cls(_parse(o) for o in objs)

    def __len__(self) -> int:
        return self._count

    def cluster_role_rules(self, name: str) -> tuple[PolicyRule, ...] | None:
        """A ClusterRole's effective rules (aggregation applied), None if there is no such ClusterRole."""
        return self._cluster_roles.get(name)

    def _grants(self, user: UserInfo, namespace: str = "") -> list[_Grant]:
        found: list[_Grant] = []
        sources = [(self._cluster_users, self._cluster_groups)]
        if namespace and (namespace in self._ns_users or namespace in self._ns_groups):
            sources.append((self._ns_users.get(namespace, {}), self._ns_groups.get(namespace, {})))
        for users, groups in sources:
            found.extend(users.get(user.name, ()))
            for group in user.groups:
                found.extend(groups.get(group, ()))
        if len(found) > 1:
            found.sort(key=lambda g: g.order)
        return found


def authorize(policy: Policy, attrs: Attributes) -> Decision:
    """Allowed if any rule of any binding that applies to the user allows the request (Kubernetes RBAC)."""
    namespace = attrs.namespace if attrs.resource else ""  # non-resource URLs: ClusterRoleBindings only
    for grant in policy._grants(attrs.user, namespace):
        for rule in grant.rules:
            if rule.allows(attrs):
                return Decision(True, grant.reason)
    return Decision(False, denial_message(policy, attrs))


def rules_for(policy: Policy, user: UserInfo, namespace: str = "") -> list[PolicyRule]:
    """Every rule that applies to `user` in `namespace` (cluster-wide only when empty): `can-i --list`."""
    return list(dict.fromkeys(rule for grant in policy._grants(user, namespace) for rule in grant.rules))


@cache
def _builtin_policy() -> Policy:
    from .builtin import builtin_cluster_roles
    return Policy.from_objects(builtin_cluster_roles())


def needed_role(policy: Policy, attrs: Attributes) -> str | None:
    """The least built-in role (view < edit < admin < cluster-admin) whose rules allow the request, if any.
    The policy's own definition of a role wins (it may aggregate more), else Shipyard's built-in one."""
    from .builtin import BUILTIN_ROLE_ORDER
    for name in BUILTIN_ROLE_ORDER:
        rules = policy.cluster_role_rules(name)
        if rules is None:
            rules = _builtin_policy().cluster_role_rules(name) or ()
        if any(rule.allows(attrs) for rule in rules):
            return name
    return None


def denial_message(policy: Policy, attrs: Attributes) -> str:
    """What a 403 says: `user alice cannot delete trainingjobs in project vision: needs role edit`."""
    a = attrs
    if a.resource:
        what = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
        if a.api_group and a.api_group != "shipyard.dev":
            what += f" in API group {a.api_group}"
        if a.name:
            what += f" {a.name!r}"
        message = f"user {a.user.name} cannot {a.verb} {what} " + (
            f"in project {a.namespace}" if a.namespace else "at cluster scope")
    else:
        message = f"user {a.user.name} cannot {a.verb} path {a.path}"
    role = needed_role(policy, attrs)
    return f"{message}: needs role {role}" if role else message
