"""Reaching a resource's pods from the API, over any Runtime: which pod and address (port-forward), and a
workspace's token (`shipyard open`).

Shared by both composition roots (the embedded daemon and the cluster operator): it needs only the Runtime
protocol and the wire form of pods, so the same choice is made on one machine and on a cluster.
"""

from __future__ import annotations

from typing import Any

from shipyard.compiler.common import KIND_LABEL, NAME_LABEL
from shipyard.compiler.workspace import TOKEN_SECRET_KEY, token_secret_name
from shipyard.resources import Resource
from shipyard.runtime.pods import is_ready, pod_address, secret_value
from shipyard.runtime.protocol import Runtime
from shipyard.store import NotFound


class RuntimePortForward:
    """Where `shipyard port-forward` connects: a ready (else running) pod of the resource, lowest name first."""

    def __init__(self, runtime: Runtime):
        self._runtime = runtime

    def address(self, resource: Resource, port: str | None) -> tuple[str, int]:
        ns, name = resource.metadata.namespace, resource.metadata.name
        pods = [p for p in self._runtime.list("Pod", ns, {KIND_LABEL: resource.kind.lower(), NAME_LABEL: name})
                if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]
        for pod in sorted(pods, key=lambda p: (not is_ready(p), p["metadata"]["name"])):
            declared = [q for c in pod["spec"]["containers"] for q in c.get("ports", [])]
            wanted: int | str | None = int(port) if port and port.isdigit() else port
            if wanted is None:
                named = [q for q in declared if q.get("name") == "http"] or declared
                if not named:
                    raise NotFound(f"{resource.ref} declares no port: give one (KIND/NAME LOCAL:REMOTE)")
                wanted = int(named[0]["containerPort"])
            where = pod_address(pod, wanted)
            if where is not None:
                return where
        raise NotFound(f"{resource.ref} has no running replica to forward to (yet)")


class RuntimeWorkspaceTokens:
    """A workspace's token, read from the Secret its controller made (api.routers.workspaces.WorkspaceTokens)."""

    def __init__(self, runtime: Runtime):
        self._runtime = runtime

    def token(self, workspace: Any) -> str | None:
        secret = self._runtime.get("Secret", workspace.metadata.namespace, token_secret_name(workspace))
        return secret_value(secret, TOKEN_SECRET_KEY) if secret is not None else None
