"""From a container's spec to the process that runs it: argv, environment and working directory.

There are no images on one machine: the command runs with this Python's environment on PATH (so `python`,
`torchrun` and the console scripts of the installed packages are found), the machine's environment minus the
daemon's own secrets, and the container's env resolved by network.py, with volume mount paths substituted
(volumes.py) and cluster-wide service URLs rewritten to local ones. The local runtime's kubelet and the cluster
node agent (shipyard.cluster.nodeagent) both build their processes here, so the two never drift apart.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipyard.resources.documents import LOCAL_WORKDIR_ANNOTATION

from .network import LOOPBACK, resolve_argv, rewrite_service_urls
from .processes import POD_UID_ENV
from .volumes import substitute

# The daemon's own secrets never reach workloads.
SCRUBBED_ENV = ("SHIPYARD_TOKEN",)


@dataclass(frozen=True)
class ContainerProcess:
    argv: list[str]
    env: dict[str, str]  # the whole environment of the process
    cwd: str


def container_process(pod: dict[str, Any], container: dict[str, Any], env: dict[str, str], mounts: dict[str, Path],
                      service_urls: dict[str, str], host_ports: dict[int, int], default_cwd: str,
                      ip: str = LOOPBACK) -> ContainerProcess:
    """The process for `container` given its resolved env (network.resolve_env) and its mounts
    (volumes.mount_map). Raises ValueError when there is nothing to run."""
    meta = pod["metadata"]
    env = {k: rewrite_service_urls(substitute(v, mounts), service_urls) for k, v in env.items()}
    argv = [substitute(a, mounts) for a in resolve_argv(
        container.get("command", []) + container.get("args", []), env, host_ports, ip)]
    if not argv:
        raise ValueError("the local runtime needs an explicit command (there is no image entrypoint)")
    process_env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    process_env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + process_env.get("PATH", "")
    process_env.update(env)
    process_env.update({"HOSTNAME": pod["spec"].get("hostname") or meta["name"],
                        "SHIPYARD_POD_NAME": meta["name"], POD_UID_ENV: meta["uid"]})
    for mount_path, path in mounts.items():
        name = next((m["name"] for m in container.get("volumeMounts", []) if m["mountPath"] == mount_path), "")
        process_env[f"SHIPYARD_VOLUME_{name.upper().replace('-', '_')}"] = str(path)
    return ContainerProcess(argv, process_env, working_dir(pod, container, mounts, default_cwd))


def working_dir(pod: dict[str, Any], container: dict[str, Any], mounts: dict[str, Path], default: str) -> str:
    """The image's WORKDIR has no local equivalent: use workingDir if it exists here, else the directory
    the manifest was applied from, else `default`."""
    if container.get("workingDir"):
        candidate = substitute(container["workingDir"], mounts)
        if os.path.isdir(candidate):
            return candidate
    applied_from = pod["metadata"].get("annotations", {}).get(LOCAL_WORKDIR_ANNOTATION)
    if applied_from and os.path.isdir(applied_from):
        return applied_from
    return default
