"""On a real control plane, Kubernetes decides who uses Shipyard's API: the operator authenticates a caller's own
token with a TokenReview and authorizes every request with a SubjectAccessReview over the cluster's RBAC,
where the chart's ClusterRoles aggregate into Kubernetes' view/edit/admin. A user bound to `view` reads but
cannot create; bound to `edit`, they can; an unknown token is a 401; the admin token still works."""

from __future__ import annotations

import httpx
import pytest

from .conftest import wait_for

pytestmark = pytest.mark.k8s

JOB = {"apiVersion": "shipyard.dev/v1alpha1", "kind": "TrainingJob",
       "metadata": {"name": "by-alice"}, "spec": {"replicas": 1, "command": ["python", "-c", "print(1)"]}}


def _bind(admin, namespace: str, role: str) -> None:
    admin.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                 "metadata": {"name": f"team-a-{role}", "namespace": namespace},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                 "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "team-a"}]})


def test_token_review_and_subject_access_review_decide(control_plane, admin, operator, namespace):
    alice = {"Authorization": f"Bearer {control_plane.user('alice').token}"}
    jobs = f"{operator.api}/apis/shipyard.dev/v1alpha1/namespaces/{namespace}/trainingjobs"
    apply = f"{operator.api}/apis/shipyard.dev/v1alpha1/apply"
    job = {**JOB, "metadata": {**JOB["metadata"], "namespace": namespace}}
    body = {"items": [{"source": "job.yaml", "document": 1, "object": job}]}

    # Authenticated by the cluster, bound to nothing: refused, with the role that would do.
    refused = httpx.get(jobs, headers=alice, timeout=30)
    assert refused.status_code == 403, refused.text
    assert refused.json()["detail"] == f"user alice cannot list trainingjobs in project {namespace}: needs role view"
    assert httpx.get(jobs, headers={"Authorization": "Bearer not-a-token"}, timeout=30).status_code == 401

    # Kubernetes' own `view`, which the chart's shipyard-view aggregates into: reads, cannot create.
    _bind(admin, namespace, "view")
    wait_for(lambda: httpx.get(jobs, headers=alice, timeout=30).status_code == 200, timeout=30,
             what="alice's view binding to be seen (decisions are cached 5 s)")
    created = httpx.post(apply, headers=alice, json=body, timeout=30)
    assert created.status_code == 403 and "needs role edit" in created.json()["detail"]
    assert httpx.get(f"{operator.api}/apis/shipyard.dev/v1alpha1/namespaces/default/trainingjobs", headers=alice,
                     timeout=30).status_code == 403  # the binding is the namespace's only

    # `edit`: the same request now goes through, as alice (not as the operator).
    _bind(admin, namespace, "edit")
    wait_for(lambda: httpx.post(apply, headers=alice, json=body, timeout=30).status_code == 200, timeout=30,
             what="alice's edit binding to be seen")
    assert admin.get("TrainingJob", namespace, "by-alice") is not None
    assert httpx.get(f"{operator.api}/api/v1/whoami", headers=alice, timeout=30).json()["username"] == "alice"

    # The bootstrap admin token still works, and nothing needs to read its Secret.
    admin_token = {"Authorization": f"Bearer {operator.admin_token}"}
    assert httpx.delete(f"{jobs}/by-alice", headers=admin_token, timeout=30).status_code == 200
