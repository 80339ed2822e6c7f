"""The pure RBAC authorizer (shipyard.rbac) agrees with Kubernetes' RBAC semantics, and the built-in roles grant
what their table says."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shipyard.rbac import (
    BUILTIN_ROLE_ORDER,
    Attributes,
    Policy,
    PolicyRule,
    UserInfo,
    authorize,
    builtin_cluster_roles,
    builtin_objects,
    rules_for,
    service_account_user,
    validate_object,
)

V1 = "rbac.authorization.k8s.io/v1"
G = "rbac.authorization.k8s.io"


def role(name: str, ns: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": V1, "kind": "Role", "metadata": {"name": name, "namespace": ns}, "rules": list(rules)}


def cluster_role(name: str, *rules: dict[str, Any], labels: dict[str, str] | None = None,
                 selectors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": V1, "kind": "ClusterRole",
                           "metadata": {"name": name, "labels": labels or {}}, "rules": list(rules)}
    if selectors is not None:
        obj["aggregationRule"] = {"clusterRoleSelectors": selectors}
    return obj


def subject(kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    s = {"kind": kind, "name": name, "apiGroup": "" if kind == "ServiceAccount" else G}
    if namespace is not None:
        s["namespace"] = namespace
    return s


def binding(name: str, ref_kind: str, ref_name: str, *subjects: dict[str, Any], ns: str = "") -> dict[str, Any]:
    meta = {"name": name, **({"namespace": ns} if ns else {})}
    return {"apiVersion": V1, "kind": "RoleBinding" if ns else "ClusterRoleBinding", "metadata": meta,
            "roleRef": {"apiGroup": G, "kind": ref_kind, "name": ref_name}, "subjects": list(subjects)}


def rule(verbs: list[str], resources: list[str] | None = None, groups: list[str] | None = None,
         names: list[str] | None = None, urls: list[str] | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"verbs": verbs}
    if urls is not None:
        r["nonResourceURLs"] = urls
    else:
        r["apiGroups"] = groups if groups is not None else ["shipyard.dev"]
        r["resources"] = resources or []
    if names is not None:
        r["resourceNames"] = names
    return r


ALICE = UserInfo("alice", ("system:authenticated",))
BOB = UserInfo("bob", ("ml-team", "system:authenticated"))
CAROL = UserInfo("carol", ("system:authenticated",))
BOT = service_account_user("vision", "bot")
CI = service_account_user("ci", "runner")

POLICY = Policy.from_objects([
    cluster_role("any-verb-jobs", rule(["*"], ["trainingjobs"])),
    cluster_role("get-any-group", rule(["get"], ["widgets"], groups=["*"])),
    cluster_role("get-everything", rule(["get"], ["*"])),
    cluster_role("job-logs", rule(["get"], ["trainingjobs/log"])),
    cluster_role("all-logs", rule(["get"], ["*/log"])),
    cluster_role("named", rule(["get", "list", "create", "delete"], ["endpoints"], names=["chat"])),
    cluster_role("urls", rule(["get"], urls=["/version", "/healthz/*"])),
    cluster_role("jobs-reader", rule(["get", "list"], ["trainingjobs"])),
    role("sweeper", "vision", rule(["create"], ["sweeps"])),
    # alice: verbs wildcard on trainingjobs, in vision only (RoleBinding of a ClusterRole)
    binding("alice-jobs", "ClusterRole", "any-verb-jobs", subject("User", "alice"), ns="vision"),
    binding("alice-groups", "ClusterRole", "get-any-group", subject("User", "alice"), ns="vision"),
    binding("alice-sweeper", "Role", "sweeper", subject("User", "alice"), ns="vision"),
    binding("alice-named", "ClusterRole", "named", subject("User", "alice"), ns="vision"),
    binding("alice-urls-ns", "ClusterRole", "urls", subject("User", "alice"), ns="vision"),  # never reaches URLs
    # bob: through his group, cluster-wide
    binding("team-everything", "ClusterRole", "get-everything", subject("Group", "ml-team")),
    binding("team-urls", "ClusterRole", "urls", subject("Group", "ml-team")),
    # carol: logs
    binding("carol-job-logs", "ClusterRole", "job-logs", subject("User", "carol"), ns="vision"),
    binding("carol-all-logs", "ClusterRole", "all-logs", subject("User", "carol"), ns="audio"),
    # service accounts: without subject namespace (the binding's), with one (another namespace's SA)
    binding("bot-reads", "ClusterRole", "jobs-reader", subject("ServiceAccount", "bot"), ns="vision"),
    binding("ci-reads", "ClusterRole", "jobs-reader", subject("ServiceAccount", "runner", "ci"), ns="vision"),
    binding("ci-crb", "ClusterRole", "urls", subject("ServiceAccount", "runner", "ci")),
    # bindings to missing roles grant nothing
    binding("dangling", "ClusterRole", "no-such-role", subject("User", "carol")),
    binding("dangling-role", "Role", "any-verb-jobs", subject("User", "carol"), ns="vision"),  # no such Role
])


def req(user: UserInfo, verb: str, resource: str = "", ns: str = "vision", sub: str = "", name: str = "",
        group: str = "shipyard.dev", path: str = "") -> Attributes:
    return Attributes(user=user, verb=verb, namespace=ns, api_group=group, resource=resource, subresource=sub,
                      name=name, path=path)


CASES = [
    # wildcards: verbs, groups, resources
    ("verb * allows any verb", req(ALICE, "deletecollection", "trainingjobs"), True),
    ("verb * not other resources", req(ALICE, "get", "sweeps"), False),
    ("apiGroups * any group", req(ALICE, "get", "widgets", group="example.com"), True),
    ("apiGroups * not other verbs", req(ALICE, "list", "widgets", group="example.com"), False),
    ("resources * any resource", req(BOB, "get", "secrets", ns="anywhere"), True),
    ("resources * covers subresources", req(BOB, "get", "trainingjobs", sub="log"), True),
    ("resources * but only shipyard.dev", req(BOB, "get", "pods", group=""), False),
    ("resources * not other verbs", req(BOB, "list", "secrets"), False),
    # subresources
    ("trainingjobs does not grant trainingjobs/log", req(ALICE, "get", "trainingjobs", sub="log"), False),
    ("trainingjobs/log grants the log", req(CAROL, "get", "trainingjobs", sub="log"), True),
    ("trainingjobs/log does not grant trainingjobs", req(CAROL, "get", "trainingjobs"), False),
    ("trainingjobs/log does not grant sweeps/log", req(CAROL, "get", "sweeps", sub="log"), False),
    ("*/log grants any log", req(CAROL, "get", "sweeps", ns="audio", sub="log"), True),
    ("*/log not the resource", req(CAROL, "get", "sweeps", ns="audio"), False),
    ("*/log not other subresources", req(CAROL, "get", "sweeps", ns="audio", sub="status"), False),
    # resourceNames
    ("named rule: get by name", req(ALICE, "get", "endpoints", name="chat"), True),
    ("named rule: other name", req(ALICE, "get", "endpoints", name="other"), False),
    ("named rule: delete by name", req(ALICE, "delete", "endpoints", name="chat"), True),
    ("named rule: list has no name", req(ALICE, "list", "endpoints"), False),
    ("named rule: create has no name", req(ALICE, "create", "endpoints"), False),
    # RoleBinding scope, Roles
    ("RoleBinding of ClusterRole: its namespace", req(ALICE, "get", "trainingjobs", ns="vision"), True),
    ("RoleBinding of ClusterRole: not elsewhere", req(ALICE, "get", "trainingjobs", ns="audio"), False),
    ("RoleBinding: not cluster scope", req(ALICE, "get", "trainingjobs", ns=""), False),
    ("Role in its namespace", req(ALICE, "create", "sweeps"), True),
    ("ClusterRoleBinding: every namespace", req(BOB, "get", "models", ns="audio"), True),
    ("ClusterRoleBinding: cluster scope", req(BOB, "get", "projects", ns=""), True),
    # subjects
    ("Group subject", req(UserInfo("dan", ("ml-team",)), "get", "models"), True),
    ("not in the group", req(UserInfo("dan", ("other",)), "get", "models"), False),
    ("User subject is not a group", req(UserInfo("x", ("alice",)), "create", "sweeps"), False),
    ("SA without namespace: the binding's", req(BOT, "list", "trainingjobs"), True),
    ("SA of another namespace not matched", req(service_account_user("audio", "bot"), "list", "trainingjobs"),
     False),
    ("SA with subject namespace", req(CI, "get", "trainingjobs"), True),
    ("SA binding grants only its namespace", req(CI, "get", "trainingjobs", ns="audio"), False),
    ("user named like the SA matches", req(UserInfo("system:serviceaccount:vision:bot"), "get", "trainingjobs"),
     True),
    # missing roles
    ("binding to missing ClusterRole", req(CAROL, "get", "anything", ns=""), False),
    ("RoleBinding to missing Role", req(CAROL, "delete", "trainingjobs"), False),
    # non-resource URLs: cluster bindings only, trailing * is a prefix
    ("URL exact", req(BOB, "get", path="/version", ns=""), True),
    ("URL prefix", req(BOB, "get", path="/healthz/ready", ns=""), True),
    ("URL prefix without the slash", req(BOB, "get", path="/healthz", ns=""), False),
    ("URL not listed", req(BOB, "get", path="/metrics", ns=""), False),
    ("URL other verb", req(BOB, "post", path="/version", ns=""), False),
    ("URL via RoleBinding never", req(ALICE, "get", path="/version", ns=""), False),
    ("URL via RoleBinding never, namespace set", req(ALICE, "get", path="/version", ns="vision"), False),
    ("URL via SA cluster binding", req(CI, "get", path="/healthz/live", ns=""), True),
]


@pytest.mark.parametrize("attrs, allowed", [(a, ok) for _, a, ok in CASES], ids=[c[0] for c in CASES])
def test_kubernetes_semantics(attrs: Attributes, allowed: bool) -> None:
    decision = authorize(POLICY, attrs)
    assert decision.allowed is allowed, decision.reason


def test_allowed_reasons_name_the_binding() -> None:
    assert authorize(POLICY, req(ALICE, "delete", "trainingjobs")).reason == (
        'RBAC: allowed by RoleBinding "alice-jobs" of ClusterRole "any-verb-jobs" to User "alice" '
        'in namespace "vision"')
    assert authorize(POLICY, req(BOB, "get", "models")).reason == (
        'RBAC: allowed by ClusterRoleBinding "team-everything" of ClusterRole "get-everything" to Group "ml-team"')
    assert authorize(POLICY, req(ALICE, "create", "sweeps")).reason.startswith(
        'RBAC: allowed by RoleBinding "alice-sweeper" of Role "sweeper"')
    assert 'ServiceAccount "bot/vision"' in authorize(POLICY, req(BOT, "list", "trainingjobs")).reason


def test_rules_for_lists_what_applies() -> None:
    in_vision = rules_for(POLICY, ALICE, "vision")
    assert PolicyRule.from_dict(rule(["create"], ["sweeps"])) in in_vision
    assert PolicyRule.from_dict(rule(["get"], urls=["/version", "/healthz/*"])) in in_vision  # listed, inert
    assert rules_for(POLICY, ALICE, "audio") == []
    assert rules_for(POLICY, ALICE, "") == []
    assert [r.to_dict() for r in rules_for(POLICY, BOB, "")] == [
        {"verbs": ["get"], "apiGroups": ["shipyard.dev"], "resources": ["*"]},
        {"verbs": ["get"], "nonResourceURLs": ["/version", "/healthz/*"]},
    ]


def test_service_account_user() -> None:
    assert BOT == UserInfo("system:serviceaccount:vision:bot",
                           ("system:serviceaccounts", "system:serviceaccounts:vision", "system:authenticated"))


# ----------------------------------------------------------------------------------------------- aggregation

EXTRA = cluster_role("gpu-quotas", rule(["get", "update"], ["gpuquotas"]),
                     labels={"rbac.authorization.k8s.io/aggregate-to-edit": "true"})


def test_aggregation_extends_edit_and_admin_not_view() -> None:
    policy = Policy.from_objects([*builtin_cluster_roles(), EXTRA])
    quota = PolicyRule.from_dict(rule(["get", "update"], ["gpuquotas"]))
    assert quota in policy.cluster_role_rules("edit")
    assert quota in policy.cluster_role_rules("admin")
    assert quota not in policy.cluster_role_rules("view")
    assert set(policy.cluster_role_rules("view")) < set(policy.cluster_role_rules("edit")) \
        < set(policy.cluster_role_rules("admin"))
    for r in ("view", "edit", "admin"):
        who = UserInfo(f"{r}-user")
        p = Policy.from_objects([*builtin_cluster_roles(), EXTRA,
                                 binding("b", "ClusterRole", r, subject("User", who.name), ns="vision")])
        assert authorize(p, req(who, "update", "gpuquotas")).allowed is (r != "view")


def test_aggregation_selectors_and_cycles() -> None:
    objs = [
        cluster_role("a", rule(["get"], ["a"]), labels={"tier": "x"},
                     selectors=[{"matchExpressions": [{"key": "tier", "operator": "In", "values": ["y"]}]}]),
        cluster_role("b", rule(["get"], ["b"]), labels={"tier": "y"},
                     selectors=[{"matchLabels": {"tier": "x"}}]),  # a <-> b: a cycle
        cluster_role("c", rule(["get"], ["c"]), labels={"team": "c"}),
        cluster_role("d", rule(["get"], ["d"])),
        cluster_role("not-c", selectors=[{"matchExpressions": [
            {"key": "team", "operator": "NotIn", "values": ["c"]}, {"key": "tier", "operator": "DoesNotExist"}]}]),
        cluster_role("has-team", selectors=[{"matchExpressions": [{"key": "team", "operator": "Exists"}]}]),
    ]
    p = Policy.from_objects(objs)

    def resources(name: str) -> set[str]:
        return {res for r in p.cluster_role_rules(name) or () for res in r.resources}

    assert resources("a") == {"a", "b"} and resources("b") == {"a", "b"}
    assert resources("not-c") == {"d"} | resources("has-team")  # d, and has-team (no labels: NotIn holds)
    assert resources("has-team") == {"c"}
    assert p.cluster_role_rules("missing") is None


# ----------------------------------------------------------------------------------------- built-in roles

BUILTIN = Policy.from_objects([
    *builtin_objects(),
    *[binding(f"{r}-b", "ClusterRole", r, subject("User", r), ns="vision") for r in ("view", "edit", "admin")],
    binding("root", "ClusterRole", "cluster-admin", subject("User", "cluster-admin")),
])

RBAC = "rbac.authorization.k8s.io"

MATRIX = [  # (verb, resource[/subresource]) -> allowed for view, edit, admin, cluster-admin
    ("get", "trainingjobs", "YYYY"), ("list", "sweeps", "YYYY"), ("watch", "endpoints", "YYYY"),
    ("get", "apps", "YYYY"), ("list", "workspaces", "YYYY"), ("list", "events", "YYYY"),
    ("get", "models", "YYYY"), ("get", "projects", "YYYY"), ("get", "trainingjobs/status", "YYYY"),
    ("get", "trainingjobs/log", "YYYY"), ("get", "sweeps/log", "YYYY"), ("get", "endpoints/log", "YYYY"),
    ("get", "apps/log", "YYYY"),
    ("get", "workspaces/log", "-YYY"), ("get", "workspaces/open", "-YYY"), ("create", "workspaces/open", "-YYY"),
    ("create", "workspaces/portforward", "-YYY"), ("get", "endpoints/portforward", "-YYY"),
    ("create", "apps/portforward", "-YYY"),
    ("get", "secrets", "-YYY"), ("list", "secrets", "-YYY"), ("create", "secrets", "-YYY"),
    ("delete", "secrets", "-YYY"),
    ("create", "trainingjobs", "-YYY"), ("delete", "trainingjobs", "-YYY"), ("patch", "sweeps", "-YYY"),
    ("update", "endpoints", "-YYY"), ("deletecollection", "apps", "-YYY"), ("create", "workspaces", "-YYY"),
    ("create", "apikeys", "-YYY"), ("list", "apikeys", "-YYY"), ("delete", "apikeys", "-YYY"),
    ("list", "apikeys", "-YYY"), ("update", "apikeys", "---Y"),
    ("update", "trainingjobs/status", "---Y"),
    ("create", "rolebindings", "--YY"), ("list", "roles", "--YY"), ("delete", "roles", "--YY"),
    ("create", "serviceaccounts", "--YY"), ("get", "serviceaccounts", "--YY"), ("create", "tokens", "--YY"),
    ("create", "serviceaccounts/token", "--YY"), ("list", "auditevents", "--YY"), ("delete", "auditevents", "---Y"),
    ("create", "rolebindings", "--YY"),
    ("update", "projects", "--YY"), ("patch", "projects", "--YY"),
    ("delete", "projects", "---Y"), ("create", "projects", "---Y"), ("escalate", "roles", "---Y"),
]


@pytest.mark.parametrize("verb, target, expected", MATRIX, ids=[f"{v} {t}" for v, t, _ in MATRIX])
def test_builtin_role_matrix(verb: str, target: str, expected: str) -> None:
    resource, _, sub = target.partition("/")
    group = RBAC if resource in ("roles", "rolebindings") else "shipyard.dev"  # Kubernetes' own kinds
    for role_name, flag in zip(BUILTIN_ROLE_ORDER, expected):
        attrs = req(UserInfo(role_name), verb, resource, sub=sub, group=group)
        assert authorize(BUILTIN, attrs).allowed is (flag == "Y"), f"{role_name}: {verb} {target}"


def test_builtin_roles_are_project_scoped_and_cluster_admin_is_not() -> None:
    assert not authorize(BUILTIN, req(UserInfo("admin"), "get", "trainingjobs", ns="audio")).allowed
    assert authorize(BUILTIN, req(UserInfo("cluster-admin"), "delete", "anything", ns="", group="x")).allowed
    assert authorize(BUILTIN, req(UserInfo("cluster-admin"), "post", path="/anything", ns="")).allowed
    masters = UserInfo("admin", ("system:masters", "system:authenticated"))
    assert authorize(BUILTIN, req(masters, "create", "clusterrolebindings", ns="", group=G)).allowed
    anyone = UserInfo("x", ("system:authenticated",))
    assert authorize(BUILTIN, req(anyone, "get", path="/version", ns="")).allowed
    assert not authorize(BUILTIN, req(anyone, "get", path="/metrics", ns="")).allowed


def test_denials_say_what_role_is_needed() -> None:
    deny = authorize(BUILTIN, req(UserInfo("view"), "delete", "trainingjobs"))
    assert not deny.allowed and deny.reason == "user view cannot delete trainingjobs in project vision: needs role edit"
    assert authorize(BUILTIN, req(UserInfo("edit"), "create", "rolebindings", group=RBAC)).reason.endswith(
        ": needs role admin")
    assert authorize(BUILTIN, req(UserInfo("nobody"), "get", "models")).reason.endswith(": needs role view")
    assert authorize(BUILTIN, req(UserInfo("view"), "get", "workspaces", sub="log")).reason == (
        "user view cannot get workspaces/log in project vision: needs role edit")
    assert authorize(BUILTIN, req(UserInfo("admin"), "delete", "projects", name="vision")).reason == (
        "user admin cannot delete projects 'vision' in project vision: needs role cluster-admin")
    assert authorize(BUILTIN, req(UserInfo("a"), "get", path="/metrics", ns="")).reason == (
        "user a cannot get path /metrics: needs role cluster-admin")
    # the hint falls back to the built-in definitions when the policy has none
    assert authorize(Policy.from_objects([]), req(ALICE, "get", "secrets")).reason.endswith(": needs role edit")


def test_builtin_objects_are_valid_kubernetes_objects() -> None:
    for obj in builtin_objects():
        validate_object(obj)
    names = [o["metadata"]["name"] for o in builtin_cluster_roles(include_kubernetes_roles=False)]
    assert names == ["shipyard-view", "shipyard-edit", "shipyard-admin"]
    labels = {o["metadata"]["name"]: o["metadata"]["labels"] for o in builtin_cluster_roles()}
    assert labels["edit"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert labels["view"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"


# ---------------------------------------------------------------------------------------------- validation

GOOD_RB = binding("x", "ClusterRole", "edit", subject("User", "alice"), ns="ns")


def _with(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    import copy
    obj = copy.deepcopy(obj)
    *parents, last = path.split(".")
    target = obj
    for p in parents:
        target = target[int(p)] if isinstance(target, list) else target[p]
    if value is ...:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return obj


INVALID = [
    (_with(GOOD_RB, "roleRef.kind", "Group"), "rolebinding/ns/x: roleRef.kind must be Role or ClusterRole"),
    (_with(binding("c", "ClusterRole", "edit"), "roleRef.kind", "Role"),
     "clusterrolebinding/c: roleRef.kind must be ClusterRole"),
    (_with(GOOD_RB, "roleRef.apiGroup", "rbac"), "rolebinding/ns/x: roleRef.apiGroup must be"),
    (_with(GOOD_RB, "roleRef.name", ""), "rolebinding/ns/x: roleRef.name is required"),
    (_with(GOOD_RB, "roleRef", ...), "rolebinding/ns/x: roleRef is required"),
    (_with(GOOD_RB, "metadata.namespace", ...), "rolebinding/x: metadata.namespace is required"),
    (_with(GOOD_RB, "metadata.namespace", "Bad_NS"), "rolebinding/Bad_NS/x: metadata.namespace"),
    (_with(GOOD_RB, "metadata.name", ...), "rolebinding/ns/<unnamed>: metadata.name is required"),
    (_with(GOOD_RB, "metadata.name", "a/b"), "rolebinding/ns/a/b: metadata.name 'a/b' may not"),
    (_with(GOOD_RB, "apiVersion", "v1"), "rolebinding/ns/x: apiVersion must be rbac.authorization.k8s.io/v1"),
    (_with(GOOD_RB, "kind", "Binding"), "binding/x: kind must be one of Role, ClusterRole"),
    (_with(GOOD_RB, "subjects.0.kind", "Team"), "rolebinding/ns/x: subjects[0].kind must be User, Group or"),
    (_with(GOOD_RB, "subjects.0.name", ""), "rolebinding/ns/x: subjects[0].name is required"),
    (_with(GOOD_RB, "subjects.0", subject("ServiceAccount", "Bad Name")), "subjects[0].name 'Bad Name' is not"),
    (_with(GOOD_RB, "subjects.0", {**subject("ServiceAccount", "sa"), "apiGroup": G}),
     "rolebinding/ns/x: subjects[0].apiGroup must be empty for a ServiceAccount"),
    (binding("c", "ClusterRole", "edit", subject("ServiceAccount", "sa")),
     "clusterrolebinding/c: subjects[0].namespace is required for a ServiceAccount"),
    (role("r", "ns", {"apiGroups": [""], "resources": ["pods"]}), "role/ns/r: rules[0].verbs is required"),
    (role("r", "ns", {"verbs": ["get"], "resources": ["pods"]}), "role/ns/r: rules[0].apiGroups is required"),
    (role("r", "ns", {"verbs": ["get"], "apiGroups": [""]}), "role/ns/r: rules[0].resources is required"),
    (role("r", "ns", rule(["get"], urls=["/x"])), "role/ns/r: rules[0].nonResourceURLs: namespaced rules"),
    (cluster_role("c", {**rule(["get"], urls=["/x"]), "resources": ["pods"]}),
     "clusterrole/c: rules[0]: rules cannot apply to both"),
    (cluster_role("c", rule(["get"], ["a"]), {"verbs": "get", "apiGroups": [""], "resources": ["a"]}),
     "clusterrole/c: rules[1].verbs must be a list"),
    (cluster_role("c", selectors=[]), "clusterrole/c: aggregationRule.clusterRoleSelectors must list"),
    (cluster_role("c", selectors=[{"matchExpressions": [{"key": "k", "operator": "Is"}]}]),
     "clusterrole/c: aggregationRule.clusterRoleSelectors[0].matchExpressions[0].operator must be one of"),
    (cluster_role("c", selectors=[{"matchExpressions": [{"key": "k", "operator": "In"}]}]),
     "matchExpressions[0].values must be non-empty for operator In"),
    (cluster_role("c", selectors=[{"matchExpressions": [{"key": "k", "operator": "Exists", "values": ["v"]}]}]),
     "matchExpressions[0].values must be empty for operator Exists"),
    (_with(cluster_role("c"), "metadata.namespace", "ns"), "clusterrole/c: metadata.namespace must not be set"),
    ({**role("r", "ns"), "aggregationRule": {"clusterRoleSelectors": [{}]}},
     "role/ns/r: aggregationRule is only valid on a ClusterRole"),
    (_with(cluster_role("c"), "metadata.labels", {"a": 1}), "clusterrole/c: metadata.labels must map"),
    ("not an object", "object/<unnamed>: must be an object"),
]


@pytest.mark.parametrize("obj, message", INVALID, ids=[m for _, m in INVALID])
def test_invalid_objects_are_refused_in_one_line(obj: Any, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        validate_object(obj)
    text = str(raised.value)
    assert message in text and "\n" not in text, text
    with pytest.raises(ValueError, match="^" + text.split(":")[0]):
        Policy.from_objects([cluster_role("fine", rule(["get"], ["a"])), obj])


def test_valid_edge_cases_and_duplicates() -> None:
    validate_object(binding("c", "ClusterRole", "edit"))  # no subjects: allowed, grants nothing
    validate_object(binding("x", "ClusterRole", "edit", {"kind": "User", "name": "a"}, ns="ns"))  # apiGroup defaults
    validate_object(cluster_role("agg", selectors=[{}]))  # an empty selector selects every other ClusterRole
    with pytest.raises(ValueError, match="^clusterrole/c: defined more than once$"):
        Policy.from_objects([cluster_role("c"), cluster_role("c")])


# --------------------------------------------------------------------------------------------- performance

def test_performance_sanity() -> None:
    """1,000 bindings over 200 namespaces; 10,000 decisions. Reported, not asserted on time."""
    objs: list[dict[str, Any]] = list(builtin_objects())
    for i in range(1000):
        ns = f"project-{i % 200}"
        who = subject("User", f"user-{i}") if i % 3 else subject("Group", f"team-{i % 50}")
        objs.append(binding(f"b-{i}", "ClusterRole", ("view", "edit", "admin")[i % 3], who, ns=ns))
    start = time.perf_counter()
    policy = Policy.from_objects(objs)
    built = time.perf_counter() - start
    users = [UserInfo(f"user-{i}", (f"team-{i % 50}", "system:authenticated")) for i in range(100)]
    verbs = [("get", "trainingjobs", ""), ("delete", "trainingjobs", ""), ("get", "workspaces", "log"),
             ("create", "rolebindings", ""), ("list", "secrets", "")]
    start, allowed = time.perf_counter(), 0
    for n in range(10_000):
        verb, resource, sub = verbs[n % len(verbs)]
        allowed += authorize(policy, req(users[n % 100], verb, resource, ns=f"project-{n % 200}", sub=sub)).allowed
    took = time.perf_counter() - start
    print(f"\nRBAC: built {len(policy)} objects in {built * 1e3:.1f} ms; 10,000 decisions in {took * 1e3:.1f} ms "
          f"({took / 10_000 * 1e6:.1f} µs each, {allowed} allowed)")
    assert 0 < allowed < 10_000
