"""Who may call what: every route of the API × every kind of caller, from the routes themselves.

Identities: the bootstrap admin (cluster-admin), a project admin, an editor and a viewer of project `vision`,
an editor of another project, a service account of `vision` bound to edit, and tokens that are expired,
revoked, wrong or missing. For each route the expected answer follows from the permission the route declares
(api/authz.py) and the RBAC authorizer (whose semantics tests/unit/test_rbac_authorizer.py pins against
Kubernetes'): 401 without a valid token, 403 where the role does not grant it, never a 5xx. A route without a
declared permission fails here.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.routing import APIRoute
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient

from shipyard.api import create_app, hash_token
from shipyard.api.authz import permission_of
from shipyard.rbac import Attributes, UserInfo, authorize
from shipyard.store.sqlite import SQLiteStore

ADMIN_TOKEN = "sy_admin-token-for-tests"
PUBLIC = {"/healthz"}
JOB = {"apiVersion": "shipyard.dev/v1alpha1", "kind": "TrainingJob",
       "metadata": {"name": "job1", "namespace": "vision"}, "spec": {"command": ["python", "train.py"]}}


def member(project: str, user: str, role: str, kind: str = "User") -> dict[str, Any]:
    subject: dict[str, Any] = {"kind": kind, "name": user}
    if kind == "ServiceAccount":
        subject["namespace"] = project
    else:
        subject["apiGroup"] = "rbac.authorization.k8s.io"
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": f"{user}-{role}", "namespace": project},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [subject]}


@pytest.fixture
def platform(tmp_path):
    store = SQLiteStore(tmp_path / "db")
    app = create_app(store, None, hash_token(ADMIN_TOKEN), "9.9.9")
    client = TestClient(app, raise_server_exceptions=False)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert client.post("/apis/shipyard.dev/v1alpha1/apply", headers=admin, json={
        "items": [{"source": "t.yaml", "document": 1, "object": JOB}]}).status_code == 200
    tokens: dict[str, str | None] = {"cluster-admin": ADMIN_TOKEN}
    for user, project, role in (("alice", "vision", "admin"), ("bob", "vision", "edit"), ("carol", "vision", "view"),
                                ("dave", "audio", "edit")):
        assert client.post("/api/v1/users", headers=admin, json={"name": user}).status_code == 201
        assert client.post(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{project}/rolebindings", headers=admin,
                           json=member(project, user, role)).status_code == 201
        tokens[f"{role} of {project}" if user != "dave" else "editor of another project"] = client.post(
            f"/api/v1/users/{user}/tokens", headers=admin, json={"name": "t"}).json()["token"]
    assert client.post("/api/v1/namespaces/vision/serviceaccounts", headers=admin, json={"name": "ci"}).status_code == 201
    client.post("/apis/rbac.authorization.k8s.io/v1/namespaces/vision/rolebindings", headers=admin,
                json=member("vision", "ci", "edit", "ServiceAccount"))
    tokens["service account"] = client.post("/api/v1/namespaces/vision/serviceaccounts/ci/tokens", headers=admin,
                                            json={"name": "t"}).json()["token"]
    revoked = client.post("/api/v1/users/bob/tokens", headers=admin, json={"name": "old"}).json()["token"]
    assert client.delete("/api/v1/users/bob/tokens/old", headers=admin).status_code == 200
    tokens["revoked token"] = revoked
    expiring = client.post("/api/v1/users/bob/tokens", headers=admin, json={"name": "short", "expiresInDays": 1})
    tokens["expired token"] = expiring.json()["token"]
    later = datetime.now(timezone.utc) + timedelta(days=2)  # the other tokens never expire
    store.identities._clock = lambda: later
    tokens["wrong token"] = "sy_u_" + "x" * 43
    tokens["no token"] = None
    yield app, client, tokens, store
    client.close()
    store.close()


USERS = {"cluster-admin": UserInfo("admin", ("system:masters", "system:authenticated")),
         "admin of vision": UserInfo("alice", ("system:authenticated",)),
         "edit of vision": UserInfo("bob", ("system:authenticated",)),
         "view of vision": UserInfo("carol", ("system:authenticated",)),
         "editor of another project": UserInfo("dave", ("system:authenticated",)),
         "service account": UserInfo("system:serviceaccount:vision:ci",
                                     ("system:serviceaccounts", "system:serviceaccounts:vision",
                                      "system:authenticated"))}
PARAMS = {"namespace": "vision", "project": "vision", "plural": "trainingjobs", "name": "job1", "token": "t"}


def _flat(routes_: list[Any]) -> list[Any]:
    """Every route, through included routers (FastAPI keeps those as one entry each)."""
    out = []
    for route in routes_:
        inner = getattr(route, "original_router", None)
        out += _flat(inner.routes) if inner is not None else [route]
    return out


def routes(app) -> list[tuple[str, str, Any]]:
    out = []
    for route in _flat(app.routes):
        if isinstance(route, APIRoute):
            out += [(method, route.path, route) for method in sorted(route.methods)]
        elif isinstance(route, WebSocketRoute):
            out.append(("WS", route.path, route))
    return out


def test_every_route_declares_its_permission(platform):
    app = platform[0]
    undeclared = [f"{m} {p}" for m, p, r in routes(app) if p not in PUBLIC and permission_of(r) is None]
    assert not undeclared, f"routes without a declared permission (api/authz.py allow): {undeclared}"
    assert len(routes(app)) >= 30


def _path(template: str) -> str:
    return re.sub(r"{(\w+)}", lambda m: PARAMS[m.group(1)], template)


def _expected_denied(policy: Any, route: Any, who: str) -> bool | None:
    """Whether RBAC refuses the route's declared permission for `who` (None: the handler decides)."""
    permission = permission_of(route)
    if permission is None or permission.verb is None:
        return None
    user = USERS[who]
    if permission.path:
        attrs = Attributes(user=user, verb="get", path=permission.path)
    else:
        attrs = Attributes(user=user, verb=permission.verb,
                           namespace="" if permission.cluster_scoped else "vision", api_group=permission.group,
                           resource=permission.resource or "trainingjobs", subresource=permission.subresource,
                           name=PARAMS["name"] if "{name}" in route.path else "")
    return not authorize(policy, attrs).allowed


def test_the_route_by_identity_matrix(platform):
    app, client, tokens, _ = platform
    policy = app.state.rbac.policy()  # the built-in roles and the bindings the fixture stored
    seen = 0
    for method, template, route in routes(app):
        if method == "WS" or template in PUBLIC:
            continue
        for who, token in tokens.items():
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            body = {} if method in ("POST", "PUT", "PATCH") else None
            answer = client.request(method, _path(template), headers=headers, json=body,
                                    params={"watch": "false"} if method == "GET" else None)
            where = f"{method} {template} as {who}"
            assert answer.status_code < 500, f"{where}: {answer.status_code} {answer.text[:200]}"
            if who in ("expired token", "revoked token", "wrong token", "no token"):
                assert answer.status_code == 401, where
                continue
            assert answer.status_code != 401, where
            denied = _expected_denied(policy, route, who)
            if denied is True:
                assert answer.status_code == 403, f"{where}: {answer.status_code}"
                assert "cannot" in answer.json()["detail"], where
            elif denied is False:
                assert answer.status_code != 403, f"{where}: {answer.text[:200]}"
            seen += 1
    assert seen > 150


def test_a_project_is_closed_to_members_of_another(platform):
    _, client, tokens, _ = platform
    dave = {"Authorization": f"Bearer {tokens['editor of another project']}"}
    base = "/apis/shipyard.dev/v1alpha1/namespaces/vision/trainingjobs"
    for method, path in (("GET", base), ("GET", base + "/job1"), ("DELETE", base + "/job1"),
                         ("GET", base + "/job1/log"), ("GET", base + "/job1/events")):
        answer = client.request(method, path, headers=dave)
        assert answer.status_code == 403, (method, path)
        assert answer.json()["detail"].startswith("user dave cannot")
    moved = {**JOB, "metadata": {"name": "intruder", "namespace": "vision"}}
    answer = client.post("/apis/shipyard.dev/v1alpha1/apply", headers=dave,
                         json={"items": [{"source": "x.yaml", "document": 1, "object": moved}]})
    assert answer.status_code == 403 and "needs role edit" in answer.json()["detail"]
    # Listing every project needs a cluster-wide right.
    assert client.get("/apis/shipyard.dev/v1alpha1/trainingjobs", headers=dave).status_code == 403


def test_a_viewer_reads_but_cannot_reach_into_workspaces_or_change_anything(platform):
    _, client, tokens, _ = platform
    carol = {"Authorization": f"Bearer {tokens['view of vision']}"}
    base = "/apis/shipyard.dev/v1alpha1/namespaces/vision"
    assert client.get(base + "/trainingjobs", headers=carol).status_code == 200
    for method, path in (("GET", base + "/workspaces/ws/access"), ("GET", base + "/workspaces/ws/log"),
                         ("DELETE", base + "/trainingjobs/job1"), ("GET", "/api/v1/projects/vision/apikeys")):
        assert client.request(method, path, headers=carol).status_code == 403, (method, path)
    denied = client.delete(base + "/trainingjobs/job1", headers=carol).json()["detail"]
    assert denied == "user carol cannot delete trainingjobs 'job1' in project vision: needs role edit" or \
        denied.startswith("user carol cannot delete trainingjobs") and denied.endswith("needs role edit")


def test_revoking_a_token_denies_the_next_request_and_the_audit_log_names_everyone(platform):
    _, client, tokens, store = platform
    bob = {"Authorization": f"Bearer {tokens['edit of vision']}"}
    base = "/apis/shipyard.dev/v1alpha1/namespaces/vision/trainingjobs"
    assert client.get(base, headers=bob).status_code == 200
    assert client.delete("/api/v1/users/bob/tokens/t", headers=bob).status_code == 200  # their own token
    assert client.get(base, headers=bob).status_code == 401
    carol = {"Authorization": f"Bearer {tokens['view of vision']}"}
    assert client.delete(base + "/job1", headers=carol).status_code == 403
    alice = {"Authorization": f"Bearer {tokens['admin of vision']}"}
    assert client.delete(base + "/job1", headers=alice).status_code == 200
    records = store.audit.query()
    seen = {(r.user, r.verb, r.resource, r.namespace, r.name, r.code) for r in records}
    assert ("carol", "delete", "trainingjobs", "vision", "job1", 403) in seen
    assert ("alice", "delete", "trainingjobs", "vision", "job1", 200) in seen
    assert ("admin", "apply", "trainingjobs", "vision", "job1", 200) in seen
    assert any(r.code == 401 and r.user == "" and r.verb == "list" for r in records)  # bob's revoked token
    assert all(r.client for r in records)
    # Reading the trail: a project admin sees their project's, a viewer nothing.
    trail = client.get("/api/v1/audit", headers=alice, params={"project": "vision"})
    assert trail.status_code == 200 and any(r["user"] == "carol" for r in trail.json()["items"])
    assert client.get("/api/v1/audit", headers=carol, params={"project": "vision"}).status_code == 403
    assert client.get("/api/v1/audit", headers=alice).status_code == 403  # everything: cluster-admin's


def test_tokens_never_appear_in_the_audit_log_or_database(platform, tmp_path):
    _, client, tokens, store = platform
    secrets = [t for w, t in tokens.items() if t and w not in ("wrong token", "cluster-admin")]
    dump = json.dumps([r.__dict__ for r in store.audit.query()], default=str)
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("db*"))
    for token in secrets:
        assert token not in dump
        assert token.encode() not in raw


def test_no_escalation_through_bindings(platform):
    _, client, tokens, _ = platform
    alice = {"Authorization": f"Bearer {tokens['admin of vision']}"}
    rb = "/apis/rbac.authorization.k8s.io/v1/namespaces/vision/rolebindings"
    assert client.post(rb, headers=alice, json=member("vision", "erin", "edit")).status_code == 201
    refused = client.post(rb, headers=alice, json=member("vision", "erin", "cluster-admin"))
    assert refused.status_code == 403 and "escalation" in refused.json()["detail"]
    # Nor in another project, nor cluster-wide.
    assert client.post("/apis/rbac.authorization.k8s.io/v1/namespaces/audio/rolebindings", headers=alice,
                       json=member("audio", "erin", "view")).status_code == 403
    bob = {"Authorization": f"Bearer {tokens['edit of vision']}"}
    assert client.post(rb, headers=bob, json=member("vision", "erin", "view")).status_code == 403


def test_access_reviews_answer_like_kubernetes(platform):
    _, client, tokens, _ = platform
    carol = {"Authorization": f"Bearer {tokens['view of vision']}"}
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {"verb": "list", "resource": "trainingjobs", "namespace": "vision",
                                              "group": "shipyard.dev"}}}
    answer = client.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", headers=carol, json=review)
    assert answer.status_code == 201 and answer.json()["status"]["allowed"] is True
    review["spec"]["resourceAttributes"]["verb"] = "delete"
    assert client.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", headers=carol,
                       json=review).json()["status"]["allowed"] is False
    # Asking for someone else is cluster-admin's.
    other = {"spec": {**review["spec"], "user": "bob"}}
    assert client.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", headers=carol, json=other).status_code == 403
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert client.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", headers=admin,
                       json=other).json()["status"]["allowed"] is True
    assert client.get("/api/v1/whoami", headers=carol).json() == {"username": "carol",
                                                                 "groups": ["system:authenticated"]}
