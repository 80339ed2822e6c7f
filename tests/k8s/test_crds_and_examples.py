"""The chart's CRDs on a real API server: established, every example manifest accepted by the server's own
validation (structural schema, defaults, enums, ranges, patterns), invalid ones refused with a 422 naming the
field, and the API server's own bookkeeping (resourceVersion conflicts, managed fields) on Shipyard's objects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from shipyard.cluster.api import KubeConflict

from .conftest import REPO

EXAMPLES = sorted([*REPO.glob("examples/*.yaml"), *REPO.glob("examples/lifecycle/*.yaml")])


def server_apply(control_plane, obj: dict[str, Any], namespace: str, dry_run: bool = True) -> httpx.Response:
    """A server-side apply as kubectl sends it (`kubectl apply --server-side [--dry-run=server]`)."""
    group_version = obj["apiVersion"]
    plural = {"TrainingJob": "trainingjobs", "Endpoint": "endpoints", "App": "apps", "Sweep": "sweeps",
              "Workspace": "workspaces", "Project": "projects"}[obj["kind"]]
    # A Project is cluster-scoped: no namespace in its URL.
    where = "" if obj["kind"] == "Project" else f"namespaces/{namespace}/"
    url = f"{control_plane.server}/apis/{group_version}/{where}{plural}/{obj['metadata']['name']}"
    params = {"fieldManager": "kubectl", **({"dryRun": "All"} if dry_run else {})}
    # JSON (a subset of YAML): PyYAML writes YAML 1.1, whose plain `1e-2` the API server's YAML 1.2 reads as a number.
    return httpx.patch(url, params=params, content=json.dumps(obj),
                       headers={"Authorization": f"Bearer {control_plane.admin.token}",
                                "Content-Type": "application/apply-patch+yaml"},
                       verify=str(control_plane.pki / "ca.crt"))


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("apiVersion", "").startswith("shipyard.dev")]


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_is_accepted_by_the_api_servers_validation(control_plane, crds, namespace, example):
    docs = documents(example)
    assert docs, f"{example} holds no Shipyard resource"
    for doc in docs:
        response = server_apply(control_plane, doc, namespace)
        assert response.status_code in (200, 201), f"{example.name} {doc['kind']}: {response.text}"
        stored = response.json()
        assert stored["spec"]  # the server's defaulting and pruning kept the spec
        assert stored["metadata"]["managedFields"][0]["manager"] == "kubectl"


@pytest.mark.parametrize("field,value,message", [
    ("replicas", 0, "spec.replicas"),
    ("backoffSeconds", -1, "spec.backoffSeconds"),
    ("command", [], "spec.command"),
])
def test_an_invalid_trainingjob_is_refused_with_a_422_naming_the_field(control_plane, crds, namespace, field, value,
                                                                       message):
    doc = documents(REPO / "examples" / "train-ddp.yaml")[0]
    doc["spec"][field] = value
    response = server_apply(control_plane, doc, namespace)
    assert response.status_code == 422, response.text
    assert message in response.json()["message"]


def test_a_stale_resource_version_is_a_409_conflict(admin, crds, namespace):
    doc = documents(REPO / "examples" / "train-ddp.yaml")[0]
    doc["metadata"]["namespace"] = namespace
    created = admin.create({k: v for k, v in doc.items() if k != "status"})
    stale = created["metadata"]["resourceVersion"]
    admin.merge_patch("TrainingJob", namespace, created["metadata"]["name"],
                      {"metadata": {"labels": {"touched": "yes"}}})
    with pytest.raises(KubeConflict):
        admin.merge_patch("TrainingJob", namespace, created["metadata"]["name"],
                          {"metadata": {"resourceVersion": stale, "labels": {"touched": "again"}}})
    admin.delete("TrainingJob", namespace, created["metadata"]["name"])


@pytest.mark.parametrize("spec,message", [
    ({"replicas": {"min": 3, "max": 2}}, "min must not be greater than max"),
    ({"replicas": {"min": 0, "max": 2}}, "replicas.min: 0 needs scaleToZero"),
    ({"engine": "custom"}, "command: required when engine is custom"),
    ({"command": ["python", "serve.py"]}, "command: only allowed when engine is custom"),
    ({"drainSeconds": 40}, "drainSeconds must be less than terminationGracePeriodSeconds"),
])
def test_cross_field_rules_are_enforced_by_the_api_servers_cel_as_by_shipyard(control_plane, crds, namespace, spec,
                                                                              message):
    from pydantic import ValidationError

    from shipyard.resources import Endpoint

    doc = {"apiVersion": "shipyard.dev/v1alpha1", "kind": "Endpoint", "metadata": {"name": "cel"},
           "spec": {"model": "/models/m", "volumes": [{"name": "models", "mountPath": "/models"}], **spec}}
    with pytest.raises(ValidationError):  # Shipyard's own verdict, which the CEL rule mirrors
        Endpoint.model_validate(doc)
    response = server_apply(control_plane, doc, namespace)
    assert response.status_code == 422, response.text
    assert message in response.json()["message"]
    valid = {**doc, "spec": {"model": "/models/m", "volumes": [{"name": "models", "mountPath": "/models"}]}}
    assert server_apply(control_plane, valid, namespace).status_code in (200, 201)


def test_rbac_decides_what_a_user_may_do_with_shipyards_kinds(control_plane, crds, admin, namespace):
    """The API server authorizes with RBAC: a plain user (a static token, group team-a) gets exactly what a
    RoleBinding to the group grants on Shipyard's custom resources."""
    from shipyard.cluster.api import KubeError

    from .conftest import kube_api

    alice = kube_api(control_plane.kubeconfig_for(control_plane.user("alice")))
    try:
        with pytest.raises(KubeError) as refused:
            alice.list("TrainingJob", namespace)
        assert refused.value.status == 403
        admin.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                      "metadata": {"name": "trainingjob-reader", "namespace": namespace},
                      "rules": [{"apiGroups": ["shipyard.dev"], "resources": ["trainingjobs"],
                                 "verbs": ["get", "list", "watch"]}]})
        admin.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                      "metadata": {"name": "team-a-reads", "namespace": namespace},
                      "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "trainingjob-reader"},
                      "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "team-a"}]})
        assert alice.list("TrainingJob", namespace) == []
        doc = documents(REPO / "examples" / "train-ddp.yaml")[0]
        doc["metadata"]["namespace"] = namespace
        with pytest.raises(KubeError) as forbidden:
            alice.create(doc)
        assert forbidden.value.status == 403
        with pytest.raises(KubeError):
            alice.list("TrainingJob", "default")  # the binding is the namespace's only
    finally:
        alice.close()
