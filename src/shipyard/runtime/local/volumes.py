"""Local volumes: a PersistentVolumeClaim is a directory under SHIPYARD_HOME/volumes/NS/NAME.

No bind mounts (they need privileges most users do not have), so the mount path is substituted instead:
wherever a container's command, args, env values or workingDir mention a volume's mountPath as a path
(`/ckpt` or `/ckpt/run1`, also inside `--dir=/ckpt/x`), the runtime writes the volume's directory in its
place, and exports SHIPYARD_VOLUME_<NAME> too. A secret volume is a directory of files on a tmpfs outside
SHIPYARD_HOME (secretvolumes.py), which the kubelet hands mount_map as a `source`. A path a program builds from a constant inside its own code
is not seen: pass volume paths by flag or env, which is the contract (docs/contracts.md).

The cluster node agent substitutes the same way, but finds a claim's directory through its bound
PersistentVolume and writes configMap/secret volumes as files: it hands mount_map a `source` that places
those volumes, and leaves emptyDir to the default here.

An emptyDir is a directory in the pod's directory (POD_DIR/emptydir/NAME), made at the container's start and
kept across its restarts in place, removed with the pod, as Kubernetes keeps it for the pod's lifetime.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

# emptyDirs at these paths are the machine's own directories, not substituted: /dev/shm's shared memory, and
# /tmp (a compiled pod's scratch for its read-only root, compiler/common.py), whose substitution would move
# every `/tmp/...` path a user passes in args or env to the pod's directory. Python's tempfile and torch's
# caches use the machine's /tmp as they do outside Shipyard. Every other emptyDir (a pod's HOME) is a directory
# of the pod's own, gone with it.
MACHINE_OWN = ("/dev/shm", "/tmp")
# A volume → its local directory, or None to use the local runtime's own rule for it.
VolumeSource = Callable[[dict[str, Any]], "Path | None"]


def claim_dir(root: Path, namespace: str, claim: str) -> Path:
    return root / namespace / claim


def mount_map(pod: dict[str, Any], container: dict[str, Any], volumes_root: Path, pod_dir: Path,
              source: VolumeSource | None = None) -> dict[str, Path]:
    """mountPath → local directory for every mount the local runtime substitutes; `source` places volumes
    first (see the module docstring)."""
    sources = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    out: dict[str, Path] = {}
    for mount in container.get("volumeMounts", []):
        volume = sources.get(mount["name"])
        if volume is None:
            continue
        placed = source(volume) if source is not None else None
        if placed is not None:
            path = placed
        elif "persistentVolumeClaim" in volume:
            path = claim_dir(volumes_root, pod["metadata"]["namespace"], volume["persistentVolumeClaim"]["claimName"])
        elif "emptyDir" in volume:
            if mount["mountPath"].rstrip("/") in MACHINE_OWN:
                continue  # the machine's own serves the same purpose (see MACHINE_OWN)
            path = pod_dir / "emptydir" / mount["name"]
        else:
            raise ValueError(f"volume {mount['name']}: only persistentVolumeClaim, emptyDir and secret volumes are "
                             "supported locally")
        path.mkdir(parents=True, exist_ok=True)
        out[mount["mountPath"].rstrip("/") or "/"] = path
    return out


def substitute(text: str, mounts: dict[str, Path]) -> str:
    for mount_path in sorted(mounts, key=len, reverse=True):
        pattern = r"(?<![\w.\-/])" + re.escape(mount_path) + r"(?=/|$|[^\w.\-])"
        text = re.sub(pattern, lambda _m, p=str(mounts[mount_path]): p, text)
    return text
