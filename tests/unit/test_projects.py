"""Kind Project, cluster-scoped: created by a cluster-admin, read and changed by its own admin, listed to each
caller as the projects they may see, deleted only when empty unless forced; its controller keeps the member
RoleBindings (which the local authorizer reads) and the native policies equal to the spec."""

from __future__ import annotations

import json

import pytest

from shipyard.controllers.manager import ObjectKey
from shipyard.controllers.project import ProjectController
from shipyard.resources import Project, TrainingJob
from shipyard.resources.project import default_project
from shipyard.runtime.fake import FakeRuntime
from shipyard.store.projects import ensure_default_project, held_objects
from shipyard.store.sqlite import SQLiteStore
from tests.unit.test_access_cli import as_user, store  # noqa: F401 - fixtures
from tests.unit.test_client_cli import JOB, cli, server, write  # noqa: F401 - fixtures


def _token(cli, user: str) -> str:
    assert cli("user", "create", user)[0] == 0
    code, token, err = cli("user", "token", "create", user, "t", "-q")
    assert code == 0, err
    return token.strip()


def test_a_project_is_created_by_a_cluster_admin_and_run_by_its_own_admin(cli, store, tmp_path, monkeypatch):
    alice, bob = _token(cli, "alice"), _token(cli, "bob")
    assert cli("project", "create", "vision", "--display-name", "Vision team") == (0, "project/vision created\n", "")
    assert cli("project", "create", "nlp")[0] == 0
    assert cli("project", "create", "vision")[0] == 1  # once
    assert cli("project", "add-member", "vision", "alice", "--role", "admin")[0] == 0
    assert cli("project", "add-member", "nlp", "bob", "--role", "view")[0] == 0
    # A cluster-scoped object has no project: one given in a manifest is ignored, as kubectl does.
    stored = store.get("Project", "", "vision")
    assert isinstance(stored, Project) and stored.metadata.namespace == ""
    assert [(m.kind, m.name, m.role) for m in stored.spec.members] == [("User", "alice", "admin")]
    assert "namespace" not in json.loads(cli("project", "get", "vision", "-o", "json")[1])["metadata"]

    # Each sees the projects they may get; only a cluster-admin sees all.
    names = lambda out: [line.split()[0] for line in out.splitlines()[1:]]  # noqa: E731
    assert names(cli("project", "get")[1]) == ["nlp", "vision"]
    as_user(monkeypatch, alice)
    assert names(cli("project", "get")[1]) == ["vision"]
    assert cli("project", "get", "nlp")[0] == 1
    # Alice (admin of vision) adds a member and changes her project; she cannot create or delete projects.
    assert cli("project", "add-member", "vision", "bob", "--role", "edit")[0] == 0
    code, out, err = cli("project", "create", "mine")
    assert code == 1 and "cannot create projects" in err
    code, _, err = cli("project", "delete", "vision")
    assert code == 1 and "cannot delete projects" in err
    out = cli("project", "describe", "vision")[1]
    assert "Vision team" in out and "bob" in out and "Members:" in out
    as_user(monkeypatch, bob)
    assert names(cli("project", "get")[1]) == ["nlp", "vision"]
    code, _, err = cli("project", "add-member", "vision", "eve", "--role", "admin")  # an editor may not
    assert code == 1 and "cannot update projects" in err
    manifest = write(tmp_path, "job.yaml", JOB.format(name="mine"))
    assert cli("apply", "-f", manifest, "-p", "vision")[0] == 0

    # Removing a member takes their role away at once.
    monkeypatch.setenv("SHIPYARD_TOKEN", "")
    as_user(monkeypatch, alice)
    assert cli("project", "remove-member", "vision", "bob")[0] == 0
    assert cli("project", "remove-member", "vision", "bob")[0] == 1  # not a member any more
    as_user(monkeypatch, bob)
    assert cli("get", "tj", "-p", "vision")[0] == 1


def test_deleting_a_project_refuses_while_it_holds_work_unless_forced(cli, store, tmp_path):
    assert cli("project", "create", "vision")[0] == 0
    manifest = write(tmp_path, "job.yaml", JOB.format(name="train"))
    assert cli("apply", "-f", manifest, "-p", "vision")[0] == 0
    code, _, err = cli("project", "delete", "vision")
    assert code == 1 and "still holds 1 TrainingJob" in err and "--force" in err
    assert store.get("Project", "", "vision") is not None and held_objects(store, "vision") == {"TrainingJob": 1}
    assert cli("project", "delete", "vision", "--force")[0] == 0
    assert store.get("Project", "", "vision") is None and held_objects(store, "vision") == {}

    # The generic verbs know the kind too, whatever project they are given.
    assert cli("apply", "-f", "examples/project.yaml", "-p", "elsewhere")[0] == 0
    assert "research" in cli("get", "projects", "-p", "elsewhere")[1]
    assert cli("delete", "project/research")[0] == 0
    ensure_default_project(store)
    code, _, err = cli("project", "delete", "default", "--force")
    assert code == 1 and "cannot be deleted" in err
    assert cli("project", "delete", "nope")[0] == 1


@pytest.mark.parametrize("manifest, words", [
    ({"metadata": {"name": "Bad_Name"}}, ["metadata.name"]),
    ({"metadata": {"name": "p"}, "spec": {"members": [{"name": "a", "role": "owner"}]}}, ["role"]),
    ({"metadata": {"name": "p"}, "spec": {"members": [{"name": "a"}, {"name": "a", "role": "edit"}]}},
     ["listed twice"]),
    ({"metadata": {"name": "p"}, "spec": {"members": [{"kind": "ServiceAccount", "name": "CI"}]}},
     ["service account name"]),
    ({"metadata": {"name": "p"}, "spec": {"defaults": {"container": {"requests": {"gpu": "1"}}}}}, ["gpu"]),
    ({"metadata": {"name": "p"}, "spec": {"quota": {"nvidia.com/gpu": "1"}}}, ["quota", "cannot be capped"]),
    ({"metadata": {"name": "p"}, "spec": {"quota": {"pods": "1.5"}}}, ["quota", "pods", "whole number"]),
    ({"metadata": {"name": "p"}, "spec": {"quota": {"requests.memory": "lots"}}}, ["quota", "requests.memory"]),
    ({"metadata": {"name": "p"}, "spec": {"quota": {"limits.cpu": "-2"}}}, ["quota", "negative"]),
    ({"metadata": {"name": "p"}, "spec": {"quota": {"limits.memory": "8Gi"}}},
     ["defaults.container.limits.memory"]),
])
def test_bad_projects_are_one_line_errors(cli, store, tmp_path, manifest, words):
    doc = {"apiVersion": "shipyard.dev/v1alpha1", "kind": "Project", **manifest}
    code, _, err = cli("apply", "-f", write(tmp_path, "p.yaml", json.dumps(doc)))
    assert code == 1 and len(err.strip().splitlines()) == 1 and all(w in err for w in words), err
    assert store.list("Project") == []


def test_the_controller_keeps_bindings_and_policies_equal_to_the_spec(tmp_path):
    store, runtime = SQLiteStore(tmp_path / "db"), FakeRuntime()
    try:
        controller = ProjectController(store, runtime)
        project = Project.model_validate({"metadata": {"name": "vision"}, "spec": {"members": [
            {"name": "alice", "role": "admin"}, {"kind": "Group", "name": "oidc:ml", "role": "view"}]}})
        store.apply([project])
        controller.reconcile(ObjectKey("Project", "", "vision"))
        bindings = {b["metadata"]["name"]: b["roleRef"]["name"] for b in store.rbac.list("RoleBinding", "vision")}
        assert bindings == {"member-user-alice": "admin", "member-group-oidc-ml": "view"}
        # The fake runtime has namespaces of its own: a cluster's Namespace and policies go to it; bindings do
        # not (the store's authorizer decides locally).
        kinds = sorted(o["kind"] for o in runtime.objects.values())
        assert kinds == ["LimitRange", "Namespace", "NetworkPolicy", "NetworkPolicy"]
        got = store.get("Project", "", "vision")
        assert got.status.phase == "Active" and "shipyard.dev/cleanup" in got.metadata.finalizers

        # A member removed from the spec loses their binding on the next reconcile (drift corrected).
        project.spec.members = project.spec.members[:1]
        store.apply([project])
        controller.reconcile(ObjectKey("Project", "", "vision"))
        assert [b["metadata"]["name"] for b in store.rbac.list("RoleBinding", "vision")] == ["member-user-alice"]

        # Deleted: what it holds goes first, then its bindings and native objects, then the Project.
        store.apply([TrainingJob.model_validate(JOB_OBJ)])
        store.delete("Project", "", "vision")
        result = controller.reconcile(ObjectKey("Project", "", "vision"))
        assert result.requeue_after and store.get("Project", "", "vision").status.phase == "Terminating"
        for tj in store.list("TrainingJob", "vision"):  # no TrainingJob controller here: release it by hand
            tj.metadata.finalizers = []
            store.update_metadata(tj)
        controller.reconcile(ObjectKey("Project", "", "vision"))
        assert store.get("Project", "", "vision") is None
        assert store.rbac.list("RoleBinding", "vision") == [] and runtime.objects == {}
    finally:
        store.close()


JOB_OBJ = {"apiVersion": "shipyard.dev/v1alpha1", "kind": "TrainingJob",
           "metadata": {"name": "train", "namespace": "vision"},
           "spec": {"replicas": 1, "command": ["python", "-c", "print(1)"]}}


def test_default_exists_out_of_the_box(tmp_path):
    store = SQLiteStore(tmp_path / "db")
    try:
        ensure_default_project(store)
        ensure_default_project(store)  # idempotent
        assert [p.metadata.name for p in store.list("Project")] == ["default"]
        assert store.get("Project", "", "default").spec == default_project().spec
    finally:
        store.close()


def test_a_default_request_above_its_default_limit_is_refused():
    with pytest.raises(ValueError, match="exceeds its default limit"):
        Project.model_validate({"metadata": {"name": "p"}, "spec": {"defaults": {"container": {
            "limits": {"memory": "128Mi"}}}}})


def test_the_quota_is_applied_when_set_and_removed_when_dropped(tmp_path):
    """Issue 15: spec.quota compiles to a ResourceQuota `quota`; dropping it from the spec deletes Shipyard's,
    never one of the same name that someone else made."""
    store, runtime = SQLiteStore(tmp_path / "db"), FakeRuntime()
    try:
        controller = ProjectController(store, runtime)
        project = Project.model_validate({"metadata": {"name": "vision"}, "spec": {"quota": {
            "requests.cpu": 8, "requests.memory": "32Gi", "pods": 10}}})
        store.apply([project])
        controller.reconcile(ObjectKey("Project", "", "vision"))
        quota = runtime.get("ResourceQuota", "vision", "quota")
        assert quota["spec"]["hard"] == {"pods": "10", "requests.cpu": "8", "requests.memory": "32Gi"}

        project.spec.quota = None
        store.apply([project])
        controller.reconcile(ObjectKey("Project", "", "vision"))
        assert runtime.get("ResourceQuota", "vision", "quota") is None

        theirs = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "quota", "namespace": "vision"},
                  "spec": {"hard": {"pods": "3"}}}
        runtime.apply(theirs)
        controller.reconcile(ObjectKey("Project", "", "vision"))
        assert runtime.get("ResourceQuota", "vision", "quota") is not None
    finally:
        store.close()


def test_the_local_runtime_keeps_a_quota(tmp_path):
    from decimal import Decimal

    from shipyard.compiler import compile_project
    from shipyard.runtime.local.capacity import Capacity
    from shipyard.runtime.local.runtime import LocalRuntime

    rt = LocalRuntime(tmp_path / "runtime", tmp_path / "volumes", tmp_path / "logs",
                      capacity=Capacity(cpu=Decimal(1), memory=Decimal(1 << 30)))
    project = Project.model_validate({"metadata": {"name": "vision"}, "spec": {"quota": {"pods": "2"}}})
    [quota] = [o for o in compile_project(project) if o["kind"] == "ResourceQuota"]
    rt.apply(quota)
    assert rt.get("ResourceQuota", "vision", "quota")["spec"]["hard"] == {"pods": "2"}
    rt.delete("ResourceQuota", "vision", "quota")
    assert rt.get("ResourceQuota", "vision", "quota") is None
