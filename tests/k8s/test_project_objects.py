"""What a Project compiles to (compiler/project.py), on a real API server, applied with exactly the operator's
chart RBAC: the Namespace, the member RoleBindings to Kubernetes' own admin/edit/view (which the operator does
not hold: the chart's `bind` on those three is what lets it grant them), the NetworkPolicies, the LimitRange and
the ResourceQuota. Then the server enforces them: Pod Security `restricted` refuses a pod that only `baseline`
allows, the LimitRange fills in a container's resources, the quota refuses a pod past it, and a member may do
what their role says and no more."""

from __future__ import annotations

import os

import pytest

from shipyard.cluster.api import KubeError
from shipyard.compiler.project import compile_project
from shipyard.resources import Project

from .conftest import kube_api, wait_for

pytestmark = pytest.mark.k8s


def _pod(namespace: str, name: str, restricted: bool) -> dict:
    container = {"name": "main", "image": "busybox", "command": ["true"]}
    if restricted:  # else no security context at all: fine under `baseline`, refused under `restricted`
        container["securityContext"] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                        "runAsNonRoot": True, "runAsUser": 1000,
                                        "seccompProfile": {"type": "RuntimeDefault"}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [container], "nodeName": "nowhere"}}


def test_the_operator_applies_what_a_project_compiles_to_and_the_server_enforces_it(control_plane, admin,
                                                                                   operator_identity):
    name = "proj-" + os.urandom(3).hex()
    project = Project.model_validate({"metadata": {"name": name}, "spec": {
        "displayName": "A team", "members": [
            {"kind": "User", "name": "alice", "role": "edit"},
            {"kind": "Group", "name": "system:authenticated", "role": "view"},
            {"kind": "ServiceAccount", "name": "ci", "role": "admin"}],
        "defaults": {"container": {"requests": {"cpu": "250m", "memory": "64Mi"},
                                   "limits": {"cpu": "1", "memory": "128Mi"}}},
        "quota": {"limits.memory": "256Mi", "pods": "10"}}})
    as_operator = kube_api(operator_identity["kubeconfig"], field_manager="shipyard")
    alice = kube_api(control_plane.kubeconfig_for(control_plane.user("alice")))
    try:
        for obj in compile_project(project):
            as_operator.apply(obj)  # refused (403) if the chart's RBAC lacks anything, bind included
        namespace = admin.get("Namespace", None, name)
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        assert {b["metadata"]["name"] for b in as_operator.list("RoleBinding", name,
                                                                {"shipyard.dev/member": "true"})} == {
            "member-user-alice", "member-group-system-authenticated", "member-serviceaccount-ci"}

        # The quota controller must have counted the namespace before the server admits any pod under it.
        wait_for(lambda: (admin.get("ResourceQuota", name, "quota") or {}).get("status", {}).get("hard"),
                 timeout=60, what="the quota's status")
        with pytest.raises(KubeError, match="PodSecurity"):
            admin.create(_pod(name, "unrestricted", restricted=False))
        pod = admin.create(_pod(name, "restricted", restricted=True))
        assert pod["spec"]["containers"][0]["resources"] == {"limits": {"cpu": "1", "memory": "128Mi"},
                                                             "requests": {"cpu": "250m", "memory": "64Mi"}}
        admin.create(_pod(name, "restricted-2", restricted=True))  # 256Mi of limits: the quota, exactly
        with pytest.raises(KubeError, match="exceeded quota"):
            admin.create(_pod(name, "restricted-3", restricted=True))

        # alice is `edit`: she manages workloads' objects, but not who else is a member.
        wait_for(lambda: alice.list("Pod", name) is not None, timeout=30, what="alice's binding to be seen")
        with pytest.raises(KubeError):
            alice.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                         "metadata": {"name": "member-user-mallory", "namespace": name},
                         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
                         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mallory"}]})

        # What the Project controller does when a Project is deleted: its objects in reverse, the Namespace last.
        for obj in reversed(compile_project(project)):
            as_operator.delete(obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
    finally:
        alice.close()
        as_operator.close()
        if admin.get("Namespace", None, name) is not None:
            admin.delete("Namespace", None, name)
