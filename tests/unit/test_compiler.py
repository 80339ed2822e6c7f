"""The compiler: deterministic, schema-valid on two Kubernetes minors, and matching golden files."""

import json
import os
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from shipyard.compiler import compile_resource
from shipyard.resources import TrainingJob, load_resources, parse_yaml

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
# The oldest minor we support and the newest the validator ships; both in strict mode.
KUBERNETES_VERSIONS = ["1.30", "1.37"]


def example_resources():
    out = []
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        for res in load_resources(parse_yaml(path.read_text(), str(path))):
            out.append((path.stem, res))
    return out


def variants():
    base = TrainingJob.model_validate({
        "metadata": {"name": "gpu-job", "namespace": "research", "uid": "0b7c6a3e-1111-2222-3333-444455556666",
                     "annotations": {"shipyard.dev/local-workdir": "/home/me/project"}},
        "spec": {"replicas": 4, "procsPerReplica": 8, "command": ["torchrun", "train.py"],
                 "env": [{"name": "OMP_NUM_THREADS", "value": "4"}],
                 "resources": {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": 8},
                 "volumes": [{"name": "data", "mountPath": "/data", "size": "1Ti", "accessMode": "ReadWriteOnce",
                              "storageClassName": "fast"}],
                 "activeDeadlineSeconds": 86400, "workingDir": "/workspace"},
    })
    return [("gpu-job", base)]


CASES = example_resources() + variants()


def validate(obj, version):
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid on {version}: {exc.message} at {list(exc.path)}")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name, resource", CASES, ids=[c[0] for c in CASES])
def test_every_object_validates(name, resource, version):
    for restart in (0, 2):
        for obj in compile_resource(resource, restart=restart):
            validate(obj, version)


@pytest.mark.parametrize("name, resource", CASES, ids=[c[0] for c in CASES])
def test_golden(name, resource):
    rendered = yaml.safe_dump_all(compile_resource(resource), sort_keys=False)
    golden = GOLDEN / f"{name}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert golden.exists(), f"run UPDATE_GOLDEN=1 pytest {__file__} to create {golden}"
    assert rendered == golden.read_text(), "compiled output changed; review and UPDATE_GOLDEN=1 if intended"


def test_deterministic():
    _, res = CASES[-1]
    assert json.dumps(compile_resource(res)) == json.dumps(compile_resource(res.model_copy(deep=True)))


def env_of(objs):
    job = next(o for o in objs if o["kind"] == "Job")
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_distributed_contract():
    _, res = variants()[0]
    env = env_of(compile_resource(res, restart=2))
    assert env["PET_NNODES"] == "4" and env["PET_NPROC_PER_NODE"] == "8"
    assert env["WORLD_SIZE"] == "32"
    assert env["PET_MASTER_ADDR"] == env["MASTER_ADDR"] == "gpu-job-0.gpu-job"
    assert env["PET_MASTER_PORT"] == env["MASTER_PORT"] == "29500"
    assert env["PET_NODE_RANK"]["fieldRef"]["fieldPath"].endswith("['batch.kubernetes.io/job-completion-index']")
    assert env["SHIPYARD_RESTART_COUNT"] == "2"
    assert env["OMP_NUM_THREADS"] == "4"  # the user's value wins over the platform's


def test_gang_fails_on_first_failed_pod():
    _, res = variants()[0]
    job = next(o for o in compile_resource(res) if o["kind"] == "Job")
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 4
    assert job["spec"]["backoffLimit"] == 0
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert {"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [0]}} in rules
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["metadata"]["ownerReferences"][0]["uid"] == res.metadata.uid


def test_restricted_security_context():
    for _, res in CASES:
        for obj in compile_resource(res):
            if obj["kind"] != "Job":
                continue
            pod = obj["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            for c in pod["containers"]:
                sc = c["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]


def test_volumes_are_project_claims_without_owner():
    _, res = variants()[0]
    [pvc] = [o for o in compile_resource(res) if o["kind"] == "PersistentVolumeClaim"]
    assert pvc["metadata"]["name"] == "data" and "ownerReferences" not in pvc["metadata"]
    assert pvc["spec"]["storageClassName"] == "fast"
