"""A Project's whole life through the operator on a real API server, with the chart's RBAC: creating the custom
resource makes its Namespace (Pod Security `restricted`), member RoleBindings, policies and LimitRange; a member
dropped from the spec loses their binding; deleting the Project deletes its work (the TrainingJob's finalizer
runs, the gang's pods stop), then its Namespace."""

from __future__ import annotations

import os

import pytest

from .conftest import wait_for
from .test_operator_lifecycle import pods_of, running, trainingjob

pytestmark = pytest.mark.k8s


def _project(name: str, members: list[dict[str, str]]) -> dict:
    return {"apiVersion": "shipyard.dev/v1alpha1", "kind": "Project", "metadata": {"name": name},
            "spec": {"displayName": "Team", "members": members}}


def test_a_project_from_its_namespace_to_its_deletion(admin, operator):
    name = "team-" + os.urandom(3).hex()
    admin.create(_project(name, [{"kind": "User", "name": "alice", "role": "edit"},
                                 {"kind": "User", "name": "bob", "role": "view"}]))
    ns = wait_for(lambda: admin.get("Namespace", None, name), timeout=60, what="the project's namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    wait_for(lambda: admin.get("RoleBinding", name, "member-user-bob"), timeout=30, what="bob's binding")
    assert admin.get("RoleBinding", name, "member-user-alice")["roleRef"]["name"] == "edit"
    assert {p["metadata"]["name"] for p in admin.list("NetworkPolicy", name)} >= {"default-deny-ingress",
                                                                                 "allow-gateway-to-serving"}
    assert admin.get("LimitRange", name, "defaults") is not None
    project = wait_for(lambda: (p := admin.get("Project", None, name)) and
                       (p.get("status") or {}).get("phase") == "Active" and p, timeout=30, what="Active")
    assert project["metadata"]["finalizers"]

    # Bob leaves: the operator removes his binding (drift corrected from the spec).
    admin.merge_patch("Project", None, name, {"spec": {"members": [{"kind": "User", "name": "alice",
                                                                    "role": "edit"}]}})
    wait_for(lambda: admin.get("RoleBinding", name, "member-user-bob") is None, timeout=30,
             what="bob's binding removed")

    # Work in it (restricted pods run under the namespace's Pod Security), then the project is deleted.
    admin.create(trainingjob("gang", name))
    wait_for(lambda: running(pods_of(admin, name, "gang"), 2), timeout=90, what="the gang running")
    admin.delete("Project", None, name)
    wait_for(lambda: admin.get("TrainingJob", name, "gang") is None, timeout=90,
             what="the project's TrainingJob deleted by the project's finalizer")
    wait_for(lambda: admin.get("Project", None, name) is None, timeout=90, what="the Project gone")
    gone = wait_for(lambda: (n := admin.get("Namespace", None, name)) is None
                    or n["metadata"].get("deletionTimestamp") or n is None, timeout=60,
                    what="the namespace deleted")
    assert gone
