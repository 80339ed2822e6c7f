"""Kueue v0.19.2 for real on a test ControlPlane (tests/k8s/controlplane.py): its CRDs, RBAC and webhook
configurations from the Go module's own `config/components`, and its controller manager (`kueue`, built by
scripts/k8s-bin.sh) as a process on loopback.

    kueue = start_kueue(control_plane)   # 5-9 s; raises with the log tail when Kueue does not come up
    ...
    kueue.stop()                         # removes the webhook configurations, then stops the process

Why a real Kueue rather than a fake: Shipyard's TrainingJobs hand their queueing to Kueue on a cluster (the
`kueue.x-k8s.io/queue-name` label copied to the Job, docs/cluster.md); only the real one proves that a Job we
compile is admitted, held and released the way Kueue really does it.

What is installed, and what differs from the stock install (`config/default`, i.e. kustomize with
`namespace: kueue-system`, `namePrefix: kueue-`) — everything else is the module's files as they are:

- CRDs: `config/components/crd/bases/*.yaml` (byte-identical to /work/shared/k8s-schemas/kueue-v0.19.2/),
  server-side applied, with the conversion-webhook patches the stock `crd/kustomization.yaml` applies
  (`patches/webhook_in_*.yaml`: localqueues, clusterqueues, cohorts, workloads, multikueueclusters), whose
  `clientConfig.service` becomes `url: https://127.0.0.1:PORT/convert` plus `caBundle`. Without those patches
  a v1beta1 read of a v1beta2 object would get the API server's lossy `None` conversion instead of Kueue's.
- RBAC: `rbac/service_account.yaml`, `role.yaml`, `role_binding.yaml`, `manager_secrets_role.yaml` and
  `manager_secrets_role_binding.yaml` with kustomize's prefix and namespace (ServiceAccount
  kueue-system/kueue-controller-manager, ClusterRole `kueue-manager-role`, Role `kueue-manager-secrets-role`,
  their bindings; the role's webhook-configuration `resourceNames` prefixed as
  `default/webhook_name_reference.yaml` does). Kueue authenticates as that ServiceAccount with a token from the
  TokenRequest API, so it gets exactly the stock roles, no more: the admin's `system:masters` would hide a
  missing permission (the Secrets Role is one: MultiKueue, on by default, watches Secrets in kueue-system, and
  without it Kueue's controllers never start). Not installed: the leader-election Role (leader election is off),
  the metrics/visibility roles and the user-facing editor/viewer roles.
- Webhooks: `webhook/manifests.yaml` with
  * names prefixed `kueue-` (as kustomize does);
  * each `clientConfig.service` replaced by `url: https://127.0.0.1:PORT/PATH` plus `caBundle` (the ControlPlane's
    CA, which issued Kueue's serving certificate for 127.0.0.1): the API server reaches Kueue on loopback,
    there is no Service or kube-proxy;
  * the `namespaceSelector` (NotIn kube-system, kueue-system) that the stock `webhook/kustomization.yaml`
    puts on every job-framework webhook, read from that file;
  * only the webhooks for Kueue's own kinds and for the enabled frameworks (`batch/job`): mclusterqueue,
    mresourceflavor, mworkload, mjob, vclusterqueue, vcohort, vresourceflavor, vworkload, vjob. The stock file
    also registers the other frameworks (pod, deployment, statefulset, ray, kubeflow, jobset, ...); with those
    frameworks disabled Kueue answers them with a no-op webhook, so dropping them changes no admission
    decision, but with `failurePolicy: Fail` the pod/deployment/statefulset ones would make every Pod,
    Deployment and StatefulSet create outside kube-system/kueue-system fail whenever Kueue is not answering
    (start-up, after `stop()`, a crash) on a control plane other tests share, and add a TLS round trip to each.
- Configuration: the stock `manager/controller_manager_config.yaml` with
  * `webhook: {host: 127.0.0.1, port: free, certDir: ...}` holding tls.crt/tls.key issued by the ControlPlane's CA;
  * `internalCertManagement.enable: false`: its cert rotator would generate its own CA for the Service DNS
    name, write a Secret in kueue-system and rewrite the webhook configurations' and CRDs' caBundle;
  * `health.healthProbeBindAddress: 127.0.0.1:free`, `metrics.bindAddress: "0"` (metrics off: nothing scrapes
    them here, and the secure metrics server would need TokenReview/SubjectAccessReview wiring);
  * `leaderElection.leaderElect: false` (one replica; no Lease round trips);
  * `namespace: kueue-system` (not read from a pod's service-account mount);
  * `manageJobsWithoutQueueName: false` (only Jobs labelled with a queue are Kueue's);
  * `integrations.frameworks: ["batch/job"]`: Shipyard compiles TrainingJobs into batch/v1 Jobs and queues
    nothing else; the other frameworks' CRDs do not exist here (Kueue would poll discovery for them), and the
    pod/deployment/statefulset integrations would put Kueue in the path of pods it never manages;
  * `featureGates: {VisibilityOnDemand: false}`: the on-demand visibility API is an aggregated API server that
    binds 0.0.0.0:8082 and reads its certificate from the absolute path /visibility; Shipyard does not use it.
- The process: Kueue v0.19.2 with internal cert management off reads a metrics certificate from the hard-coded
  path /etc/kueue/metrics/certs/tls.{crt,key} (cmd/kueue/main.go) and exits without it, even with metrics off.
  Rather than write to the host's /etc, Kueue runs in a private mount namespace (`unshare --mount`, or
  `unshare --user --map-root-user --mount` when not root) where a tmpfs-backed overlay on /etc holds that
  certificate; only the Kueue process sees it. Where mount namespaces are not allowed, a certificate already at
  that path is used; otherwise start_kueue raises KueueUnsupported, which the tests turn into a skip.

What this never does: touch anything outside the control plane's work directory on the host, or leave a process
running after `stop()`. `stop()` deletes the webhook configurations before stopping the process, so the control
plane stays usable (Jobs can be created) after Kueue is gone; the CRDs stay (a v1beta1 read of the converted
kinds then fails, as on a cluster whose Kueue is down), and Workloads keep Kueue's finalizer.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
import yaml

from .controlplane import Component, ControlPlane, User, binaries, free_port

KUEUE_VERSION = "v0.19.2"
NAMESPACE = "kueue-system"
PREFIX = "kueue-"  # config/default/kustomization.yaml: namePrefix
SERVICE_ACCOUNT = f"{PREFIX}controller-manager"
USERNAME = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
MUTATING = f"{PREFIX}mutating-webhook-configuration"
VALIDATING = f"{PREFIX}validating-webhook-configuration"
FIELD_MANAGER = "shipyard-test"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# Frameworks Kueue manages here, and the (API group, resource) of each one's webhooks.
FRAMEWORKS = {"batch/job": ("batch", "jobs")}
METRICS_CERT_DIR = Path("/etc/kueue/metrics/certs")  # hard-coded in cmd/kueue/main.go


class KueueUnsupported(RuntimeError):
    """This machine cannot run Kueue as configured here (no Go to build it, no mount namespaces)."""


# --- the module's source ----------------------------------------------------------------------------------------

def source(version: str = KUEUE_VERSION) -> Path:
    """The Go module's directory (downloaded by scripts/k8s-bin.sh when it builds the `kueue` binary)."""
    try:
        modcache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True,
                                  check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise KueueUnsupported(f"cannot locate the Go module cache: {exc}") from exc
    path = Path(modcache) / "sigs.k8s.io" / f"kueue@{version}"
    if not (path / "config" / "components").is_dir():
        raise KueueUnsupported(f"{path} is missing: run scripts/k8s-bin.sh")
    return path


# libyaml where PyYAML has it: the Workload CRD is 1.4 MB of YAML, 4 s to parse in pure Python, 0.4 s with it.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.load_all(path.read_text(), Loader=_LOADER) if doc]


def _client_config(url: str, ca_pem: bytes) -> dict[str, str]:
    return {"url": url, "caBundle": base64.b64encode(ca_pem).decode()}


def crds(src: Path, webhook_url: str, ca_pem: bytes) -> list[dict[str, Any]]:
    """The CRDs with the stock conversion-webhook patches (crd/kustomization.yaml), pointed at `webhook_url`."""
    components = src / "config" / "components" / "crd"
    objects = {doc["metadata"]["name"]: doc
               for path in sorted((components / "bases").glob("*.yaml")) for doc in _yaml_docs(path)}
    kustomization = yaml.safe_load((components / "kustomization.yaml").read_text())
    for patch in kustomization.get("patches", []):
        if not Path(patch["path"]).name.startswith("webhook_in_"):
            continue
        (doc,) = _yaml_docs(components / patch["path"])
        conversion = doc["spec"]["conversion"]
        service = conversion["webhook"]["clientConfig"]["service"]
        conversion["webhook"]["clientConfig"] = _client_config(webhook_url + service["path"], ca_pem)
        objects[doc["metadata"]["name"]]["spec"]["conversion"] = conversion
    return list(objects.values())


RBAC_FILES = ["service_account.yaml", "role.yaml", "role_binding.yaml",
              "manager_secrets_role.yaml", "manager_secrets_role_binding.yaml"]


def rbac(src: Path) -> list[dict[str, Any]]:
    """Kueue's ServiceAccount and the manager's roles and bindings, as kustomize renders them (prefix, namespace)."""
    objects = [doc for name in RBAC_FILES for doc in _yaml_docs(src / "config" / "components" / "rbac" / name)]
    webhook_configurations = {"mutating-webhook-configuration", "validating-webhook-configuration"}
    for obj in objects:
        obj["metadata"]["name"] = PREFIX + obj["metadata"]["name"]
        if "namespace" in obj["metadata"] or obj["kind"] == "ServiceAccount":
            obj["metadata"]["namespace"] = NAMESPACE
        for rule in obj.get("rules", []):
            if "resourceNames" in rule:
                rule["resourceNames"] = [PREFIX + n if n in webhook_configurations else n
                                         for n in rule["resourceNames"]]
        if "roleRef" in obj:
            obj["roleRef"]["name"] = PREFIX + obj["roleRef"]["name"]
            obj["subjects"] = [{**s, "name": PREFIX + s["name"], "namespace": NAMESPACE} for s in obj["subjects"]]
    return objects


def webhook_configurations(src: Path, webhook_url: str, ca_pem: bytes,
                           frameworks: dict[str, tuple[str, str]] = FRAMEWORKS) -> list[dict[str, Any]]:
    """The stock webhook configurations, changed as the module docstring says."""
    components = src / "config" / "components" / "webhook"
    kustomization = yaml.safe_load((components / "kustomization.yaml").read_text())
    # The kustomization patches vpod.kb.io's namespaceSelector and copies it to every framework webhook.
    (patch,) = [yaml.safe_load(p["patch"]) for p in kustomization["patches"]]
    selector = patch["webhooks"][0]["namespaceSelector"]
    selected = {patch["webhooks"][0]["name"]}
    for replacement in kustomization.get("replacements", []):
        for target in replacement["targets"]:
            for path in target["fieldPaths"]:
                selected.update(re.findall(r"\[name=([^\]]+)\]", path))
    # Kueue's own kinds (every resource of its group) and the enabled frameworks' (group, resource).
    wanted = {("kueue.x-k8s.io", "*"), *frameworks.values()}
    configurations = []
    for doc in _yaml_docs(components / "manifests.yaml"):
        doc["metadata"]["name"] = PREFIX + doc["metadata"]["name"]
        kept = []
        for webhook in doc["webhooks"]:
            if not any({(group, resource), (group, "*")} & wanted
                       for rule in webhook["rules"] for group in rule["apiGroups"] for resource in rule["resources"]):
                continue
            service = webhook["clientConfig"]["service"]
            webhook["clientConfig"] = _client_config(webhook_url + service["path"], ca_pem)
            if webhook["name"] in selected:
                webhook["namespaceSelector"] = selector
            kept.append(webhook)
        doc["webhooks"] = kept
        configurations.append(doc)
    return configurations


def configuration(src: Path, webhook_port: int, cert_dir: Path, health_port: int,
                  frameworks: list[str] = list(FRAMEWORKS)) -> dict[str, Any]:
    """The stock controller_manager_config.yaml, changed as the module docstring says."""
    config = yaml.safe_load((src / "config" / "components" / "manager" / "controller_manager_config.yaml").read_text())
    config["namespace"] = NAMESPACE
    config["health"] = {**config.get("health", {}), "healthProbeBindAddress": f"127.0.0.1:{health_port}"}
    config["metrics"] = {**config.get("metrics", {}), "bindAddress": "0"}
    config["webhook"] = {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)}
    config["leaderElection"] = {**config.get("leaderElection", {}), "leaderElect": False}
    config["internalCertManagement"] = {"enable": False}
    config["manageJobsWithoutQueueName"] = False
    config["integrations"] = {**config.get("integrations", {}), "frameworks": list(frameworks)}
    config["featureGates"] = {**config.get("featureGates", {}), "VisibilityOnDemand": False}
    return config


# --- a small API client -----------------------------------------------------------------------------------------

class ApiError(RuntimeError):
    def __init__(self, status: int, body: Any):
        self.status, self.body = status, body
        message = body.get("message", body) if isinstance(body, dict) else body
        super().__init__(f"HTTP {status}: {message}")


class Api:
    """JSON over HTTPS to the ControlPlane's API server with one bearer token; enough for these tests."""

    def __init__(self, server: str, token: str, cafile: Path, timeout: float = 30.0):
        self.http = httpx.Client(base_url=server, verify=ssl.create_default_context(cafile=str(cafile)),
                                 headers={"Authorization": f"Bearer {token}"}, timeout=timeout)

    @classmethod
    def admin(cls, control_plane: ControlPlane) -> "Api":
        return cls(control_plane.server, control_plane.admin.token, control_plane.pki / "ca.crt")

    @staticmethod
    def path(api_version: str, plural: str, name: str | None = None, namespace: str | None = None,
             subresource: str | None = None) -> str:
        base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        parts = [base] + ([f"namespaces/{namespace}"] if namespace else []) + [plural]
        return "/".join(parts + [p for p in (name, subresource) if p])

    def request(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None,
                content_type: str = "application/json") -> Any:
        response = self.http.request(method, path, params=params,
                                     content=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": content_type})
        try:
            data = response.json()
        except ValueError:
            data = response.text
        if response.status_code >= 400:
            raise ApiError(response.status_code, data)
        return data

    def get(self, path: str) -> Any:
        try:
            return self.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, path: str, obj: dict[str, Any], dry_run: bool = False) -> Any:
        return self.request("POST", path, obj, params={"dryRun": "All"} if dry_run else None)

    def apply(self, path: str, obj: dict[str, Any]) -> Any:
        """Server-side apply, forcing ownership (these objects are ours; a rerun on the same cluster re-applies)."""
        return self.request("PATCH", path, obj, params={"fieldManager": FIELD_MANAGER, "force": "true"},
                            content_type="application/apply-patch+yaml")

    def delete(self, path: str, propagation: str = "Background") -> None:
        try:
            self.request("DELETE", path, {"kind": "DeleteOptions", "apiVersion": "v1",
                                          "propagationPolicy": propagation})
        except ApiError as exc:
            if exc.status != 404:
                raise

    def close(self) -> None:
        self.http.close()


_PLURALS = {"Namespace": "namespaces", "ServiceAccount": "serviceaccounts", "ClusterRole": "clusterroles",
            "ClusterRoleBinding": "clusterrolebindings", "Role": "roles", "RoleBinding": "rolebindings",
            "CustomResourceDefinition": "customresourcedefinitions",
            "MutatingWebhookConfiguration": "mutatingwebhookconfigurations",
            "ValidatingWebhookConfiguration": "validatingwebhookconfigurations"}


def _apply(api: Api, obj: dict[str, Any]) -> Any:
    meta = obj["metadata"]
    return api.apply(Api.path(obj["apiVersion"], _PLURALS[obj["kind"]], meta["name"], meta.get("namespace")), obj)


# --- the mount namespace for the metrics certificate ------------------------------------------------------------

# Runs in the new mount namespace: an overlay on /etc whose writable layer is a private tmpfs, the certificate
# copied into it, then Kueue in place of the shell (same pid, so stopping the process group stops Kueue).
_WRAPPER = r"""set -eu
scratch=$1; certs=$2; shift 2
mount -t tmpfs -o mode=0700 shipyard-kueue "$scratch"
mkdir "$scratch/upper" "$scratch/work"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$scratch/upper,workdir=$scratch/work" /etc
mkdir -p /etc/kueue/metrics/certs
cp "$certs/tls.crt" "$certs/tls.key" /etc/kueue/metrics/certs/
exec "$@"
"""


@functools.cache
def _unshare() -> tuple[str, ...] | None:
    """The `unshare` prefix that can run _WRAPPER here, or None."""
    if shutil.which("unshare") is None:
        return None
    candidates = [("unshare", "--mount")] if os.geteuid() == 0 else []
    candidates.append(("unshare", "--user", "--map-root-user", "--mount"))
    with tempfile.TemporaryDirectory(prefix="shipyard-kueue-probe-") as tmp:
        scratch, certs = Path(tmp, "scratch"), Path(tmp, "certs")
        scratch.mkdir()
        certs.mkdir()
        for name in ("tls.crt", "tls.key"):
            (certs / name).write_text("probe")
        for prefix in candidates:
            probe = subprocess.run([*prefix, "sh", "-c", _WRAPPER, "sh", str(scratch), str(certs),
                                    "test", "-f", str(METRICS_CERT_DIR / "tls.crt")], capture_output=True)
            if probe.returncode == 0:
                return prefix
    return None


def _process_argv(workdir: Path, certs: Path, argv: list[str]) -> list[str]:
    prefix = _unshare()
    if prefix is not None:
        scratch = workdir / "mnt"
        scratch.mkdir(exist_ok=True)
        return [*prefix, "sh", "-c", _WRAPPER, "sh", str(scratch), str(certs), *argv]
    if (METRICS_CERT_DIR / "tls.crt").is_file() and (METRICS_CERT_DIR / "tls.key").is_file():
        return argv
    raise KueueUnsupported(
        f"Kueue {KUEUE_VERSION} needs a certificate at {METRICS_CERT_DIR}/tls.{{crt,key}} (hard-coded) and this "
        "machine allows no mount namespace (unshare) to provide one privately; provision one there to run it")


# --- the handle -------------------------------------------------------------------------------------------------

@dataclass
class Kueue:
    control_plane: ControlPlane
    workdir: Path
    webhook_port: int
    health_port: int
    kubeconfig: Path
    process: Component
    user: User  # the identity Kueue runs as (its ServiceAccount's token)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def log(self) -> Path:
        return self.process.log

    def healthy(self) -> bool:
        self.process.check_alive()
        return _http_ok(f"http://127.0.0.1:{self.health_port}/readyz")

    def stop(self) -> None:
        """Webhook configurations first (the API server would otherwise fail every Job create once Kueue is
        gone), then the process. Safe to call twice."""
        if self.process.process is None:
            return
        try:
            api = Api.admin(self.control_plane)
            for plural, name in (("mutatingwebhookconfigurations", MUTATING),
                                 ("validatingwebhookconfigurations", VALIDATING)):
                api.delete(Api.path("admissionregistration.k8s.io/v1", plural, name))
            api.close()
        except (httpx.HTTPError, ApiError):
            pass  # the control plane is already gone: nothing left to protect
        finally:
            self.process.stop()
            self.process.process = None


def start_kueue(control_plane: ControlPlane, workdir: Path | None = None, timeout: float = 120.0) -> Kueue:
    """Install Kueue's CRDs, RBAC and webhooks on a started ControlPlane and run its controller manager.

    Returns when Kueue is ready (readyz), its webhooks answer (dry-run Jobs that only they change) and its
    controllers act (a probe ResourceFlavor gets Kueue's finalizer, and is deleted again); raises RuntimeError
    with the log tail otherwise, KueueUnsupported when this machine cannot run it at all. Takes 5-9 s on a
    loaded 2-core machine, most of it the API server establishing the CRDs (the Workload CRD alone is 1.4 MB)."""
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    try:
        bin_dir = control_plane.bin_dir or binaries()
    except RuntimeError as exc:
        raise KueueUnsupported(str(exc)) from exc
    src = source()
    workdir = Path(workdir or control_plane.workdir / "kueue")
    workdir.mkdir(parents=True, exist_ok=True)
    ca_pem = control_plane.ca.pem
    webhook_port, health_port = free_port(), free_port()
    webhook_url = f"https://127.0.0.1:{webhook_port}"
    api = Api.admin(control_plane)
    try:
        # The namespace, Kueue's identity and its permissions.
        t = time.monotonic()
        _apply(api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        for obj in rbac(src):
            _apply(api, obj)
        token = api.create(Api.path("v1", "serviceaccounts", SERVICE_ACCOUNT, NAMESPACE, "token"), {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": 24 * 3600}})["status"]["token"]
        user = User(USERNAME, token)
        kubeconfig = control_plane.kubeconfig_for(user, workdir / "kueue.kubeconfig")
        timings["rbac"] = time.monotonic() - t

        t = time.monotonic()
        names = [_apply(api, crd)["metadata"]["name"] for crd in crds(src, webhook_url, ca_pem)]
        _wait(lambda: all(_established(api, name) for name in names), timeout, "Kueue's CRDs to be Established")
        timings["crds"] = time.monotonic() - t

        certs = workdir / "certs"
        certs.mkdir(exist_ok=True)
        cert, key = control_plane.ca.issue("kueue-webhook", hosts=["127.0.0.1"])
        (certs / "tls.crt").write_bytes(cert)
        (certs / "tls.key").write_bytes(key)
        (certs / "tls.key").chmod(0o600)
        config_path = workdir / "controller_manager_config.yaml"
        config_path.write_text(yaml.safe_dump(configuration(src, webhook_port, certs, health_port)))
        process = Component("kueue", _process_argv(workdir, certs, [str(bin_dir / "kueue"),
                                                                    f"--config={config_path}"]),
                            workdir / "logs" / "kueue.log")
        kueue = Kueue(control_plane, workdir, webhook_port, health_port, kubeconfig, process, user, timings)
        t = time.monotonic()
        process.start(env={"KUBECONFIG": str(kubeconfig)})
        try:
            _wait(kueue.healthy, timeout, "Kueue's readyz", process)
            timings["process"] = time.monotonic() - t
            t = time.monotonic()
            for obj in webhook_configurations(src, webhook_url, ca_pem):
                _apply(api, obj)
            _wait(lambda: kueue.healthy() and _webhooks_answer(api), timeout, "Kueue's webhooks to answer", process)
            timings["webhooks"] = time.monotonic() - t
            t = time.monotonic()
            _wait(lambda: kueue.healthy() and _controllers_run(api), timeout, "Kueue's controllers to act", process)
            _wait(lambda: api.get(Api.path("kueue.x-k8s.io/v1beta2", "resourceflavors", PROBE_FLAVOR)) is None,
                  timeout, "the probe ResourceFlavor to be deleted", process)
            timings["controllers"] = time.monotonic() - t
        except BaseException:
            kueue.stop()
            raise
    finally:
        api.close()
    timings["total"] = time.monotonic() - t0
    return kueue


def _wait(ready: Callable[[], bool], timeout: float, what: str, process: Component | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except (OSError, httpx.HTTPError, ApiError) as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last})" if last else "")
                       + (f"\n{process.name} log:\n{process.tail()}" if process else ""))


def _established(api: Api, name: str) -> bool:
    crd = api.get(Api.path("apiextensions.k8s.io/v1", "customresourcedefinitions", name)) or {}
    return any(c["type"] == "Established" and c["status"] == "True"
               for c in (crd.get("status") or {}).get("conditions") or [])


def _probe_job(queue: str) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"generateName": "kueue-probe-", "labels": {QUEUE_LABEL: queue}},
            "spec": {"suspend": False, "template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "probe"}]}}}}


def _webhooks_answer(api: Api) -> bool:
    """True when the API server calls Kueue's Job webhooks: dry-run creates (nothing is stored) that only the
    webhooks change. The configurations reach the API server's admission through an informer, so both are checked."""
    jobs = Api.path("batch/v1", "jobs", namespace="default")
    # mjob.kb.io suspends a Job that names a queue.
    if not api.create(jobs, _probe_job("probe"), dry_run=True)["spec"].get("suspend"):
        return False
    # vjob.kb.io rejects a queue name that is not a valid object name.
    try:
        api.create(jobs, _probe_job("Not_A_Queue"), dry_run=True)
        return False
    except ApiError as exc:
        if exc.status not in (400, 403, 422) or QUEUE_LABEL not in str(exc):
            raise
    return True


PROBE_FLAVOR = "shipyard-kueue-readiness-probe"


def _controllers_run(api: Api) -> bool:
    """True once Kueue's controllers act: its ResourceFlavor controller puts its finalizer on a new flavor.
    readyz says only that the webhook server listens; a controller whose informer cannot sync (a permission
    missing from the role) would otherwise show up later as a queue that never becomes Active."""
    path = Api.path("kueue.x-k8s.io/v1beta2", "resourceflavors", PROBE_FLAVOR)
    flavor = api.get(path)
    if flavor is None:
        # Through Kueue's ResourceFlavor webhooks too, so Kueue's own kinds' webhooks answer as well.
        flavor = api.create(Api.path("kueue.x-k8s.io/v1beta2", "resourceflavors"), {
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": PROBE_FLAVOR}})
    if "kueue.x-k8s.io/resource-in-use" not in flavor["metadata"].get("finalizers", []):
        return False
    api.delete(path)  # Kueue lifts the finalizer at once: no ClusterQueue uses the flavor
    return True


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False
