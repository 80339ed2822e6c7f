"""`shipyard --context`: the same CLI against Shipyard on a cluster, through the API server's service proxy.

The mock API server proxies /api/v1/namespaces/shipyard-system/services/http:shipyard-api:7433/proxy to a real
Shipyard API (the operator's, over its Kubernetes store), consuming the Authorization header as the real proxy
does; the admin token comes from the chart's Secret.
"""

from __future__ import annotations

import base64

import pytest

from shipyard.api.app import create_app
from shipyard.api.auth import hash_token
from shipyard.cli.main import main_exit_code
from shipyard.gateway import GatewayServer
from shipyard.operator import ClusterLogs
from shipyard.pod_access import RuntimePortForward

from .conftest import SYSTEM_NAMESPACE, wait_for

TOKEN = "sy_cluster-admin-token-for-tests"
PROXY = "/api/v1/namespaces/shipyard-system/services/http:shipyard-api:7433/proxy"
pytestmark = pytest.mark.timeout(120)

MANIFEST = """\
apiVersion: shipyard.dev/v1alpha1
kind: TrainingJob
metadata: {name: gitops}
spec:
  replicas: 1
  command: [python, train.py]
"""


@pytest.fixture
def cluster_api(apiserver, kubectl, operators):
    operator = operators()
    app = create_app(operator.store, ClusterLogs(operator.runtime), hash_token(TOKEN), "test",
                     port_forward=RuntimePortForward(operator.runtime))
    server = GatewayServer(app, "127.0.0.1", 0)
    server.start()
    kubectl.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": {"name": "shipyard-admin-token", "namespace": SYSTEM_NAMESPACE},
                    "data": {"token": base64.b64encode(TOKEN.encode()).decode()}})
    apiserver.emulator.proxies[PROXY] = server.url
    yield operator
    server.stop()


def shipyard(kubeconfig, *args):
    return main_exit_code(["--kubeconfig", str(kubeconfig), *args])


def test_the_cli_applies_lists_and_deletes_on_the_cluster(cluster_api, kubeconfig, kubectl, tmp_path, capsys):
    manifest = tmp_path / "job.yaml"
    manifest.write_text(MANIFEST)
    assert shipyard(kubeconfig, "apply", "-f", str(manifest)) == 0
    assert "trainingjob/gitops created" in capsys.readouterr().out
    assert kubectl.get("TrainingJob", "default", "gitops") is not None  # a custom resource, GitOps-visible
    wait_for(lambda: kubectl.get("Job", "default", "gitops"), what="the operator to run it")

    assert shipyard(kubeconfig, "get", "trainingjobs") == 0
    assert "gitops" in capsys.readouterr().out
    assert shipyard(kubeconfig, "apply", "-f", str(manifest)) == 0
    assert "unchanged" in capsys.readouterr().out

    assert shipyard(kubeconfig, "delete", "trainingjob/gitops") == 0
    wait_for(lambda: kubectl.get("TrainingJob", "default", "gitops") is None, what="the CR to go")
    assert kubectl.get("Job", "default", "gitops") is None


def test_without_shipyard_installed_the_cli_says_so_in_one_line(apiserver, kubeconfig, capsys):
    assert shipyard(kubeconfig, "get", "trainingjobs") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not installed in shipyard-system" in err and "helm install" in err


def test_a_wrong_token_in_the_secret_is_refused(cluster_api, kubeconfig, kubectl, capsys):
    kubectl.merge_patch("Secret", SYSTEM_NAMESPACE, "shipyard-admin-token",
                        {"data": {"token": base64.b64encode(b"sy_wrong").decode()}})
    assert shipyard(kubeconfig, "get", "trainingjobs") == 1
    assert "401" in capsys.readouterr().err


def test_watching_through_the_api_sees_shipyard_objects_not_raw_custom_resources(cluster_api, kubectl):
    import time

    from shipyard.resources import TrainingJob

    before = cluster_api.store.current_version()
    kubectl.create({"apiVersion": "shipyard.dev/v1alpha1", "kind": "TrainingJob",
                    "metadata": {"name": "watched", "namespace": "default"},
                    "spec": {"replicas": 1, "command": ["python", "train.py"]}})
    deadline = time.monotonic() + 20
    events = []
    while time.monotonic() < deadline and not events:
        events = [e for e in cluster_api.store.watch(before, timeout=1.0) if e.object["metadata"]["name"] == "watched"]
    assert events, "no watch event for the new custom resource"
    for event in events:
        assert "managedFields" not in event.object["metadata"]
        TrainingJob.model_validate(event.object)  # what an API client parses
