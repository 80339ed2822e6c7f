"""Secret volumes on one machine: a Secret's keys as files, on a tmpfs, never under SHIPYARD_HOME.

The kubelet writes a secret volume into a tmpfs of the node and bind-mounts it read-only; the local runtime
has no mounts (volumes.py substitutes mount paths instead), so it writes the files into a directory of its own
and substitutes that directory for the volume's mountPath, as it does for a claim's:

- Where: `/dev/shm` (a tmpfs on Linux: the values never reach a disk), else `$XDG_RUNTIME_DIR` (the user's
  tmpfs on systemd machines), else the temporary directory, with a warning in the daemon's log saying that
  the files may reach a disk there. Never SHIPYARD_HOME, whose files outlive the pod and get backed up.
- Layout: `BASE/shipyard-UID/RUNTIME/POD-UID/VOLUME/PATH`, RUNTIME a digest of the runtime's own directory
  (several daemons of one user, each with its SHIPYARD_HOME, never touch each other's pods). Every directory
  is 0700 and the user's own (a `shipyard-UID` that is not, e.g. planted in the shared /dev/shm by someone
  else, is refused); files have the volume's `defaultMode` or the item's `mode` (0400 unless set).
- Lifetime: written at each container start (so an updated Secret is seen at the next restart), removed when
  the container stops (exit, crash-loop wait, deletion) and, when the daemon starts, for every pod that is not
  running any more (a daemon that died while pods stopped leaves nothing behind for long).
- A missing Secret, or a missing key named in `items`, fails the container's start as a missing
  `secretKeyRef` does (CreateContainerConfigError, retried).

The pod's user could still chmod a file and write it: without a mount there is no read-only filesystem.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Mapping

from ..pods import secret_bytes

log = logging.getLogger(__name__)

DEFAULT_MODE = 0o400  # as the compiler writes it (resources.trainingjob.DEFAULT_SECRET_MODE)


def choose_base(env: Mapping[str, str] | None = None, shm: Path = Path("/dev/shm")) -> tuple[Path, str | None]:
    """The directory secret volumes go under, and why it is not a tmpfs (None when it is one)."""
    env = os.environ if env is None else env
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return shm, None
    runtime_dir = env.get("XDG_RUNTIME_DIR")
    if runtime_dir and Path(runtime_dir).is_dir() and os.access(runtime_dir, os.W_OK | os.X_OK):
        return Path(runtime_dir), None
    tmp = Path(tempfile.gettempdir())
    return tmp, (f"neither /dev/shm nor $XDG_RUNTIME_DIR is a writable directory here: secret volumes are written "
                 f"under {tmp}, which may be on a disk")


def _private_dir(path: Path) -> None:
    """Create `path` 0700, or check that the existing one is a directory of ours that nobody else can enter."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise ValueError(f"{path} is not a directory of this user: refusing to write secret volumes there")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)


def volume_files(volume: dict[str, Any], secret: dict[str, Any] | None) -> dict[str, tuple[bytes, int]]:
    """A pod's `secret` volume as files: relative path → (content, mode). Raises ValueError when the Secret,
    or a key its `items` name, is not there (yet)."""
    source = volume["secret"]
    name = source.get("secretName", "")
    if secret is None:
        raise ValueError(f"volume {volume['name']}: secret {name!r} not found (yet)")
    default_mode = int(source.get("defaultMode", DEFAULT_MODE))
    items = source.get("items") or [{"key": key, "path": key}
                                    for key in sorted({**(secret.get("data") or {}), **(secret.get("stringData") or {})})]
    files: dict[str, tuple[bytes, int]] = {}
    for item in items:
        content = secret_bytes(secret, item["key"])
        if content is None:
            raise ValueError(f"volume {volume['name']}: secret {name!r} has no key {item['key']!r} (yet)")
        rel = item["path"]
        if rel.startswith("/") or any(part in ("", ".", "..") for part in rel.split("/")):
            raise ValueError(f"volume {volume['name']}: path {rel!r} must stay inside the volume")
        files[rel] = (content, int(item.get("mode", default_mode)))
    return files


class SecretVolumes:
    """The secret volumes of one local runtime's pods (see the module docstring)."""

    def __init__(self, runtime_root: Path, base: Path | None = None):
        reason = None
        if base is None:
            base, reason = choose_base()
        self._base = base
        self._reason = reason
        digest = hashlib.sha256(str(Path(runtime_root).resolve()).encode()).hexdigest()[:16]
        self.root = base / f"shipyard-{os.getuid()}" / digest
        self._warned = False

    def pod_root(self, pod_uid: str) -> Path:
        return self.root / pod_uid

    def place(self, pod: dict[str, Any], volume: dict[str, Any], secrets: dict[str, dict[str, Any]]) -> Path:
        """Write the volume's files afresh and return its directory (what the mountPath stands for)."""
        files = volume_files(volume, secrets.get(volume["secret"].get("secretName", "")))
        if self._reason and not self._warned:
            log.warning("%s", self._reason)
            self._warned = True
        self._base.mkdir(mode=0o700, parents=True, exist_ok=True)  # /dev/shm is there; a configured base may not be
        _private_dir(self.root.parent)
        self.root.mkdir(mode=0o700, exist_ok=True)
        pod_root = self.pod_root(pod["metadata"]["uid"])
        pod_root.mkdir(mode=0o700, exist_ok=True)
        target = pod_root / volume["name"]
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(mode=0o700)
        for rel, (content, mode) in sorted(files.items()):
            path = target / rel
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
                fh.flush()
                os.fchmod(fh.fileno(), mode)  # after writing: a 0400 file is still written through this descriptor
        return target

    def remove(self, pod_uid: str) -> None:
        if pod_uid:
            shutil.rmtree(self.pod_root(pod_uid), ignore_errors=True)
            try:
                self.root.rmdir()  # only once empty: leave no directory per SHIPYARD_HOME behind in /dev/shm
            except OSError:
                pass

    def remove_stale(self, live_uids: set[str]) -> list[str]:
        """Remove the volumes of every pod not in `live_uids`; returns the uids removed."""
        try:
            entries = list(self.root.iterdir())
        except OSError:
            return []
        removed = []
        for entry in entries:
            if entry.name not in live_uids:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
        return sorted(removed)
