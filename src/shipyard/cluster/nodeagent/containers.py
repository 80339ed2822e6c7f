"""From a pod bound to a node to the process that runs its container, reading what it references from the API.

The process itself is built exactly as the embedded runtime builds it (shipyard.runtime.local.container):
there are no images, so the command runs with this Python's environment on PATH and the machine's files;
the image name is only reported back in the container's status. What differs on a cluster, and lives here:

- Addresses. The pod has an IP of its own (ipam.py) and keeps its containerPorts, so the embedded runtime's
  rules (network.py) run with an identity port map and the pod's IP: `0.0.0.0` in args becomes the pod's IP, a
  container declaring ports but no PORT gets PORT = its `http` (else first) containerPort, fieldRefs read the
  real node name, pod IP and host IP. There is no cluster DNS: an env value naming a pod under a headless
  Service (`HOST.SUBDOMAIN[.NS[.svc[.cluster.local]]]`) becomes that pod's IP, looked up in the API by
  spec.hostname/spec.subdomain; a pod that does not exist or has no IP yet makes the container wait
  (CreateContainerConfigError, retried), as the kubelet waits for a missing Secret. Service names are left
  alone: nothing here routes a ClusterIP (no kube-proxy). Cluster-wide service URLs given with --service-url
  are rewritten to local ones (rule 5 of network.py).
- Secrets, read from the API for `secretKeyRef` (a missing one is waited for, as above).
- Volumes, substituted at their mount paths as the embedded runtime does (volumes.py): a
  persistentVolumeClaim is the directory of its bound PersistentVolume (`hostPath` or `local`; an unbound claim
  is waited for), a hostPath volume is that path on this machine, an emptyDir a directory in the pod's
  directory (`/dev/shm` and `/tmp`: the machine's own, volumes.MACHINE_OWN). configMap, secret, downwardAPI
  and projected volumes are written as files into the pod's directory, once per container start; a projected
  service-account token is not (nothing here mints one), so only its ca.crt and namespace appear.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from shipyard.cluster.api import KubeApi
from shipyard.runtime.local.container import ContainerProcess, container_process
from shipyard.runtime.local.network import PodAddress, field_value, resolve_env
from shipyard.runtime.local.volumes import mount_map

from .status import PodRun


def identity_ports(pod: dict[str, Any]) -> dict[int, int]:
    """containerPort → the same port: a pod with its own IP keeps its ports."""
    return {int(p["containerPort"]): int(p["containerPort"])
            for c in pod["spec"].get("containers", []) for p in c.get("ports", [])}


def pod_address(pod: dict[str, Any], ip: str | None = None) -> PodAddress:
    return PodAddress(pod["metadata"]["namespace"], pod["spec"].get("hostname") or pod["metadata"]["name"],
                      pod["spec"].get("subdomain"), identity_ports(pod),
                      ip if ip is not None else pod.get("status", {}).get("podIP") or None)


def _names_a_host(env: list[dict[str, Any]]) -> bool:
    # Only a value with a dot can name a pod under a headless Service: spare the API the lists otherwise.
    return any("." in item.get("value", "") for item in env if "valueFrom" not in item)


class ContainerConfig:
    """Builds a pod's process from the API: its env (with peers, headless Services and Secrets) and mounts."""

    def __init__(self, api: KubeApi, root: Path, host_ip: str, service_urls: dict[str, str] | None = None):
        self._api = api
        self._root = root
        self._host_ip = host_ip
        self._service_urls = dict(service_urls or {})

    def process(self, pod: dict[str, Any], run: PodRun, pod_dir: Path) -> ContainerProcess:
        """Raises ValueError (or KubeError) when something the container needs is not there yet."""
        namespace = pod["metadata"]["namespace"]
        container = pod["spec"]["containers"][0]
        mounts = mount_map(pod, container, self._root / "volumes", pod_dir,
                           source=lambda volume: self._volume(pod, run, volume, pod_dir))
        peers: list[PodAddress] = []
        headless: set[str] = set()
        if _names_a_host(container.get("env", [])):
            peers = [pod_address(p) for p in self._api.list("Pod", namespace)
                     if p["spec"].get("subdomain") and p["metadata"]["uid"] != run.uid
                     and not p["metadata"].get("deletionTimestamp")]
            headless = {s["metadata"]["name"] for s in self._api.list("Service", namespace)
                        if s["spec"].get("clusterIP") == "None"}
        secrets = {}
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref and ref["name"] not in secrets:
                secret = self._api.get("Secret", namespace, ref["name"])
                if secret is not None:
                    secrets[ref["name"]] = secret
        env = resolve_env(pod, container, pod_address(pod, run.ip), peers, set(), secrets=secrets,
                          node_name=run.node, host_ip=self._host_ip, headless=headless)
        process = container_process(pod, container, env, mounts, self._service_urls, identity_ports(pod),
                                    str(self._root), ip=run.ip)
        devices = ",".join(run.gpus)
        process.env.update({"CUDA_VISIBLE_DEVICES": devices, "NVIDIA_VISIBLE_DEVICES": devices or "void"})
        return process

    # --- volumes -------------------------------------------------------------------------------------

    def _volume(self, pod: dict[str, Any], run: PodRun, volume: dict[str, Any], pod_dir: Path) -> Path | None:
        namespace = pod["metadata"]["namespace"]
        if "persistentVolumeClaim" in volume:
            return self.claim_path(namespace, volume["persistentVolumeClaim"]["claimName"])
        if "hostPath" in volume:
            return Path(volume["hostPath"]["path"])
        files: dict[str, bytes] | None = None
        if "configMap" in volume:
            files = self._config_map_files(namespace, volume["configMap"])
        elif "secret" in volume:
            source = volume["secret"]
            files = self._secret_files(namespace, {**source, "name": source.get("secretName", "")})
        elif "downwardAPI" in volume:
            files = self._downward_files(pod, run, volume["downwardAPI"])
        elif "projected" in volume:
            files = {}
            for source in volume["projected"].get("sources", []):
                if "configMap" in source:
                    files.update(self._config_map_files(namespace, source["configMap"]))
                elif "secret" in source:
                    files.update(self._secret_files(namespace, source["secret"]))
                elif "downwardAPI" in source:
                    files.update(self._downward_files(pod, run, source["downwardAPI"]))
        if files is None:
            return None  # emptyDir, or a kind mount_map rejects with its own message
        target = pod_dir / "volumes" / volume["name"]
        _write_files(target, files)
        return target

    def claim_path(self, namespace: str, claim_name: str) -> Path:
        claim = self._api.get("PersistentVolumeClaim", namespace, claim_name)
        if claim is None:
            raise ValueError(f"persistentvolumeclaim {claim_name!r} not found")
        volume_name = claim["spec"].get("volumeName")
        if not volume_name or claim.get("status", {}).get("phase") != "Bound":
            raise ValueError(f"persistentvolumeclaim {claim_name!r} is not bound yet")
        volume = self._api.get("PersistentVolume", None, volume_name)
        if volume is None:
            raise ValueError(f"persistentvolume {volume_name!r} not found")
        source = volume["spec"].get("hostPath") or volume["spec"].get("local")
        if not source:
            raise ValueError(f"persistentvolume {volume_name!r} is neither hostPath nor local")
        path = Path(source["path"])
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _config_map_files(self, namespace: str, source: dict[str, Any]) -> dict[str, bytes]:
        obj = self._api.get("ConfigMap", namespace, source["name"])
        if obj is None:
            if source.get("optional"):
                return {}
            raise ValueError(f"configmap {source['name']!r} not found")
        data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return _select(data, source.get("items"))

    def _secret_files(self, namespace: str, source: dict[str, Any]) -> dict[str, bytes]:
        obj = self._api.get("Secret", namespace, source["name"])
        if obj is None:
            if source.get("optional"):
                return {}
            raise ValueError(f"secret {source['name']!r} not found")
        data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        return _select(data, source.get("items"))

    def _downward_files(self, pod: dict[str, Any], run: PodRun, source: dict[str, Any]) -> dict[str, bytes]:
        out = {}
        for item in source.get("items", []):
            if "fieldRef" in item:
                value = field_value(pod, item["fieldRef"]["fieldPath"], run.node, run.ip, self._host_ip)
                out[item["path"]] = value.encode()
        return out


def _select(data: dict[str, bytes], items: list[dict[str, Any]] | None) -> dict[str, bytes]:
    if not items:
        return data
    return {item["path"]: data[item["key"]] for item in items if item["key"] in data}


def _write_files(target: Path, files: dict[str, bytes]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = target / rel
        if ".." in Path(rel).parts:
            continue  # a key may not climb out of its volume
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # Secrets' files: private
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        os.replace(tmp, path)
