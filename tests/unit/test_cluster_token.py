"""`shipyard --context` sends the kubeconfig user's own bearer token (shipyard.cluster.api.bearer_token): a static
token, a tokenFile, an exec plugin's (run when the client is made), an auth-provider's cached one; a user with a
client certificate only has none. No API server is needed: making the client sends nothing. The whole path, over
a real API server's service proxy, is tests/k8s/test_access.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("lightkube")

from shipyard.client import API_PORT, API_SERVICE, Client, ShipyardError  # noqa: E402
from shipyard.cluster.api import bearer_token, load_config, service_proxy_client  # noqa: E402

SERVER = "https://127.0.0.1:6443"


def plugin(tmp_path: Path, token: str | None, exit_code: int = 0) -> Path:
    """An exec credential plugin that prints an ExecCredential with `token` (none: without status.token)."""
    credential = {"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
                  "status": {"token": token} if token else {"expirationTimestamp": "2030-01-01T00:00:00Z"}}
    path = tmp_path / f"plugin-{token}-{exit_code}.py"
    path.write_text(f"import sys\nprint({json.dumps(json.dumps(credential))})\n"
                    f"print('plugin says no', file=sys.stderr)\nsys.exit({exit_code})\n")
    return path


def kubeconfig(tmp_path: Path, user: dict) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": SERVER, "insecure-skip-tls-verify": True}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": user}]}))
    return path


def exec_user(script: Path, version: str = "v1beta1") -> dict:
    return {"exec": {"apiVersion": f"client.authentication.k8s.io/{version}", "command": sys.executable,
                     "args": [str(script)], "interactiveMode": "Never"}}


def test_a_static_token_a_token_file_and_an_auth_providers_token(tmp_path):
    assert bearer_token(load_config(kubeconfig(tmp_path, {"token": "static-token"}))) == "static-token"
    (tmp_path / "token").write_text("file-token\n")
    assert bearer_token(load_config(kubeconfig(tmp_path, {"tokenFile": str(tmp_path / "token")}))) == "file-token"
    oidc = {"auth-provider": {"name": "oidc", "config": {"client-id": "k8s", "id-token": "oidc-token"}}}
    assert bearer_token(load_config(kubeconfig(tmp_path, oidc))) == "oidc-token"


@pytest.mark.parametrize("version", ["v1beta1", "v1"])
def test_an_exec_plugin_runs_for_each_client(tmp_path, version):
    config = load_config(kubeconfig(tmp_path, exec_user(plugin(tmp_path, "exec-token"), version)))
    assert bearer_token(config) == "exec-token"


def test_a_client_certificate_user_has_no_token_to_forward(tmp_path):
    assert bearer_token(load_config(kubeconfig(tmp_path, {"client-certificate-data": "", "client-key-data": ""}))) \
        is None


def test_a_failing_plugin_is_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"^cannot get the kubeconfig user's token: Exec .* returned 3"):
        bearer_token(load_config(kubeconfig(tmp_path, exec_user(plugin(tmp_path, "t", exit_code=3)))))
    with pytest.raises(ValueError, match="printed no ExecCredential with status.token"):
        bearer_token(load_config(kubeconfig(tmp_path, exec_user(plugin(tmp_path, None)))))
    missing = {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": str(tmp_path / "none")}}
    with pytest.raises(ValueError, match="cannot run the kubeconfig user's exec plugin"):
        bearer_token(load_config(kubeconfig(tmp_path, missing)))
    with pytest.raises(ShipyardError) as caught:
        Client.for_cluster(None, str(kubeconfig(tmp_path, missing)))
    assert "\n" not in str(caught.value)


def test_for_cluster_sends_the_users_own_token_through_the_service_proxy(tmp_path):
    """Twice: to the API server (Authorization, which it strips) and to Shipyard (X-Shipyard-Token); nothing is
    read from the cluster to make the client (the old path read the admin token's Secret)."""
    with Client.for_cluster(None, str(kubeconfig(tmp_path, exec_user(plugin(tmp_path, "exec-token"))))) as client:
        assert client.cluster and client.token == "exec-token"
        assert client._http.headers["X-Shipyard-Token"] == "exec-token"
        assert client.url == f"{SERVER}/api/v1/namespaces/shipyard-system/services/http:{API_SERVICE}:{API_PORT}/proxy"
        request = next(client._http.auth.sync_auth_flow(client._http.build_request("GET", "/version")))
        assert request.headers["Authorization"] == "Bearer exec-token"


def test_the_proxy_client_authenticates_an_auth_provider_user_with_its_token(tmp_path):
    oidc = {"auth-provider": {"name": "oidc", "config": {"id-token": "oidc-token"}}}
    config = load_config(kubeconfig(tmp_path, oidc))
    with service_proxy_client(config, "ns", "svc", 80, token=bearer_token(config)) as http:
        request = next(http.auth.sync_auth_flow(http.build_request("GET", "/")))
        assert request.headers["Authorization"] == "Bearer oidc-token"
        assert str(http.base_url) == f"{SERVER}/api/v1/namespaces/ns/services/http:svc:80/proxy/"
