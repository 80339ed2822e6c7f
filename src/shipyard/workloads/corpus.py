"""A pretraining corpus that needs no download: text that ships with every CPython.

Two sources, both present in a stock `python:3.11` image and in this venv, so a pod on an air-gapped cluster
trains on exactly the same bytes as a laptop:

* the Python documentation topics behind `help()` (`pydoc_data.topics.topics`): English prose;
* the standard library's own sources: code.

Everything is deterministic — sorted names, a fixed interleaving, a byte cap applied in that order — so two
ranks, two restarts or two machines with the same Python build get the same documents, the same fingerprint
(the tokenizer cache key) and the same train/validation split. The split hashes each document's *name*, not
its text, so a patch release that edits a file does not move it to the other side.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Iterable, Iterator

DEFAULT_MAX_BYTES = 16_000_000  # more than the whole corpus (~12 MB on 3.11): no cap unless asked
MAX_FILE_BYTES = 256_000  # bigger stdlib files are generated tables, not code worth learning from
# Tests, vendored packages, caches; `pydoc_data` would duplicate the topics; `encodings` is mostly
# generated codec tables (cp1252.py and friends) that would fill the vocabulary with escape sequences.
SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
                       "pydoc_data", "encodings", "lib2to3"})


@dataclass(frozen=True)
class Document:
    name: str  # "pydoc:<topic>" or "stdlib:<path relative to the stdlib directory>"
    text: str

    @property
    def nbytes(self) -> int:
        return len(self.text.encode("utf-8"))


def pydoc_documents() -> list[Document]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # a stripped-down Python; the sources alone still make a corpus
        return []
    return [Document(f"pydoc:{key}", topics[key]) for key in sorted(topics) if topics[key].strip()]


def _stdlib_paths(root: str) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        # Sorting in place also fixes the order os.walk descends in: the walk is deterministic.
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield os.path.join(dirpath, name)


def stdlib_documents(root: str | None = None) -> Iterator[Document]:
    """Standard-library sources in sorted path order, lazily (the cap usually stops the walk early)."""
    root = root or os.path.dirname(os.__file__)
    for path in _stdlib_paths(root):
        try:
            if os.path.getsize(path) > MAX_FILE_BYTES:
                continue
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError):
            continue
        if text.strip():
            yield Document("stdlib:" + os.path.relpath(path, root).replace(os.sep, "/"), text)


def _interleave(a: Iterable[Document], b: Iterable[Document]) -> Iterator[Document]:
    # Alternating prose and code keeps a small capped corpus representative of both.
    ia, ib = iter(a), iter(b)
    while True:
        got = False
        for it in (ia, ib):
            doc = next(it, None)
            if doc is not None:
                got = True
                yield doc
        if not got:
            return


def load_documents(max_bytes: int = DEFAULT_MAX_BYTES, docs: bool = True, sources: bool = True,
                   stdlib_root: str | None = None) -> list[Document]:
    """The corpus: pydoc topics and stdlib sources interleaved, at most `max_bytes` of UTF-8 in total.

    A document that would cross the cap is skipped and later, smaller ones still fill the budget; the
    result depends only on the Python installation and the arguments.
    """
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    chosen: list[Document] = []
    total = 0
    for doc in _interleave(pydoc_documents() if docs else [], stdlib_documents(stdlib_root) if sources else []):
        n = doc.nbytes
        if total + n > max_bytes:
            if max_bytes - total < 1024:  # the budget is spent; stop walking the filesystem
                break
            continue
        chosen.append(doc)
        total += n
    if not chosen:
        raise RuntimeError(f"no corpus text found under {max_bytes} bytes (is the standard library stripped?)")
    return chosen


def _unit_hash(name: str) -> float:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2**64


def split(documents: list[Document], validation_fraction: float = 0.05) -> tuple[list[Document], list[Document]]:
    """(train, validation) by a hash of each name; both non-empty when there are at least two documents."""
    if not 0 < validation_fraction < 1:
        raise ValueError("validation_fraction must be in (0, 1)")
    train = [d for d in documents if _unit_hash(d.name) >= validation_fraction]
    val = [d for d in documents if _unit_hash(d.name) < validation_fraction]
    if not val and len(train) > 1:  # a tiny corpus: still evaluate on something held out
        held = min(train, key=lambda d: _unit_hash(d.name))
        train = [d for d in train if d is not held]
        val = [held]
    return train, val


def fingerprint(documents: Iterable[Document]) -> str:
    """sha256 over names and texts in order: equal fingerprints mean an identical corpus."""
    h = hashlib.sha256()
    for doc in documents:
        for part in (doc.name, doc.text):
            data = part.encode("utf-8")
            h.update(len(data).to_bytes(8, "big"))  # length-prefixed: no two corpora hash alike by shifting
            h.update(data)
    return h.hexdigest()
