"""A pod's log files on this machine: a size-capped, rotated writer (the shim's) and the readers of its files.

Why a writer in the shim rather than the workload writing straight to a file: a file written by another
process can only be capped by truncating it under the writer's feet (losing lines mid-write) or copying it
(doubling the disk for a moment). The kubelet's answer is the same as ours: the container's stdout is a
pipe, and the one process reading it (conmon, the shim here) writes size-capped files and rotates them
itself, so nothing is lost between "full" and "rotated" and a chatty workload never holds more than
`max_files × max_bytes` on disk.

Layout, for pod P in `logs/NAMESPACE/` (the current attempt is still `P.log`, so `tail -f` works):
  P.log              the current attempt, the newest bytes
  P.log.<START>      older bytes of the same attempt; START is the offset of its first byte in the attempt
  P.log.idx          "<unix time> <offset>" lines, at most one a second: where the output of a time starts
  P.previous.log*    the attempt before (a container restarted in place, or a pod recreated with the name)
  P.meta.json        who the pod belonged to, so its logs outlive it exactly as long as its owner does

Offsets are *logical*: counted from the attempt's first byte, across rotations, so a reader keeping its place
(metric histories) stays valid when files rotate. Bytes rotated away read as newlines (nothing to parse, the
offsets still add up). This module imports only the standard library: the shim loads it on every pod start.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterator

DEFAULT_MAX_BYTES = 50 << 20
DEFAULT_MAX_FILES = 2
MAX_INDEX_ENTRIES = 4096  # past this, every other entry goes: --since gets coarser, the index stays small
READ_CHUNK = 1 << 16


def previous_path(path: Path) -> Path:
    """P.log → P.previous.log."""
    return path.with_name(path.name[:-len(".log")] + ".previous.log")


def meta_path(path: Path) -> Path:
    return path.with_name(path.name[:-len(".log")] + ".meta.json")


def _backup_re(path: Path) -> re.Pattern[str]:
    return re.compile(re.escape(path.name) + r"\.(\d+)")


def segments(path: Path) -> list[tuple[int, Path]]:
    """(logical start, file) of every file of the attempt at `path`, oldest first; the current file last."""
    pattern = _backup_re(path)
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    backups = sorted((int(m.group(1)), path.parent / n) for n in names if (m := pattern.fullmatch(n)))
    out = list(backups)
    base = 0
    if backups:
        start, newest = backups[-1]
        try:
            base = start + newest.stat().st_size
        except FileNotFoundError:
            return segments(path)  # rotated while we looked: look again
    if path.name in names:
        out.append((base, path))
    return out


def _size(file: Path) -> int:
    try:
        return file.stat().st_size
    except FileNotFoundError:
        return 0


def end_offset(path: Path) -> int:
    segs = segments(path)
    return segs[-1][0] + _size(segs[-1][1]) if segs else 0


def read_range(path: Path, offset: int, max_bytes: int) -> bytes:
    """Up to `max_bytes` from logical `offset`; b"" at the end. Bytes already rotated away read as b"\\n"."""
    segs = segments(path)
    if not segs or max_bytes <= 0:
        return b""
    if offset < segs[0][0]:
        return b"\n" * min(segs[0][0] - offset, max_bytes)
    for (start, file), nxt in zip(segs, segs[1:] + [(None, None)]):
        if nxt[0] is not None and offset >= nxt[0]:
            continue
        try:
            with open(file, "rb") as fh:
                fh.seek(offset - start)
                data = fh.read(max_bytes)
        except FileNotFoundError:
            return read_range(path, offset, max_bytes)  # rotated away while we read: read it again
        if data or nxt[0] is None:
            return data
        offset = nxt[0]
    return b""


def tail_offset(path: Path, lines: int, window: int = 1 << 20) -> int:
    """The offset of the start of the last `lines` lines (looking back at most `window` bytes)."""
    end = end_offset(path)
    if lines <= 0:
        return end
    start = max(0, end - window)
    data = b"".join(iter_range(path, start, end))
    kept = data.splitlines(keepends=True)[-lines:]
    return end - sum(len(line) for line in kept)


def offset_since(path: Path, cutoff: float) -> int:
    """The offset of the first line written at or after `cutoff` (unix time), to about a second."""
    for when, offset in read_index(path):
        # An entry is written with the first bytes of a second; the bytes up to the next entry were all
        # written within that same second (a later second starts a new entry).
        if int(when) + 1 > cutoff:
            return _line_start(path, offset)
    return end_offset(path)


def _line_start(path: Path, offset: int) -> int:
    """`offset` if a line starts there, else the start of the next line."""
    if offset <= 0:
        return 0
    before = read_range(path, offset - 1, 1)
    if before in (b"\n", b""):
        return offset
    ahead = offset
    while True:
        data = read_range(path, ahead, READ_CHUNK)
        if not data:
            return ahead
        newline = data.find(b"\n")
        if newline >= 0:
            return ahead + newline + 1
        ahead += len(data)


def read_index(path: Path) -> list[tuple[float, int]]:
    try:
        text = Path(str(path) + ".idx").read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out.append((float(parts[0]), int(parts[1])))
            except ValueError:
                continue
    return out


def iter_range(path: Path, offset: int, end: int | None = None) -> Iterator[bytes]:
    """The attempt's bytes from `offset` (to `end`, or to what is there now)."""
    while end is None or offset < end:
        data = read_range(path, offset, READ_CHUNK if end is None else min(READ_CHUNK, end - offset))
        if not data:
            return
        offset += len(data)
        yield data


def follow(path: Path, offset: int, running: Callable[[], bool], poll: float = 0.2) -> Iterator[bytes]:
    """The attempt's bytes from `offset`, then what is written next until `running()` turns false. Yields b""
    while idle, so a consumer whose client went away notices."""
    while True:
        got = False
        for chunk in iter_range(path, offset):
            offset += len(chunk)
            got = True
            yield chunk
        if got:
            continue
        if not running():
            yield from iter_range(path, offset)  # what the last moments wrote
            return
        yield b""
        time.sleep(poll)  # a file has no change notification that works everywhere


def attempt_files(path: Path) -> list[Path]:
    """Every file of the attempt at `path`: backups, the current file, its index."""
    return [f for _, f in segments(path)] + [p for p in [Path(str(path) + ".idx")] if p.exists()]


def start_new_attempt(path: Path) -> None:
    """The attempt at `path` becomes the previous one (replacing that); the next starts empty. Kubernetes
    keeps the logs of one previous container too."""
    current = attempt_files(path)
    if not current:
        return  # nothing ran (a start that failed): the previous attempt stays the previous one
    previous = previous_path(path)
    for old in attempt_files(previous):
        old.unlink(missing_ok=True)
    for file in current:
        os.replace(file, previous.with_name(previous.name + file.name[len(path.name):]))


def remove_pod_logs(path: Path) -> None:
    for file in attempt_files(path) + attempt_files(previous_path(path)) + [meta_path(path)]:
        file.unlink(missing_ok=True)


def write_meta(path: Path, meta: dict[str, Any]) -> None:
    target = meta_path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, target)


def read_meta(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(meta_path(path).read_text())
    except (FileNotFoundError, ValueError):
        return None


class RotatingLog:
    """Writes one attempt's output: `P.log` up to `max_bytes`, then it becomes a backup and a new `P.log`
    starts; at most `max_files` files (the current one included) are kept, as the kubelet's
    containerLogMaxSize / containerLogMaxFiles do."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES, max_files: int = DEFAULT_MAX_FILES,
                 clock: Callable[[], float] = time.time):
        if max_bytes < 1 or max_files < 2:
            raise ValueError("a pod log needs max_bytes >= 1 and max_files >= 2")
        self.path, self._max_bytes, self._max_files, self._clock = path, max_bytes, max_files, clock
        path.parent.mkdir(parents=True, exist_ok=True)
        segs = segments(path)
        self._base = segs[-1][0] if segs and segs[-1][1] == path else end_offset(path)
        self._fh = open(path, "ab", buffering=0)
        self._size = self._fh.tell()
        self._index = Path(str(path) + ".idx")
        self._entries = read_index(path)
        self._index_fh = open(self._index, "a")
        self._indexed_second = int(self._entries[-1][0]) if self._entries else -1

    def write(self, data: bytes) -> None:
        now = self._clock()
        if int(now) > self._indexed_second and data:
            self._indexed_second = int(now)
            self._entries.append((now, self._base + self._size))
            self._index_fh.write(f"{now:.3f} {self._base + self._size}\n")
            self._index_fh.flush()
            if len(self._entries) > MAX_INDEX_ENTRIES:
                self._entries = self._entries[::2]
                self._rewrite_index()
        view = memoryview(data)
        while view:
            if self._size >= self._max_bytes:
                self._rotate()
            take = view[:self._max_bytes - self._size]
            self._fh.write(take)
            self._size += len(take)
            view = view[len(take):]

    def _rotate(self) -> None:
        self._fh.close()
        os.replace(self.path, self.path.with_name(f"{self.path.name}.{self._base}"))
        self._base += self._size
        backups = [s for s in segments(self.path)]  # the current file is gone for the moment: all backups
        for _, old in backups[:max(0, len(backups) - (self._max_files - 1))]:
            old.unlink(missing_ok=True)
        self._fh = open(self.path, "ab", buffering=0)
        self._size = 0
        oldest = segments(self.path)[0][0]
        kept = [e for e in self._entries if e[1] >= oldest]
        if len(kept) != len(self._entries):
            self._entries = kept
            self._rewrite_index()

    def _rewrite_index(self) -> None:
        self._index_fh.close()
        tmp = self._index.with_name(self._index.name + ".tmp")
        tmp.write_text("".join(f"{t:.3f} {o}\n" for t, o in self._entries))
        os.replace(tmp, self._index)
        self._index_fh = open(self._index, "a")

    def close(self) -> None:
        self._fh.close()
        self._index_fh.close()
