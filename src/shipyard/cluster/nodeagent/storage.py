"""A tiny dynamic provisioner: every PersistentVolumeClaim waiting for a volume gets a hostPath one.

Kubernetes binds claims in two halves: a provisioner creates a PersistentVolume for a claim, and the PV
controller (kube-controller-manager) binds the two; the scheduler's VolumeBinding plugin keeps a pod with an
unbound claim unschedulable until then. A cluster without a storage driver has nothing to do the first half,
so the agent does it: for each claim that is Pending without spec.volumeName (any namespace, any class), a PV
named `pvc-<claim uid>` with `hostPath` ROOT/volumes/NS/NAME, the claim's request as capacity, its access
modes, volume mode and storage class, reclaim policy Delete, and a claimRef to the claim, so the PV controller
binds exactly that pair (a pre-bound PV is bound whatever the class's binding mode says).

Deleting: the PV is annotated `pv.kubernetes.io/provisioned-by: shipyard.dev/node-agent`, which tells the PV
controller that an external provisioner deletes it; once its claim is gone and it is Released, the agent
removes its directory (unless a live PV uses the same one: a claim recreated under the same name) and the PV.
Every Node of the agent shares this machine's disk, so the PVs need no node affinity.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import Any

from shipyard.cluster.api import KubeApi, KubeConflict, KubeError
from shipyard.runtime.local.volumes import claim_dir

log = logging.getLogger(__name__)

PROVISIONER = "shipyard.dev/node-agent"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
RESYNC_SECONDS = 10.0


def wants_volume(claim: dict[str, Any]) -> bool:
    return (not claim["spec"].get("volumeName") and not claim["metadata"].get("deletionTimestamp")
            and claim.get("status", {}).get("phase", "Pending") == "Pending")


def volume_for(claim: dict[str, Any], volumes_root: Path) -> dict[str, Any]:
    """The PersistentVolume provisioned for `claim` (pure)."""
    meta, spec = claim["metadata"], claim["spec"]
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": f"pvc-{meta['uid']}", "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "capacity": {"storage": spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")},
            "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
            "volumeMode": spec.get("volumeMode", "Filesystem"),
            "storageClassName": spec.get("storageClassName") or "",
            "persistentVolumeReclaimPolicy": "Delete",
            "hostPath": {"path": str(claim_dir(volumes_root, meta["namespace"], meta["name"])),
                         "type": "DirectoryOrCreate"},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                         "name": meta["name"], "uid": meta["uid"]},
        },
    }


def ours(volume: dict[str, Any]) -> bool:
    return volume["metadata"].get("annotations", {}).get(PROVISIONED_BY) == PROVISIONER


class Provisioner:
    def __init__(self, api: KubeApi, volumes_root: Path):
        self._api = api
        self._root = volumes_root
        self._wake = threading.Event()

    def reconcile(self) -> None:
        claims = self._api.list("PersistentVolumeClaim")
        volumes = self._api.list("PersistentVolume")
        names = {v["metadata"]["name"] for v in volumes}
        for claim in claims:
            if not wants_volume(claim):
                continue
            volume = volume_for(claim, self._root)
            if volume["metadata"]["name"] in names:
                continue  # made already; the PV controller has yet to bind it
            Path(volume["spec"]["hostPath"]["path"]).mkdir(parents=True, exist_ok=True)
            try:
                self._api.create(volume)
                log.info("provisioned %s for claim %s/%s", volume["metadata"]["name"], claim["metadata"]["namespace"],
                         claim["metadata"]["name"])
            except KubeConflict:
                pass
        live = {v["spec"].get("hostPath", {}).get("path") for v in volumes
                if v.get("status", {}).get("phase") != "Released"}
        for volume in volumes:
            if not ours(volume) or volume.get("status", {}).get("phase") != "Released" \
                    or volume["spec"].get("persistentVolumeReclaimPolicy") != "Delete":
                continue
            path = volume["spec"].get("hostPath", {}).get("path")
            if path and path not in live and Path(path).is_relative_to(self._root):
                shutil.rmtree(path, ignore_errors=True)
            self._api.delete("PersistentVolume", None, volume["metadata"]["name"])
            log.info("deleted released %s", volume["metadata"]["name"])

    def wake(self) -> None:
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        watchers = [threading.Thread(target=self._watch, args=(kind, stop), daemon=True,
                                     name=f"nodeagent-watch-{kind}") for kind in ("PersistentVolumeClaim",
                                                                                 "PersistentVolume")]
        for watcher in watchers:
            watcher.start()
        while not stop.is_set():
            try:
                self.reconcile()
            except KubeError as exc:
                log.warning("provisioning failed: %s", exc)
            self._wake.wait(RESYNC_SECONDS)
            self._wake.clear()

    def _watch(self, kind: str, stop: threading.Event) -> None:
        for _ in self._api.watch(kind, None, None, stop):
            self._wake.set()
