"""On a real control plane, Kubernetes decides who uses Shipyard's API: the operator authenticates a caller's own
token with a TokenReview and authorizes every request with a SubjectAccessReview over the cluster's RBAC,
where the chart's ClusterRoles aggregate into Kubernetes' view/edit/admin. A user bound to `view` reads but
cannot create; bound to `edit`, they can; an unknown token is a 401; the admin token still works. And the CLI's
`--context` path: through the API server's service proxy with the kubeconfig user's own token (static or from an
exec plugin), the admin token's Secret read only for a certificate-only user who may read it."""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from shipyard.client import ADMIN_TOKEN_SECRET, API_PORT, API_SERVICE, ApiError, Client, ShipyardError
from shipyard.cluster.api import KubeError

from .conftest import SYSTEM_NAMESPACE, chart_objects, kube_api, wait_for
from .controlplane import User

pytestmark = pytest.mark.k8s

JOB = {"apiVersion": "shipyard.dev/v1alpha1", "kind": "TrainingJob",
       "metadata": {"name": "by-alice"}, "spec": {"replicas": 1, "command": ["python", "-c", "print(1)"]}}


def _bind(admin, namespace: str, role: str) -> None:
    admin.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                 "metadata": {"name": f"team-a-{role}", "namespace": namespace},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                 "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "team-a"}]})


def test_token_review_and_subject_access_review_decide(control_plane, admin, operator, namespace):
    alice = {"Authorization": f"Bearer {control_plane.user('alice').token}"}
    jobs = f"{operator.api}/apis/shipyard.dev/v1alpha1/namespaces/{namespace}/trainingjobs"
    apply = f"{operator.api}/apis/shipyard.dev/v1alpha1/apply"
    job = {**JOB, "metadata": {**JOB["metadata"], "namespace": namespace}}
    body = {"items": [{"source": "job.yaml", "document": 1, "object": job}]}

    # Authenticated by the cluster, bound to nothing: refused, with the role that would do.
    refused = httpx.get(jobs, headers=alice, timeout=30)
    assert refused.status_code == 403, refused.text
    assert refused.json()["detail"] == f"user alice cannot list trainingjobs in project {namespace}: needs role view"
    assert httpx.get(jobs, headers={"Authorization": "Bearer not-a-token"}, timeout=30).status_code == 401

    # Kubernetes' own `view`, which the chart's shipyard-view aggregates into: reads, cannot create.
    _bind(admin, namespace, "view")
    wait_for(lambda: httpx.get(jobs, headers=alice, timeout=30).status_code == 200, timeout=30,
             what="alice's view binding to be seen (decisions are cached 5 s)")
    created = httpx.post(apply, headers=alice, json=body, timeout=30)
    assert created.status_code == 403 and "needs role edit" in created.json()["detail"]
    assert httpx.get(f"{operator.api}/apis/shipyard.dev/v1alpha1/namespaces/default/trainingjobs", headers=alice,
                     timeout=30).status_code == 403  # the binding is the namespace's only

    # `edit`: the same request now goes through, as alice (not as the operator).
    _bind(admin, namespace, "edit")
    wait_for(lambda: httpx.post(apply, headers=alice, json=body, timeout=30).status_code == 200, timeout=30,
             what="alice's edit binding to be seen")
    assert admin.get("TrainingJob", namespace, "by-alice") is not None
    assert httpx.get(f"{operator.api}/api/v1/whoami", headers=alice, timeout=30).json()["username"] == "alice"

    # The bootstrap admin token still works, and nothing needs to read its Secret.
    admin_token = {"Authorization": f"Bearer {operator.admin_token}"}
    assert httpx.delete(f"{jobs}/by-alice", headers=admin_token, timeout=30).status_code == 200


# --- `shipyard --context`: through the API server's service proxy, as the kubeconfig's own user ---------------

# The stand-in for the operator's container behind the chart's Service: a TCP relay from the pod's IP to the
# session's operator on loopback (argv: listen address, the operator's API port).
RELAY = """
import socket, sys, threading

def pipe(src, dst):
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass

server = socket.create_server((sys.argv[1], 7433))
while True:
    conn, _ = server.accept()
    try:
        upstream = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
    except OSError:
        conn.close()
        continue
    for src, dst in ((conn, upstream), (upstream, conn)):
        threading.Thread(target=pipe, args=(src, dst), daemon=True).start()
"""


@pytest.fixture(scope="module")
def api_service(admin, operator, node_agent, chart_rbac):
    """The chart's `shipyard-api` Service, reached through the API server's real service proxy. The operator runs
    as a process on loopback here (conftest) and the proxy dials only the addresses of pods behind a Service's
    EndpointSlices, which refuse loopback ones; so a pod with the Service's selector labels, run by the node
    agent on its routed pod network, relays port 7433 to the operator's API. That pod stands in for the
    operator's container; everything else is the real path: the chart's Service and RBAC, the EndpointSlice
    controller, the API server's authentication, authorization of `services/proxy`, and its proxy."""
    if not node_agent["routed"]:
        pytest.skip("the service proxy needs pods on a routed network (CAP_NET_ADMIN to add a local route): "
                    "EndpointSlices refuse loopback addresses")
    [service] = [o for o in chart_objects() if o["kind"] == "Service" and o["metadata"]["name"] == API_SERVICE]
    admin.apply(service)
    relay = {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": "shipyard-api-relay", "namespace": SYSTEM_NAMESPACE,
                          "labels": service["spec"]["selector"]},
             "spec": {"terminationGracePeriodSeconds": 1, "automountServiceAccountToken": False,
                      "containers": [{"name": "operator", "image": "shipyard",
                                      "command": [sys.executable, "-c", RELAY],
                                      "args": ["0.0.0.0", str(operator.api_port)],
                                      "ports": [{"name": "api", "containerPort": API_PORT}],
                                      "readinessProbe": {"tcpSocket": {"port": "api"}, "periodSeconds": 1}}]}}
    admin.apply(relay)
    try:
        wait_for(lambda: any(e.get("conditions", {}).get("ready") for s in admin.list(
            "EndpointSlice", SYSTEM_NAMESPACE, labels={"kubernetes.io/service-name": API_SERVICE})
            for e in s.get("endpoints") or []), timeout=60, what="the relay pod behind shipyard-api's EndpointSlice")
        yield service
    finally:
        admin.delete("Pod", SYSTEM_NAMESPACE, "shipyard-api-relay")
        admin.delete("Service", SYSTEM_NAMESPACE, API_SERVICE)


def _eventually(call, timeout: float = 30.0):
    """The call's answer once the cluster stops refusing (a binding, an EndpointSlice not yet seen everywhere);
    its last refusal (the proxy's or Shipyard's, with the reason) if it never does."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except ApiError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _exec_kubeconfig(control_plane, tmp_path: Path, user: User) -> tuple[Path, Path]:
    """A kubeconfig whose user is an exec credential plugin printing `user`'s token (and counting its runs)."""
    runs = tmp_path / "plugin-runs"
    credential = {"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
                  "status": {"token": user.token}}
    plugin = tmp_path / "plugin.py"
    plugin.write_text(f"with open({str(runs)!r}, 'a') as f:\n    f.write('run\\n')\n"
                      f"print({json.dumps(json.dumps(credential))})\n")
    path = control_plane.kubeconfig_for(user, tmp_path / "exec.kubeconfig")
    config = yaml.safe_load(path.read_text())
    config["users"] = [{"name": user.name, "user": {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1beta1", "command": sys.executable, "args": [str(plugin)],
        "interactiveMode": "Never"}}}]
    path.write_text(yaml.safe_dump(config))
    return path, runs


def _certificate_kubeconfig(control_plane, tmp_path: Path, name: str, groups: list[str]) -> Path:
    """A kubeconfig whose user has only a client certificate, as kind's and kubeadm's admin kubeconfigs do."""
    cert, key = control_plane.ca.issue(name, organizations=groups, client=True)
    (tmp_path / f"{name}.crt").write_bytes(cert)
    (tmp_path / f"{name}.key").write_bytes(key)
    path = control_plane.kubeconfig_for(User(name, "unused"), tmp_path / f"{name}.kubeconfig")
    config = yaml.safe_load(path.read_text())
    config["users"] = [{"name": name, "user": {"client-certificate": str(tmp_path / f"{name}.crt"),
                                               "client-key": str(tmp_path / f"{name}.key")}}]
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_cli_on_a_cluster_sends_the_kubeconfig_users_own_token(control_plane, admin, api_service, namespace,
                                                                   tmp_path):
    """`Client.for_cluster` as alice, with a kubeconfig holding only her static token, then only an exec plugin
    printing it: the API server lets her through its proxy (the chart's Role on services/proxy), and Shipyard
    decides as her (view: lists, cannot create: a 403 of Shipyard's, not of the proxy). She may read no Secret at
    all, so nothing read the admin token's (the old path did, and would fail for her)."""
    alice = control_plane.user("alice")
    token_config = control_plane.kubeconfig_for(alice, tmp_path / "token.kubeconfig")
    as_alice = kube_api(token_config)
    try:
        with pytest.raises(KubeError) as refused:
            as_alice.get("Secret", SYSTEM_NAMESPACE, ADMIN_TOKEN_SECRET)
        assert refused.value.status == 403
    finally:
        as_alice.close()
    _bind(admin, namespace, "view")
    exec_config, runs = _exec_kubeconfig(control_plane, tmp_path, alice)
    job = {**JOB, "metadata": {**JOB["metadata"], "namespace": namespace}}
    for kubeconfig in (token_config, exec_config):
        with Client.for_cluster(None, str(kubeconfig)) as client:
            assert client.url.endswith(f"/api/v1/namespaces/{SYSTEM_NAMESPACE}/services/http:{API_SERVICE}:"
                                       f"{API_PORT}/proxy")
            who = _eventually(client.whoami)
            assert who["username"] == "alice" and "team-a" in who["groups"]
            items, _ = _eventually(lambda: client.list_wire("TrainingJob", namespace))  # decisions cached 5 s
            assert items == []
            with pytest.raises(ApiError) as caught:
                client.apply([("job.yaml", 1, job)])
            assert caught.value.status == 403
            assert caught.value.detail.startswith("user alice cannot ")  # Shipyard's words, not the proxy's
            assert "needs role edit" in caught.value.detail and "services/proxy" not in caught.value.detail
    assert runs.read_text().splitlines() == ["run"]  # the plugin ran when its client was made
    assert admin.get("TrainingJob", namespace, "by-alice") is None


def test_a_certificate_user_falls_back_to_the_admin_token_only_if_they_may_read_it(control_plane, admin, operator,
                                                                                   api_service, tmp_path):
    """No token to forward: a cluster admin (kind's kubeconfig) reads the admin token's Secret as before; anyone
    else is told in one line to use a kubeconfig user with a token."""
    carol = _certificate_kubeconfig(control_plane, tmp_path, "carol", [])
    with pytest.raises(ShipyardError) as caught:
        Client.for_cluster(None, str(carol))
    assert "has no bearer token" in str(caught.value) and "use a kubeconfig user with a token" in str(caught.value)
    assert "\n" not in str(caught.value)

    root = _certificate_kubeconfig(control_plane, tmp_path, "root", ["system:masters"])
    admin.apply({"apiVersion": "v1", "kind": "Secret",
                 "metadata": {"name": ADMIN_TOKEN_SECRET, "namespace": SYSTEM_NAMESPACE},
                 "data": {"token": base64.b64encode(operator.admin_token.encode()).decode()}})
    try:
        with Client.for_cluster(None, str(root)) as client:
            assert _eventually(client.whoami)["username"] == "admin"
    finally:
        admin.delete("Secret", SYSTEM_NAMESPACE, ADMIN_TOKEN_SECRET)
