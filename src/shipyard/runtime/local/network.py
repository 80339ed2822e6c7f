"""Local networking: one loopback address for every pod, so ports are remapped and names resolve to 127.0.0.1.

On a cluster each pod has its own IP and can listen on its declared containerPort; here all pods share
127.0.0.1, so each declared containerPort gets a free host port, and the pod learns it through its env.
The rules, applied to env values after `$(VAR)` and fieldRef expansion (documented in docs/local-runtime.md):

1. A value that is exactly a DNS name of a Service in the namespace, or of a pod under a headless Service
   (`HOST.SUBDOMAIN`, optionally followed by `.NS`, `.NS.svc`, `.NS.svc.cluster.local`), becomes 127.0.0.1.
   A bare Service name (no dot) counts only in a variable named `*ADDR`, `*HOST`, `*HOSTNAME` or `*ENDPOINT`.
2. A variable `<P>PORT` whose value is a port number, beside a variable `<P>ADDR` or `<P>HOST` that named a
   pod, becomes that pod's host port for that containerPort (so PET_MASTER_ADDR/PET_MASTER_PORT and
   MASTER_ADDR/MASTER_PORT point at replica 0's rendezvous port).
3. Any other `PORT` or `*_PORT` variable whose value is one of the pod's own containerPorts becomes its
   host port (a server told to listen on $PORT listens where the runtime expects).
4. A container that declares ports but no `PORT` variable gets `PORT` = the host port of its port named
   `http`, else of its first port: the serving contract ("listen on the port given in env").

5. A value that starts with a cluster-wide service URL the machine serves elsewhere (registered by the
   composition root: the gateway's in-cluster `http://shipyard-gateway.shipyard-system.svc` → its local
   address) is rewritten to the local URL (rewrite_service_urls).

Command and args (resolve_argv): `$(VAR)` is expanded with that env, as Kubernetes expands it, so
`--port=$(PORT)` carries the host port; and the value of a flag whose name ends in `port` (`--port 8000`,
`--port=8000`, `--server.port 8501`) that is one of the pod's own containerPorts becomes its host port. Other
numbers in args are left alone: `--max-tokens 8000` must stay 8000. The any-address `0.0.0.0` (`--host 0.0.0.0`,
`--ServerApp.ip=0.0.0.0`, `--bind-addr=0.0.0.0:8888`) becomes 127.0.0.1: servers listen on loopback only.

The same rules serve the cluster node agent (shipyard.cluster.nodeagent), where each pod has an address of its
own (PodAddress.ip, from the node's pod network) and keeps its containerPorts: it passes an identity
containerPort map, its pod's IP, the real node name and host IP, and no Service names (nothing routes a
ClusterIP there), so names of pods under headless Services resolve to those pods' IPs and `0.0.0.0` becomes
the pod's IP.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from typing import Any

from ..pods import secret_value

LOOPBACK = "127.0.0.1"
_VAR_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")
_ADDRESS_SUFFIXES = ("ADDR", "HOST", "HOSTNAME", "ENDPOINT")
_FIELD_REF = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")
_PORT_FLAG = re.compile(r"^(--?(?:[\w.-]*[-._])?port)(=(\d+))?$", re.IGNORECASE)


@dataclass
class PodAddress:
    """What the network knows about one pod: its DNS identity, its containerPort → host port map, and the
    address its name resolves to (None: the pod has no IP yet, so a name of it cannot be resolved yet)."""

    namespace: str
    hostname: str
    subdomain: str | None
    host_ports: dict[int, int] = field(default_factory=dict)
    ip: str | None = LOOPBACK

    def names(self) -> set[str]:
        if not self.subdomain:
            return set()
        return _qualified(f"{self.hostname}.{self.subdomain}", self.namespace)


def _qualified(base: str, namespace: str) -> set[str]:
    return {base, f"{base}.{namespace}", f"{base}.{namespace}.svc", f"{base}.{namespace}.svc.cluster.local"}


def free_port(reserved: set[int]) -> int:
    """A currently free loopback TCP port, never one already handed out by this runtime."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = sock.getsockname()[1]
        if port not in reserved:
            reserved.add(port)
            return port
    raise RuntimeError("no free loopback port")


def field_value(pod: dict[str, Any], path: str, node_name: str = "localhost", pod_ip: str = LOOPBACK,
                host_ip: str = LOOPBACK) -> str:
    meta = pod["metadata"]
    simple = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": node_name,
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return simple[path]
    match = _FIELD_REF.match(path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    raise ValueError(f"fieldRef {path!r} is not supported by the local runtime")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined variables are substituted, `$$` escapes, unknown refs stay."""
    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))
    return _VAR_REF.sub(repl, value)


def resolve_env(pod: dict[str, Any], container: dict[str, Any], me: PodAddress,
                peers: list[PodAddress], service_names: set[str],
                secrets: dict[str, dict[str, Any]] | None = None, node_name: str = "localhost",
                host_ip: str = LOOPBACK, headless: set[str] | None = None) -> dict[str, str]:
    """The container's env as the process will see it, with the rules in the module docstring applied.
    `secrets`: the namespace's Secrets by name, for `valueFrom.secretKeyRef`. `me.ip` is the pod's own address
    (status.podIP). `headless`: the namespace's headless Service names; a value naming a pod under one that
    is not among `peers` (or has no IP yet) raises ValueError, so the caller retries once it has one, as the
    kubelet retries a container it cannot configure yet."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "valueFrom" in item:
            source = item["valueFrom"]
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                secret = (secrets or {}).get(ref["name"])
                value = secret_value(secret, ref["key"]) if secret is not None else None
                if value is None:
                    # As the kubelet does (CreateContainerConfigError): do not start without it; retried.
                    raise ValueError(f"env {item['name']}: secret {ref['name']!r} has no key {ref['key']!r} (yet)")
                env[item["name"]] = value
                continue
            ref = source.get("fieldRef")
            if ref is None:
                raise ValueError(f"env {item['name']}: only fieldRef and secretKeyRef are supported locally")
            env[item["name"]] = field_value(pod, ref["fieldPath"], node_name, me.ip or LOOPBACK, host_ip)
        else:
            env[item["name"]] = expand(item.get("value", ""), env)

    by_name: dict[str, PodAddress] = {}
    for peer in [me, *peers]:
        for name in peer.names():
            by_name[name] = peer
    named_targets: dict[str, PodAddress | None] = {}
    for key, value in list(env.items()):
        # A bare single-label name is also an ordinary word (a job is named like its Service), so it is
        # only taken for a host where the variable says it holds one.
        if "." not in value and not key.endswith(_ADDRESS_SUFFIXES):
            continue
        if value in by_name:
            target = by_name[value]
            if not target.ip:
                raise ValueError(f"env {key}: pod {value!r} has no IP yet")
            named_targets[key] = target
            env[key] = target.ip
        elif headless and _names_headless_pod(value, pod["metadata"]["namespace"], headless):
            raise ValueError(f"env {key}: no pod named {value!r} exists yet")
        elif value in service_names:
            named_targets[key] = None
            env[key] = LOOPBACK
    for key, value in list(env.items()):
        if not (key == "PORT" or key.endswith("_PORT")) or not value.isdigit():
            continue
        prefix = key[: -len("PORT")]
        target = named_targets.get(prefix + "ADDR") or named_targets.get(prefix + "HOST")
        port = int(value)
        if target is not None and port in target.host_ports:
            env[key] = str(target.host_ports[port])
        elif port in me.host_ports and prefix + "ADDR" not in named_targets and prefix + "HOST" not in named_targets:
            env[key] = str(me.host_ports[port])
    declared = [p for p in container.get("ports", []) if p.get("containerPort") in me.host_ports]
    if declared and "PORT" not in env:
        main = next((p for p in declared if p.get("name") == "http"), declared[0])
        env["PORT"] = str(me.host_ports[main["containerPort"]])
    return env


def _names_headless_pod(value: str, namespace: str, headless: set[str]) -> bool:
    """Whether `value` has the shape of a pod's name under one of the headless Services (HOST.SUBDOMAIN...)."""
    host, _, rest = value.partition(".")
    if not host or not rest:
        return False
    subdomain = rest.partition(".")[0]
    return subdomain in headless and value in _qualified(f"{host}.{subdomain}", namespace)


def rewrite_service_urls(value: str, urls: dict[str, str]) -> str:
    """Rule 5: `http://svc.ns.svc/path` → `http://127.0.0.1:PORT/path` for each registered service URL."""
    for cluster_url, local_url in urls.items():
        if value == cluster_url or value.startswith(cluster_url + "/"):
            return local_url.rstrip("/") + value[len(cluster_url):]
    return value


_ANY_ADDRESS = re.compile(r"^(--?[\w.-]+=)?0\.0\.0\.0(:\d+)?$")


def listen_address(arg: str, ip: str = LOOPBACK) -> str:
    """`0.0.0.0` (alone, `--flag=0.0.0.0`, or with a port) as the pod's address: in a pod, "every interface"
    is the pod's own network; here it would be the machine's, letting anyone on the network reach a replica
    (or an IDE) without the gateway. Every pod is reached on its own address (127.0.0.1 locally) anyway."""
    match = _ANY_ADDRESS.match(arg)
    if match is None:
        return arg
    return f"{match.group(1) or ''}{ip}{match.group(2) or ''}"


def resolve_argv(argv: list[str], env: dict[str, str], host_ports: dict[int, int], ip: str = LOOPBACK) -> list[str]:
    """Command and args as the process will see them (see the module docstring); `ip`: the pod's address."""
    out = [listen_address(expand(arg, env), ip) for arg in argv]
    for i, arg in enumerate(out):
        match = _PORT_FLAG.match(arg)
        if not match:
            continue
        if match.group(3) is not None:
            if int(match.group(3)) in host_ports:
                out[i] = f"{match.group(1)}={host_ports[int(match.group(3))]}"
        elif i + 1 < len(out) and out[i + 1].isdigit() and int(out[i + 1]) in host_ports:
            out[i + 1] = str(host_ports[int(out[i + 1])])
    return out
