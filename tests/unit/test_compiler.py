"""The compiler: deterministic, schema-valid on two Kubernetes minors, and matching golden files."""

import json
import os
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from shipyard.compiler import RegistryModel, compile_resource
from shipyard.controllers.sweep.searchspace import assignment
from shipyard.controllers.sweep.substitute import trial_job
from shipyard.resources import (App, Endpoint, Project, Secret, ServingResource, Sweep, TrainingJob, Workspace,
                                 load_resources, parse_yaml)
from shipyard.resources.project import default_project

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
# The oldest minor we support and the newest the validator ships; both in strict mode.
KUBERNETES_VERSIONS = ["1.30", "1.37"]


def example_resources():
    out = []
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        for res in load_resources(parse_yaml(path.read_text(), str(path))):
            if isinstance(res, Sweep):
                # A Sweep compiles to nothing itself; what runs is its trials, checked through the first one.
                res = trial_job(res, 0, assignment(res.spec, 0))
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
    vllm = Endpoint.model_validate({
        "metadata": {"name": "chat", "namespace": "research", "uid": "0b7c6a3e-7777-2222-3333-444455556666",
                     "labels": {"team": "nlp"}},
        "spec": {"model": "/models/llama/v2", "engine": "vllm", "maxModelLen": 8192, "args": ["--dtype", "bfloat16"],
                 "replicas": {"min": 2, "max": 8},
                 "autoscaling": {"metric": "requestsPerSecond", "target": 2.5,
                                 "scaleDownStabilizationSeconds": 300},
                 "resources": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": 1},
                 "volumes": [{"name": "models", "mountPath": "/models", "size": "500Gi",
                              "accessMode": "ReadWriteOnce"}],
                 "readinessProbe": {"initialDelaySeconds": 30, "periodSeconds": 5},
                 "public": True,
                 "ingress": {"host": "chat.example.com", "className": "nginx", "tlsSecretName": "chat-tls"},
                 "terminationGracePeriodSeconds": 120, "drainSeconds": 5},
    })
    custom = Endpoint.model_validate({
        "metadata": {"name": "tgi", "uid": "0b7c6a3e-8888-2222-3333-444455556666"},
        "spec": {"model": "/models/m", "engine": "custom", "command": ["text-generation-launcher"],
                 "args": ["--model-id", "/models/m"], "port": 8080, "drainSeconds": 0, "image": "example/tgi:3",
                 "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}],
                 "volumes": [{"name": "models", "mountPath": "/models"}]},
    })
    streamlit = App.model_validate({
        "metadata": {"name": "dashboard", "uid": "0b7c6a3e-9999-2222-3333-444455556666",
                     "annotations": {"shipyard.dev/local-workdir": "/home/me/dash"}},
        "spec": {"command": ["streamlit", "run", "app.py"], "port": 8501, "workingDir": "/workspace",
                 "replicas": {"min": 0, "max": 2}, "autoscaling": {}, "scaleToZero": {"idleSeconds": 60},
                 "readinessProbe": {"path": "/_stcore/health"}},
    })
    registry = Endpoint.model_validate({
        "metadata": {"name": "champion", "namespace": "research", "uid": "0b7c6a3e-aaaa-2222-3333-444455556666"},
        "spec": {"model": "models:/lifecycle-lora@champion", "replicas": {"min": 1, "max": 2},
                 "autoscaling": {}, "volumes": [{"name": "cache", "mountPath": "/cache", "size": "1Gi"}]},
    })
    vscode = Workspace.model_validate({
        "metadata": {"name": "editor", "namespace": "research", "uid": "0b7c6a3e-bbbb-2222-3333-444455556666"},
        "spec": {"ide": "vscode", "resources": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": 1},
                 "volumes": [{"name": "data", "mountPath": "/data", "size": "1Ti", "accessMode": "ReadWriteOnce"}],
                 "env": [{"name": "HF_HOME", "value": "/data/hf"}], "homeSize": "50Gi", "idleTimeout": "2h",
                 "ingress": {"host": "ide.example.com", "className": "nginx"}},
    })
    # Issue 14: a user's Secret compiles to a native one; workloads reference its keys and never hold values.
    secret = Secret.model_validate({
        "metadata": {"name": "hub-token", "namespace": "research", "uid": "0b7c6a3e-cccc-2222-3333-444455556666",
                     "labels": {"team": "nlp"}},
        "spec": {"stringData": {"token": "hf_not-a-real-token", "user": "me@example.com"}},
    })
    with_secret = TrainingJob.model_validate({
        "metadata": {"name": "job-with-secret", "namespace": "research",
                     "uid": "0b7c6a3e-dddd-2222-3333-444455556666"},
        "spec": {"command": ["python", "train.py"],
                 "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hub-token", "key": "token"}}},
                         {"name": "PLAIN", "value": "1"}]},
    })
    # Issue 14: the project every install has (no members, no limits); examples/project.yaml is the full one.
    # Issue 14 item 6: a Secret mounted as files beside a persistent volume; only the latter gets a claim.
    with_secret_files = TrainingJob.model_validate({
        "metadata": {"name": "job-with-secret-files", "namespace": "research",
                     "uid": "0b7c6a3e-eeee-2222-3333-444455556666"},
        "spec": {"command": ["python", "train.py", "--credentials", "/etc/creds/hub/token"],
                 "volumes": [{"name": "data", "mountPath": "/data", "size": "1Gi"},
                             {"name": "creds", "mountPath": "/etc/creds",
                              "secret": {"secretName": "hub-token", "defaultMode": 0o440,
                                         "items": [{"key": "token", "path": "hub/token"},
                                                   {"key": "user", "path": "hub/user", "mode": 0o444}]}},
                             {"name": "all-keys", "mountPath": "/etc/all", "secret": {"secretName": "hub-token"}}]},
    })
    return [("gpu-job", base), ("endpoint-vllm", vllm), ("endpoint-custom", custom), ("app-streamlit", streamlit),
            ("endpoint-registry", registry), ("workspace-vscode", vscode), ("secret", secret),
            ("job-with-secret", with_secret), ("project-default", default_project()),
            ("job-with-secret-files", with_secret_files)]


CASES = example_resources() + variants()
# What the serving controller resolved a `models:/` reference to, for the cases that have one.
RESOLVED = {"endpoint-registry": {"model": RegistryModel(volume="lifecycle", path="/sweep/trial-2/merged", version=4)},
            "serve": {"model": RegistryModel(volume="lifecycle", path="/sweep/lifecycle-sweep-1/merged", version=1)}}


def compiled(name, resource, **kwargs):
    return compile_resource(resource, **RESOLVED.get(name, {}), **kwargs)


def validate(obj, version):
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid on {version}: {exc.message} at {list(exc.path)}")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name, resource", CASES, ids=[c[0] for c in CASES])
def test_every_object_validates(name, resource, version):
    if isinstance(resource, ServingResource):
        # Every scale the controller asks for: the defaults, idle at zero, waking up beside an HPA, fixed.
        scales = [{}, {"replicas": 0, "autoscale": False}, {"replicas": 3, "autoscale": False}]
        if resource.spec.autoscaling is not None:
            scales += [{"replicas": 1, "autoscale": True}, {"autoscale": True}]
        for kwargs in scales:
            for obj in compiled(name, resource, **kwargs):
                validate(obj, version)
        return
    for restart in (0, 2):
        for obj in compile_resource(resource, restart=restart):
            validate(obj, version)


@pytest.mark.parametrize("name, resource", CASES, ids=[c[0] for c in CASES])
def test_golden(name, resource):
    rendered = yaml.safe_dump_all(compiled(name, resource), sort_keys=False)
    golden = GOLDEN / f"{name}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert golden.exists(), f"run UPDATE_GOLDEN=1 pytest {__file__} to create {golden}"
    assert rendered == golden.read_text(), "compiled output changed; review and UPDATE_GOLDEN=1 if intended"


@pytest.mark.parametrize("name, resource", CASES, ids=[c[0] for c in CASES])
def test_deterministic(name, resource):
    assert json.dumps(compiled(name, resource)) == json.dumps(compiled(name, resource.model_copy(deep=True)))


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
    # A disrupted replica stops the gang too, by rule 0, which the controller recognises (and does not count).
    assert rules[0] == {"action": "FailJob", "onPodConditions": [{"status": "True", "type": "DisruptionTarget"}]}
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["metadata"]["ownerReferences"][0]["uid"] == res.metadata.uid


def test_restricted_security_context():
    for name, res in CASES:
        for obj in compiled(name, res):
            if obj["kind"] not in ("Job", "Deployment"):
                continue
            pod = obj["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            for c in pod["containers"]:
                sc = c["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]


def test_workload_pods_get_no_token_and_a_read_only_root_with_writable_scratch():
    """Issue 15: no service account token in any workload pod; a read-only root filesystem wherever the
    workload allows it, with emptyDirs for HOME (where caches go; the env says so) and /tmp."""
    from shipyard.compiler.common import SCRATCH_HOME

    seen = set()
    for name, res in CASES:
        for obj in compiled(name, res):
            if obj["kind"] not in ("Job", "Deployment", "StatefulSet"):
                continue
            pod = obj["spec"]["template"]["spec"]
            assert pod["automountServiceAccountToken"] is False, name
            [container] = pod["containers"]
            read_only = container["securityContext"].get("readOnlyRootFilesystem", False)
            custom = isinstance(res, Endpoint) and res.spec.engine == "custom"
            # A Workspace's IDE and a custom engine's server image stay writable (see workspace.py, serving.py).
            assert read_only is not (obj["kind"] == "StatefulSet" or custom), name
            seen.add((obj["kind"], read_only))
            if not read_only:
                continue
            volumes = {v["name"]: v for v in pod["volumes"]}
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            for path in (SCRATCH_HOME, "/tmp"):
                assert volumes[mounts[path]] == {"emptyDir": {}, "name": mounts[path]}, (name, path)
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert env["HOME"] == SCRATCH_HOME, name
    assert seen == {("Job", True), ("Deployment", True), ("Deployment", False), ("StatefulSet", False)}


def test_a_volume_of_the_specs_own_at_tmp_replaces_the_scratch_one():
    job = TrainingJob.model_validate({"metadata": {"name": "j"}, "spec": {
        "command": ["python", "t.py"], "env": [{"name": "HOME", "value": "/data/home"}],
        "volumes": [{"name": "scratch", "mountPath": "/tmp", "size": "100Gi"}]}})
    pod = next(o for o in compile_resource(job) if o["kind"] == "Job")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert [m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/tmp"] == ["scratch"]
    assert [v["name"] for v in pod["volumes"] if "emptyDir" in v] == ["dshm", "shipyard-home"]
    assert [e["value"] for e in container["env"] if e["name"] == "HOME"] == ["/data/home"]  # the spec's wins


def test_volumes_are_project_claims_without_owner():
    _, res = variants()[0]
    [pvc] = [o for o in compile_resource(res) if o["kind"] == "PersistentVolumeClaim"]
    assert pvc["metadata"]["name"] == "data" and "ownerReferences" not in pvc["metadata"]
    assert pvc["spec"]["storageClassName"] == "fast"


def by_kind(objs):
    return {o["kind"]: o for o in objs}


def serving(name):
    return next(res for n, res in CASES if n == name)


def test_serving_scale_owner():
    ep = serving("endpoint")  # min 1, max 3, autoscaling: an HPA owns the count
    objs = by_kind(compile_resource(ep))
    assert "replicas" not in objs["Deployment"]["spec"]
    hpa = objs["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 3)
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "lifecycle"}
    assert hpa["metrics"][0]["pods"] == {"metric": {"name": "shipyard_gateway_upstream_in_flight"},
                                         "target": {"averageValue": "4", "type": "AverageValue"}}
    assert hpa["behavior"]["scaleDown"] == {"stabilizationWindowSeconds": 60}
    idle = by_kind(compile_resource(ep, replicas=0, autoscale=False))
    assert idle["Deployment"]["spec"]["replicas"] == 0 and "HorizontalPodAutoscaler" not in idle
    # Waking from zero beside an HPA: the count is written, since an HPA never scales up from zero.
    waking = by_kind(compile_resource(ep, replicas=1, autoscale=True))
    assert waking["Deployment"]["spec"]["replicas"] == 1 and "HorizontalPodAutoscaler" in waking
    fixed = by_kind(compile_resource(serving("endpoint-custom")))
    assert fixed["Deployment"]["spec"]["replicas"] == 1 and "HorizontalPodAutoscaler" not in fixed


def test_serving_rps_target_is_a_quantity():
    hpa = by_kind(compile_resource(serving("endpoint-vllm")))["HorizontalPodAutoscaler"]["spec"]
    assert hpa["minReplicas"] == 2
    assert hpa["metrics"][0]["pods"]["metric"]["name"] == "shipyard_gateway_upstream_requests_per_second"
    assert hpa["metrics"][0]["pods"]["target"]["averageValue"] == "2500m"


def test_serving_rollout_and_drain():
    ep = serving("endpoint")
    deploy = by_kind(compile_resource(ep))["Deployment"]["spec"]
    assert deploy["strategy"] == {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}, "type": "RollingUpdate"}
    pod = deploy["template"]["spec"]
    [c] = pod["containers"]
    assert c["name"] == "server" and c["ports"] == [{"containerPort": 8000, "name": "http", "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["lifecycle"] == {"preStop": {"sleep": {"seconds": 2}}}
    assert pod["terminationGracePeriodSeconds"] == 30
    assert c["resources"]["limits"] == c["resources"]["requests"]
    assert deploy["template"]["metadata"]["labels"]["shipyard.dev/name"] == "lifecycle"
    assert deploy["selector"]["matchLabels"] == {"shipyard.dev/kind": "endpoint", "shipyard.dev/name": "lifecycle"}
    custom = by_kind(compile_resource(serving("endpoint-custom")))["Deployment"]
    assert "lifecycle" not in custom["spec"]["template"]["spec"]["containers"][0]  # drainSeconds: 0


def test_endpoint_engines():
    def argv(name):
        c = by_kind(compile_resource(serving(name)))["Deployment"]["spec"]["template"]["spec"]["containers"][0]
        return c["command"] + c.get("args", []), {e["name"]: e.get("value") for e in c["env"]}

    builtin, env = argv("endpoint")
    assert builtin == ["python", "-m", "shipyard.workloads.serve", "/lifecycle/finetune/merged",
                       "--served-model-name", "lifecycle", "--host", "0.0.0.0", "--port", "$(PORT)"]
    assert env["PORT"] == "8000"
    vllm, _ = argv("endpoint-vllm")
    assert vllm[:3] == ["vllm", "serve", "/models/llama/v2"]
    assert vllm[3:] == ["--served-model-name", "chat", "--host", "0.0.0.0", "--port", "$(PORT)",
                        "--max-model-len", "8192", "--dtype", "bfloat16"]
    custom, env = argv("endpoint-custom")
    assert custom == ["text-generation-launcher", "--model-id", "/models/m"]
    assert env["PORT"] == "8080" and env["HF_HUB_OFFLINE"] == "1"
    app, env = argv("playground-app")
    assert app == ["python", "-m", "shipyard.workloads.playground"] and env["PORT"] == "7860"


def test_serving_exposure():
    private = by_kind(compile_resource(serving("endpoint")))
    assert "Ingress" not in private and "PodDisruptionBudget" not in private
    svc = private["Service"]["spec"]
    assert svc["type"] == "ClusterIP"
    assert svc["ports"] == [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]
    [rule] = private["NetworkPolicy"]["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"shipyard.dev/system": "true"}},
                             "podSelector": {"matchLabels": {"app.kubernetes.io/component": "gateway",
                                                             "app.kubernetes.io/name": "shipyard"}}}]
    public = by_kind(compile_resource(serving("endpoint-vllm")))
    assert public["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    peers = public["NetworkPolicy"]["spec"]["ingress"][0]["from"]
    assert peers[1] == {"namespaceSelector": {"matchLabels": {"shipyard.dev/ingress-controller": "true"}}}
    ing = public["Ingress"]["spec"]
    assert ing["ingressClassName"] == "nginx"
    assert ing["tls"] == [{"hosts": ["chat.example.com"], "secretName": "chat-tls"}]
    path = ing["rules"][0]["http"]["paths"][0]
    assert path["backend"] == {"service": {"name": "chat", "port": {"name": "http"}}}


def test_serving_objects_are_owned_and_share_volumes_with_jobs():
    objs = compile_resource(serving("endpoint-vllm"))
    for obj in objs:
        if obj["kind"] == "PersistentVolumeClaim":
            assert "ownerReferences" not in obj["metadata"]
        else:
            assert obj["metadata"]["ownerReferences"][0]["kind"] == "Endpoint"
    [pvc] = [o for o in compile_resource(serving("endpoint")) if o["kind"] == "PersistentVolumeClaim"]
    job_pvc = next(o for n, r in CASES if n == "finetune" for o in compile_resource(r)
                   if o["kind"] == "PersistentVolumeClaim")
    assert pvc == job_pvc  # the endpoint applies the very claim the fine-tuning job wrote the model to


def test_registry_model_is_mounted_read_only_and_served_from_there():
    ep = serving("endpoint-registry")
    objs = by_kind(compiled("endpoint-registry", ep))
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert c["args"][0] == "/models/registry/sweep/trial-2/merged"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["SHIPYARD_MODEL"] == "/models/registry/sweep/trial-2/merged"
    assert (env["SHIPYARD_MODEL_URI"], env["SHIPYARD_MODEL_VERSION"]) == ("models:/lifecycle-lora@champion", "4")
    assert {"mountPath": "/models/registry", "name": "lifecycle", "readOnly": True} in c["volumeMounts"]
    assert {"name": "lifecycle", "persistentVolumeClaim": {"claimName": "lifecycle"}} in pod["volumes"]
    # The model's volume is the job's: no claim is compiled for it (its size and class are the job's), only the
    # Endpoint's own volumes get one.
    claims = [o["metadata"]["name"] for o in compiled("endpoint-registry", ep)
              if o["kind"] == "PersistentVolumeClaim"]
    assert claims == ["cache"]


def test_registry_model_volume_already_in_the_spec_is_mounted_twice_not_declared_twice():
    ep = Endpoint.model_validate({"metadata": {"name": "chat"}, "spec": {
        "model": "models:/chat/2", "volumes": [{"name": "lifecycle", "mountPath": "/lifecycle"}]}})
    deploy = by_kind(compile_resource(ep, model=RegistryModel("lifecycle", "/", 2)))["Deployment"]
    pod = deploy["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["lifecycle", "shipyard-home", "shipyard-tmp"]
    assert [m["mountPath"] for m in pod["containers"][0]["volumeMounts"]] == [
        "/lifecycle", "/models/registry", "/home/shipyard", "/tmp"]
    assert pod["containers"][0]["args"][0] == "/models/registry"


def test_a_new_version_changes_the_pod_template_and_an_unresolved_reference_does_not_compile():
    ep = serving("endpoint-registry")

    def template(version, path):
        deploy = by_kind(compile_resource(ep, model=RegistryModel("lifecycle", path, version)))["Deployment"]
        return deploy["spec"]["template"]

    assert template(4, "/m") != template(5, "/m")  # same files re-registered: still a rollout to the new version
    assert template(4, "/m") != template(4, "/n")
    with pytest.raises(ValueError, match="model registry reference"):
        compile_resource(ep)


def test_gang_admits_ingress_only_from_its_own_pods():
    for name, res in CASES:
        if not isinstance(res, TrainingJob):
            continue
        objs = compile_resource(res)
        policy = by_kind(objs)["NetworkPolicy"]
        gang = {"matchLabels": {"shipyard.dev/kind": "trainingjob", "shipyard.dev/name": res.metadata.name}}
        assert policy["spec"] == {"ingress": [{"from": [{"podSelector": gang}]}], "podSelector": gang,
                                  "policyTypes": ["Ingress"]}, name
        if res.metadata.uid:  # owned, so the garbage collector removes it with the TrainingJob
            assert policy["metadata"]["ownerReferences"][0]["kind"] == "TrainingJob"
        pod_labels = by_kind(objs)["Job"]["spec"]["template"]["metadata"]["labels"]
        assert gang["matchLabels"].items() <= pod_labels.items()  # every attempt's pods are selected


def test_gang_leaves_a_lost_node_sooner_than_the_default_five_minutes():
    _, res = variants()[0]
    pod = by_kind(compile_resource(res))["Job"]["spec"]["template"]["spec"]
    assert {(t["key"], t["effect"], t["tolerationSeconds"]) for t in pod["tolerations"]} == {
        ("node.kubernetes.io/not-ready", "NoExecute", 60), ("node.kubernetes.io/unreachable", "NoExecute", 60)}


def test_secret_compiles_to_a_native_secret_and_references_pass_through():
    secret = next(r for n, r in CASES if n == "secret")
    (native,) = compile_resource(secret)
    assert native["kind"] == "Secret" and native["type"] == "Opaque" and "stringData" not in native
    assert native["data"] == {"token": "aGZfbm90LWEtcmVhbC10b2tlbg==", "user": "bWVAZXhhbXBsZS5jb20="}
    assert native["metadata"]["ownerReferences"][0]["kind"] == "Secret"
    assert native["metadata"]["labels"]["shipyard.dev/kind"] == "secret"
    job = next(r for n, r in CASES if n == "job-with-secret")
    env = env_of(compile_resource(job))
    assert env["HF_TOKEN"] == {"secretKeyRef": {"key": "token", "name": "hub-token"}}
    assert "hf_not-a-real-token" not in json.dumps(compile_resource(job))


def test_project_compiles_to_its_namespace_members_policies_and_limits():
    project = next(r for n, r in CASES if n == "project")  # examples/project.yaml
    objs = compile_resource(project)
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("Namespace", "research"),
        ("RoleBinding", "member-user-alice-at-example.com"), ("RoleBinding", "member-group-oidc-research"),
        ("RoleBinding", "member-serviceaccount-ci"),
        ("NetworkPolicy", "default-deny-ingress"), ("NetworkPolicy", "allow-gateway-to-serving"),
        ("LimitRange", "defaults"), ("ResourceQuota", "quota")]
    ns, *rest = objs
    assert "namespace" not in ns["metadata"] and "ownerReferences" not in ns["metadata"]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert ns["metadata"]["annotations"]["shipyard.dev/display-name"] == "Research"
    assert all(o["metadata"]["namespace"] == "research" for o in rest)
    bindings = {o["subjects"][0]["kind"]: o for o in rest if o["kind"] == "RoleBinding"}
    assert bindings["User"]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                           "name": "admin"}
    assert bindings["Group"]["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                                              "name": "oidc:research"}]
    assert bindings["ServiceAccount"]["subjects"] == [{"kind": "ServiceAccount", "name": "ci",
                                                       "namespace": "research"}]
    assert all(b["metadata"]["labels"]["shipyard.dev/member"] == "true" for b in bindings.values())
    from shipyard.rbac import validate_object

    for binding in bindings.values():
        validate_object(binding)  # what the local store accepts, too
    deny = next(o for o in rest if o["metadata"]["name"] == "default-deny-ingress")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    [limit] = next(o for o in rest if o["kind"] == "LimitRange")["spec"]["limits"]
    assert limit == {"default": {"cpu": "2", "memory": "4Gi"}, "defaultRequest": {"cpu": "250m", "memory": "512Mi"},
                     "type": "Container"}
    [limit] = compile_resource(default_project())[-1]["spec"]["limits"]
    assert "default" not in limit and limit["defaultRequest"] == {"cpu": "100m", "memory": "256Mi"}
    quota = next(o for o in rest if o["kind"] == "ResourceQuota")
    assert quota["spec"]["hard"] == {"limits.memory": "512Gi", "persistentvolumeclaims": "20", "pods": "100",
                                     "requests.cpu": "64", "requests.memory": "256Gi",
                                     "requests.nvidia.com/gpu": "8", "requests.storage": "2Ti"}
    # No quota unless the project asks for one.
    assert not any(o["kind"] == "ResourceQuota" for o in compile_resource(default_project()))


def test_project_default_deny_leaves_every_workloads_own_admission_in_place():
    """NetworkPolicies are additive: under the project's default deny, each workload's own policy still admits
    what it needs (the gang its own pods, serving pods the gateway), and the project admits the gateway to
    serving pods on the port their own policies name."""
    from shipyard.compiler.common import GATEWAY_POD_LABELS
    from shipyard.compiler.serving import PORT_NAME

    project = next(r for n, r in CASES if n == "project")
    allow = next(o for o in compile_resource(project) if o["metadata"]["name"] == "allow-gateway-to-serving")
    [rule] = allow["spec"]["ingress"]
    assert rule["ports"] == [{"port": PORT_NAME, "protocol": "TCP"}]
    assert rule["from"][0]["podSelector"]["matchLabels"] == GATEWAY_POD_LABELS
    [expr] = allow["spec"]["podSelector"]["matchExpressions"]
    assert (expr["key"], expr["operator"], sorted(expr["values"])) == ("shipyard.dev/kind", "In", ["app", "endpoint"])
    assert not any(o["spec"].get("ingress") == [{}] for o in compile_resource(project) if o["kind"] == "NetworkPolicy")
    for name, resource in CASES:
        if isinstance(resource, (TrainingJob, ServingResource, Workspace)):
            policies = [o for o in compiled(name, resource) if o["kind"] == "NetworkPolicy"]
            assert policies and all(p["spec"]["ingress"] for p in policies), name


def test_member_binding_names_are_valid_and_distinct():
    from shipyard.compiler import member_binding_name
    from shipyard.rbac.authorizer import _DNS_SUBDOMAIN

    assert member_binding_name("User", "alice@example.com") == "member-user-alice-at-example.com"
    assert member_binding_name("Group", "system:authenticated") == "member-group-system-authenticated"
    odd = ["Alice", "alice", "a..b", "a_b", ":x:", "x" * 200, "ä@" + "y" * 199]
    names = [member_binding_name("User", n) for n in odd]
    assert len(set(names)) == len(names)
    assert all(len(n) <= 253 and _DNS_SUBDOMAIN.match(n) for n in names), names
    # Names that still map to one binding name are told apart within a project.
    project = Project.model_validate({"metadata": {"name": "team"}, "spec": {"members": [
        {"kind": "User", "name": "oidc:alice"}, {"kind": "User", "name": "oidc-alice"},
        {"kind": "Group", "name": "oidc:alice"}]}})
    bindings = [o["metadata"]["name"] for o in compile_resource(project) if o["kind"] == "RoleBinding"]
    assert len(set(bindings)) == 3 and bindings[2] == "member-group-oidc-alice"
    assert all(b.startswith("member-user-oidc-alice-") for b in bindings[:2])


def test_project_labels_cannot_loosen_pod_security():
    project = Project.model_validate({"metadata": {"name": "team", "labels": {
        "pod-security.kubernetes.io/enforce": "privileged", "team": "a"}}})
    labels = compile_resource(project)[0]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted" and labels["team"] == "a"
