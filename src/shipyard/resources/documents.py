"""Manifest text split into documents, bounded before parsing, with errors that name file, document and field.

Kept apart from the models (manifest.py validates documents into resources): the CLI reads and completes
manifests on every `apply`, and sending them to a control plane that validates them needs no pydantic model
in the CLI's process (importing the kinds would cost `apply` more CPU than everything else it does).
A 10 MB document or a YAML alias bomb is refused rather than expanded. No I/O here: callers pass the text.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import yaml

# Set by the CLI on each document: the directory a local run starts its processes in (the manifest's own).
LOCAL_WORKDIR_ANNOTATION = "shipyard.dev/local-workdir"

MAX_DOCUMENT_BYTES = 1 << 20  # an object larger than etcd's 1.5 MiB limit could never be stored on a cluster
MAX_TEXT_BYTES = 16 << 20
MAX_EXPANDED_NODES = 100_000  # generous for any real manifest, far below what an alias bomb expands to


class ManifestError(ValueError):
    def __init__(self, source: str, document: int | None, path: str, message: str):
        self.source, self.document, self.path, self.message = source, document, path, message
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [self.source]
        if self.document is not None:
            parts.append(f"document {self.document}")
        if self.path:
            parts.append(self.path)
        return ": ".join(parts + [self.message])

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "document": self.document, "path": self.path, "message": self.message}


class Document(NamedTuple):  # not a dataclass: `apply` imports this, and dataclasses costs it ~20 ms
    source: str
    index: int  # 1-based, as people count documents in a file
    body: Any


def _expanded_size(node: yaml.Node, memo: dict[int, int], depth: int = 0) -> int:
    """How many nodes the document becomes once aliases are expanded (the JSON the API would receive)."""
    if depth > 200:
        raise ValueError("nesting deeper than 200 levels")
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1  # breaks cycles (recursive anchors), which are refused later anyway
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, memo, depth + 1) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, memo, depth + 1) + _expanded_size(v, memo, depth + 1) for k, v in node.value)
    memo[key] = size
    if size > MAX_EXPANDED_NODES:
        raise ValueError(f"expands to more than {MAX_EXPANDED_NODES} nodes (a YAML alias bomb?)")
    return size


def parse_yaml(text: str | bytes, source: str) -> list[Document]:
    """Split multi-document YAML into plain documents, refusing oversize and explosive input."""
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > MAX_TEXT_BYTES:
        raise ManifestError(source, None, "", f"is {len(raw) / 1e6:.1f} MB; the limit is {MAX_TEXT_BYTES >> 20} MiB")
    decoded = raw.decode("utf-8", errors="strict") if isinstance(text, bytes) else text
    documents: list[Document] = []
    index = 0
    try:
        loader = yaml.SafeLoader(decoded)
        try:
            while loader.check_node():
                index += 1
                start = loader.peek_event().start_mark.index if loader.peek_event() else 0
                node = loader.get_node()
                end = loader.peek_event().start_mark.index if loader.check_event() else len(decoded)
                if end - start > MAX_DOCUMENT_BYTES:
                    raise ManifestError(source, index, "",
                                        f"is {(end - start) / 1e6:.1f} MB; a document may have at most 1 MiB")
                if node is None:
                    continue
                try:
                    _expanded_size(node, {})
                except ValueError as exc:
                    raise ManifestError(source, index, "", str(exc)) from None
                body = loader.construct_document(node)
                if body is not None:
                    documents.append(Document(source, index, body))
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ManifestError(source, index or 1, "", f"YAML syntax error at {where}{problem}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(source, index or 1, "", f"YAML error: {exc}") from None
    except UnicodeDecodeError:
        raise ManifestError(source, None, "", "is not UTF-8 text") from None
    except RecursionError:
        raise ManifestError(source, index or 1, "", "nesting too deep") from None
    return documents
