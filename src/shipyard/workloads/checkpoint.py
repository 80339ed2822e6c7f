"""Atomic training checkpoints in a directory, safe against a crash (or SIGKILL) at any instant.

Layout of a checkpoint directory:

    step-00000050/state.pt     torch.save of the state dict
    step-00000050/meta.json    step, size and sha256 of every file; written last
    latest                     "step-00000050": the last checkpoint whose save completed
    .tmp-*                     a save in progress, or one that crashed (removed by the next save)

A save writes everything under a temporary name, fsyncs files and directory, renames it to `step-N`, then
atomically replaces `latest`. A crash before the rename leaves only a `.tmp-*` (ignored); a crash between the
rename and the pointer leaves a complete `step-N` that `latest` does not name yet (the previous one is used).
`load_latest` also verifies the checksums, so a truncated or bit-rotten checkpoint (a copy that ran out of
disk, a hand-edited directory) is skipped in favour of the newest one that is whole. `latest` is honoured
first, which also lets an operator roll a run back by pointing it at an older step.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

POINTER = "latest"
STATE_FILE = "state.pt"
META_FILE = "meta.json"
_STEP_DIR = re.compile(r"^step-(\d{8,})$")


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path
    state: dict[str, Any]


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def _fsync_dir(path: Path) -> None:
    # A rename is durable only once the directory that holds it is synced.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_synced(path: Path, write) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` so that readers see the old or the new content, never a mix."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from other users of a shared volume
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """Every `step-N` directory (complete or not), oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return sorted(found)


def is_valid(path: str | os.PathLike) -> bool:
    """Whether the checkpoint at `path` is complete: meta.json present and every file's size and hash match."""
    path = Path(path)
    try:
        meta = json.loads((path / META_FILE).read_text())
        files = meta["files"]
        if STATE_FILE not in files:
            return False
        for name, info in files.items():
            f = path / name
            if f.stat().st_size != info["bytes"] or _sha256(f) != info["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _remove_stale(directory: Path) -> None:
    # One writer per directory (rank 0), so any temp entry here belongs to a save that crashed.
    for p in directory.glob(".tmp-*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def save(directory: str | os.PathLike, state: dict[str, Any], step: int, keep: int = 3) -> Path:
    """Write `state` as checkpoint `step`, point `latest` at it, and keep only the newest `keep` checkpoints."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _remove_stale(directory)
    tmp = Path(tempfile.mkdtemp(dir=directory, prefix=f".tmp-{step_dir_name(step)}-"))
    try:
        os.chmod(tmp, 0o755)
        _write_synced(tmp / STATE_FILE, lambda f: torch.save(state, f))
        meta = {"format": 1, "step": step, "created": time.time(),
                "files": {STATE_FILE: {"bytes": (tmp / STATE_FILE).stat().st_size,
                                       "sha256": _sha256(tmp / STATE_FILE)}}}
        _write_synced(tmp / META_FILE, lambda f: f.write(json.dumps(meta, indent=1).encode()))
        _fsync_dir(tmp)
        final = directory / step_dir_name(step)
        if final.exists():
            # Saving a step again (a resumed run that reached the end, a rollback): move the old one aside
            # first, since a directory cannot be renamed over a non-empty one.
            old = directory / f".tmp-old-{final.name}-{os.getpid()}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync_dir(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(directory / POINTER, final.name + "\n")
    for _, path in list_checkpoints(directory)[:-max(1, keep)]:
        if path != final:
            shutil.rmtree(path, ignore_errors=True)
    return final


def _pointer_target(directory: Path) -> Path | None:
    try:
        name = (directory / POINTER).read_text().strip()
    except OSError:
        return None
    return directory / name if _STEP_DIR.match(name) else None


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    # weights_only: a checkpoint on a shared volume must not be able to run code when loaded.
    return torch.load(Path(path) / STATE_FILE, map_location=map_location, weights_only=True)


def load_latest(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> Checkpoint | None:
    """The checkpoint `latest` names if it is whole, else the newest whole one; None if there is none."""
    directory = Path(directory)
    candidates = [p for _, p in reversed(list_checkpoints(directory))]
    target = _pointer_target(directory)
    if target is not None and target in candidates:
        candidates.remove(target)
        candidates.insert(0, target)
    for path in candidates:
        if not is_valid(path):
            print(f"checkpoint {path} is incomplete or corrupt, skipping it", file=sys.stderr, flush=True)
            continue
        try:
            state = load(path, map_location)
        except Exception as exc:  # a file that hashes right but does not unpickle: written by another torch
            print(f"checkpoint {path} does not load ({exc}), skipping it", file=sys.stderr, flush=True)
            continue
        return Checkpoint(step=int(json.loads((path / META_FILE).read_text())["step"]), path=path, state=state)
    return None


def rng_state() -> dict[str, Any]:
    """The random generators a training step may draw from (dropout, shuffling done with `random`)."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    # torch.load gives back lists where random.getstate() had tuples; setstate needs the tuples.
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
