"""The generated CRDs: valid for Kubernetes, structural, in step with the models and with the committed chart file.

Manifests are checked against the CRD schemas with jsonschema (Draft 4, the dialect OpenAPI v3.0 is based on),
after turning the few Kubernetes extensions into their JSON Schema meaning.
"""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from shipyard.resources import (API_VERSION, Condition, ManifestError, Resource, load_resources, parse_yaml,
                                validate_document)
from shipyard.resources.crd import INT_OR_STRING, PRESERVE, all_crds, crd_for, main
from shipyard.resources.endpoint import EndpointStatus, ResolvedModel
from shipyard.resources.manifest import Document
from shipyard.resources.project import ProjectStatus
from shipyard.resources.registry import KINDS as ALL_KINDS

# A Shipyard Secret is a native Secret on a cluster, never a custom resource (resources/secret.py): no CRD.
KINDS = {kind: cls for kind, cls in ALL_KINDS.items() if cls.CUSTOM_RESOURCE}
from shipyard.resources.serving import ServingStatus
from shipyard.resources.sweep import BestTrial, RegisteredModel, SweepStatus, TrialStatus
from shipyard.resources.trainingjob import Progress, ReplicaStatus, TrackingStatus, TrainingJobStatus
from shipyard.resources.workspace import WorkspaceStatus

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "charts" / "shipyard" / "crds" / "shipyard.dev.yaml"
CRDS = {crd["spec"]["names"]["kind"]: crd for crd in all_crds()}
K8S_VERSIONS = ["1.30", latest_version()]
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
OBJECT_META = {"name", "generateName", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
               "deletionTimestamp", "labels", "annotations", "finalizers", "ownerReferences"}


def schema_of(kind: str) -> dict[str, Any]:
    return CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def to_jsonschema(node: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI v3 CRD schema node as Draft 4 JSON Schema: `nullable` and int-or-string become type lists."""
    out = dict(node)
    if out.pop(INT_OR_STRING, False):
        out["type"] = ["integer", "string"]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [*([out["type"]] if isinstance(out["type"], str) else out["type"]), "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if "properties" in out:
        out["properties"] = {k: to_jsonschema(v) for k, v in out["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = to_jsonschema(out[key])
    return out


VALIDATORS = {kind: jsonschema.Draft4Validator(to_jsonschema(schema_of(kind))) for kind in CRDS}


def crd_errors(obj: dict[str, Any]) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATORS[obj["kind"]].iter_errors(obj)]


def test_every_kind_has_a_crd():
    assert sorted(CRDS) == sorted(KINDS)
    assert [c["metadata"]["name"] for c in all_crds()] == sorted(f"{c.PLURAL}.shipyard.dev" for c in KINDS.values())
    for kind, crd in CRDS.items():
        names, [version] = crd["spec"]["names"], crd["spec"]["versions"]
        assert names["kind"] == kind and names["listKind"] == f"{kind}List" and names["categories"] == ["shipyard"]
        # A Project is the namespace the others live in: cluster-scoped, as a Namespace is.
        assert crd["spec"]["scope"] == ("Cluster" if KINDS[kind].CLUSTER_SCOPED else "Namespaced")
        assert version["name"] == "v1alpha1"
        assert version["served"] and version["storage"] and version["subresources"] == {"status": {}}


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_crd_is_valid_for_kubernetes(kind, version):
    kubernetes_validate.validate(CRDS[kind], version, strict=True)  # raises on any error


def structural_problems(node: Any, path: str, in_junctor: bool = False) -> list[str]:
    """What the structural-schema rules of apiextensions.k8s.io/v1 forbid, found by walking every node."""
    if not isinstance(node, dict):
        return [f"{path}: not a schema object"]
    problems = [f"{path}: {k}" for k in ("$ref", "$defs", "definitions", "prefixItems", "const", "title") if k in node]
    if in_junctor:
        problems += [f"{path}: {k} inside a junctor" for k in ("type", "default", "nullable", "description",
                                                               "additionalProperties") if k in node]
    elif "type" not in node and not node.get(INT_OR_STRING) and not node.get(PRESERVE):
        problems.append(f"{path}: no type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties together with additionalProperties")
    if node.get(PRESERVE) is False:
        problems.append(f"{path}: {PRESERVE}: false")
    for name in node.get("required", []):
        if name not in node.get("properties", {}):
            problems.append(f"{path}: required {name!r} is not a property")
    for junctor in ("anyOf", "oneOf", "allOf"):
        for i, branch in enumerate(node.get(junctor, [])):
            problems += structural_problems(branch, f"{path}.{junctor}[{i}]", in_junctor=True)
    for name, sub in node.get("properties", {}).items():
        problems += structural_problems(sub, f"{path}.{name}", in_junctor)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            problems += structural_problems(node[key], f"{path}.{key}", in_junctor)
        elif key in node:
            problems.append(f"{path}: {key} is not a schema")
    return problems


def defaults_of(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)] if "default" in node else []
    for name, sub in node.get("properties", {}).items():
        found += defaults_of(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            found += defaults_of(node[key], f"{path}.{key}")
    return found


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_schema_is_structural(kind):
    schema = schema_of(kind)
    assert structural_problems(schema, kind) == []
    assert set(schema["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
    assert schema["required"] == ["spec"]
    metadata = schema["properties"]["metadata"]
    assert set(metadata) <= {"type", "properties"} and set(metadata.get("properties", {})) <= {"name", "generateName"}
    # The API server refuses a CRD whose defaults do not validate against their own node.
    for path, node in defaults_of(schema, kind):
        rest = to_jsonschema({k: v for k, v in node.items() if k != "default"})
        assert not list(jsonschema.Draft4Validator(rest).iter_errors(node["default"])), path


def example_documents() -> list[Document]:
    docs = []
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        docs += [d for d in parse_yaml(path.read_text(), str(path.relative_to(ROOT)))
                 if isinstance(d.body, dict) and d.body.get("apiVersion") == API_VERSION]
    return docs


EXAMPLES = example_documents()


def test_examples_cover_every_kind():
    assert {d.body["kind"] for d in EXAMPLES} == set(KINDS)


@pytest.mark.parametrize("doc", EXAMPLES, ids=lambda d: f"{d.source}#{d.index}")
def test_example_validates_against_its_crd(doc):
    [resource] = load_resources([doc])
    assert crd_errors(doc.body) == [], "as written (what kubectl apply sends)"
    assert crd_errors(resource.to_wire()) == [], "as stored (defaults filled in)"


def example(kind: str) -> Resource:
    return validate_document(next(d for d in EXAMPLES if d.body["kind"] == kind))


def _conditions() -> list[Condition]:
    return [Condition(type="Ready", status="True", reason="Running", message="all replicas up",
                      last_transition_time=NOW, observed_generation=2)]


def _serving(status: ServingStatus) -> ServingStatus:
    return status.model_copy(update=dict(
        phase="Ready", conditions=_conditions(), observed_generation=2, url="http://gateway/default/lifecycle",
        replicas=2, ready_replicas=2, updated_replicas=2, desired_replicas=2, in_flight=3.5, requests_per_second=12.25,
        last_scale_time=NOW, last_request_time=NOW))


STATUSES = {
    "TrainingJob": lambda: TrainingJobStatus(
        phase="Running", conditions=_conditions(), observed_generation=1, restarts=1, start_time=NOW,
        last_restart_time=NOW,
        replica_statuses=[ReplicaStatus(index=0, phase="Running"),
                          ReplicaStatus(index=1, phase="Failed", exit_code=137, reason="OOMKilled", message="oom")],
        progress=Progress(step=10, total_steps=300, loss=2.5, tokens_per_second=1234.5, metrics={"eval_loss": 2.25},
                          updated_at=NOW),
        mlflow_run_id="0a1b2c", tracking=TrackingStatus(log_offsets={"train-ddp-0": 4096}, run_ended=False)),
    "Endpoint": lambda: _serving(EndpointStatus(resolved_model=ResolvedModel(
        uri="models:/lifecycle@champion", name="lifecycle", version=3, volume="lifecycle",
        path="/sweep/lifecycle-sweep-1/merged"))),
    "App": lambda: _serving(ServingStatus()).model_copy(update={"phase": "Idle", "ready_replicas": 0}),
    "Sweep": lambda: SweepStatus(
        phase="Succeeded", conditions=_conditions(), observed_generation=1, start_time=NOW, completion_time=NOW,
        trials=[TrialStatus(name="lifecycle-sweep-0", parameters={"lr": "3e-3", "r": "4"}, phase="Succeeded",
                            objective=0.875, best_objective=0.9, step=180, history=[(60, 0.5), (120, 0.9)],
                            mlflow_run_id="run0"),
                TrialStatus(name="lifecycle-sweep-1", parameters={"lr": "1e-2", "r": "8"}, phase="Stopped",
                            reason="EarlyStopped", message="below the median at step 60")],
        best_trial=BestTrial(name="lifecycle-sweep-0", parameters={"lr": "3e-3", "r": "4"}, objective=0.9),
        trials_succeeded=1, trials_stopped=1, registered_model=RegisteredModel(name="lifecycle", version=3),
        mlflow_run_id="parent"),
    "Workspace": lambda: WorkspaceStatus(
        phase="Suspended", conditions=_conditions(), observed_generation=1, url="http://gateway/default/notebook/",
        ready=False, last_activity_time=NOW, suspended_time=NOW, suspend_reason="Idle"),
    "Project": lambda: ProjectStatus(
        phase="Active", conditions=_conditions(), observed_generation=1, workloads={"TrainingJob": 2, "Endpoint": 1}),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_populated_status_validates(kind):
    resource = example(kind)
    resource.metadata.uid, resource.metadata.creation_timestamp = "8f2c", NOW
    resource.status = STATUSES[kind]()
    wire = resource.to_wire()
    assert wire["status"]["conditions"] and wire["status"]["phase"] != "Pending"
    assert crd_errors(wire) == []


def column_target(schema: dict[str, Any], json_path: str) -> dict[str, Any] | None:
    node = schema
    for part in json_path.removeprefix(".").split("."):
        node = node.get("properties", {}).get(part)
        if node is None:
            return None
    return node


COLUMN_TYPES = {"integer": {"integer"}, "number": {"number", "integer"}, "string": {"string"},
                "boolean": {"boolean"}}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_printer_columns_point_at_schema_fields(kind):
    columns = CRDS[kind]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in columns][0] == "Phase" and "Age" in [c["name"] for c in columns]
    for column in columns:
        path = column["jsonPath"]
        if path.startswith(".metadata."):
            assert path.removeprefix(".metadata.") in OBJECT_META, path
            continue
        target = column_target(schema_of(kind), path)
        assert target is not None, f"{kind} column {column['name']}: {path} is not in the schema"
        if column["type"] == "date":
            assert (target["type"], target.get("format")) == ("string", "date-time"), path
        else:
            assert target["type"] in COLUMN_TYPES[column["type"]], path


def test_committed_chart_file_is_current():
    text = CRD_FILE.read_text()
    assert text.startswith("# "), "the file says it is generated"
    assert list(yaml.safe_load_all(text)) == all_crds(), f"{CRD_FILE.relative_to(ROOT)} is stale: run make crds"


def test_main_prints_the_stream(capsys):
    main()
    assert list(yaml.safe_load_all(capsys.readouterr().out)) == all_crds()


def edit(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    *parents, last = path.split(".")
    node = out
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if value is DELETE:
        del node[last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
    return out


DELETE = object()

# Accepted by Shipyard, so the CRD must accept them too (it may only be looser).
LOOSE = [
    ("TrainingJob", "spec.resources.cpu", 2),  # an unquoted quantity
    ("TrainingJob", "spec.resources.memory", "512Mi"),
    ("TrainingJob", "spec.backoffSeconds", 1),  # an int where a float is declared
    ("Endpoint", "spec.autoscaling.target", 2.5),
    ("Sweep", "spec.parameters.0.values", ["3e-3", 0.01, 1]),  # str | int | float items
]
# Refused by Shipyard and by the CRD alike: the schema really validates.
BAD = [
    ("TrainingJob", "spec.replicas", "two"),
    ("TrainingJob", "spec.replicas", 0),
    ("TrainingJob", "spec.command", DELETE),
    ("TrainingJob", "spec.resources.cpu", "lots"),
    ("TrainingJob", "spec.volumes.0.accessMode", "ReadWriteSometimes"),
    ("TrainingJob", "spec.env", [{"name": "1BAD"}]),
    ("TrainingJob", "spec", DELETE),
    ("TrainingJob", "status.phase", "Exploded"),
    ("Endpoint", "spec.engine", "tensorrt"),
    ("Endpoint", "spec.autoscaling.target", 0),
    ("Endpoint", "spec.port", 70000),
    ("App", "spec.command", []),
    ("Sweep", "spec.objective.goal", "sideways"),
    ("Sweep", "spec.parameters", []),
    ("Sweep", "spec.trial.replicas", "two"),
    ("Project", "spec.members.0.role", "owner"),
    ("Project", "spec.members.0.kind", "Robot"),
    ("Project", "spec.displayName", "x" * 201),
]


@pytest.mark.parametrize("kind, path, value", LOOSE)
def test_crd_accepts_what_shipyard_accepts(kind, path, value):
    body = edit(example(kind).to_wire(), path, value)
    validate_document(Document("test", 1, body))
    assert crd_errors(body) == []


@pytest.mark.parametrize("kind, path, value", BAD)
def test_crd_refuses_bad_manifests(kind, path, value):
    body = edit(example(kind).to_wire(), path, value)
    with pytest.raises(ManifestError):
        validate_document(Document("test", 1, body))
    assert crd_errors(body), f"the CRD accepted {path}: {value!r}"


def test_secret_has_no_crd():
    assert "Secret" in ALL_KINDS and "Secret" not in CRDS
    assert "secrets.shipyard.dev" not in [c["metadata"]["name"] for c in all_crds()]


def test_crd_for_is_deterministic():
    cls = KINDS["Sweep"]
    assert crd_for(cls) == crd_for(cls) == CRDS["Sweep"]
