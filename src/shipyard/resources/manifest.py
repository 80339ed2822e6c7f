"""Turning manifest text into validated resources, with errors a person can act on.

Every refusal names the source (file or '-'), the document number and the field path, on one line, because
a user applying a directory of multi-document YAML must find the one bad field without a traceback.
Splitting text into documents (bounded: documents.py) needs no model; validating them here does.
No I/O here: callers read files and pass the text.
"""

from __future__ import annotations

from pydantic import ValidationError

from .base import API_VERSION, FieldError, Resource, format_loc, join_path
from .documents import (  # noqa: F401 - re-exported: the manifest API is one module to its users
    MAX_DOCUMENT_BYTES, MAX_EXPANDED_NODES, MAX_TEXT_BYTES, Document, ManifestError, parse_yaml)
from .registry import KINDS

def validate_document(doc: Document) -> Resource:
    """Validate one plain document into its kind's model, or raise ManifestError naming the field."""
    body = doc.body
    if not isinstance(body, dict):
        raise ManifestError(doc.source, doc.index, "", f"must be a mapping (an object), not {type(body).__name__}")
    api_version = body.get("apiVersion")
    if api_version is None:
        raise ManifestError(doc.source, doc.index, "apiVersion", f"is required (use {API_VERSION!r})")
    if api_version != API_VERSION:
        raise ManifestError(doc.source, doc.index, "apiVersion",
                            f"{api_version!r} is not served by Shipyard (use {API_VERSION!r})")
    kind = body.get("kind")
    if kind is None:
        raise ManifestError(doc.source, doc.index, "kind", "is required")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ManifestError(doc.source, doc.index, "kind",
                            f"{kind!r} is not a Shipyard kind (known: {', '.join(sorted(KINDS))})")
    try:
        return cls.model_validate(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        path = format_loc(tuple(err["loc"]))
        message = err["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, "):]
        error = (err.get("ctx") or {}).get("error")
        if isinstance(error, FieldError):
            path, message = join_path(path, error.path), error.message
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "missing":
            message = "required field is missing"
        more = len(exc.errors()) - 1
        if more:
            message += f" (and {more} more error{'s' if more > 1 else ''})"
        raise ManifestError(doc.source, doc.index, path, message) from None


def load_resources(documents: list[Document]) -> list[Resource]:
    """Validate all documents or none: the first error aborts the whole set (nothing half-applied)."""
    resources = [validate_document(d) for d in documents]
    seen: dict[tuple[str, str, str], Document] = {}
    for res, doc in zip(resources, documents):
        if res.key in seen:
            raise ManifestError(doc.source, doc.index, "metadata.name",
                                f"{res.ref} is also defined in document {seen[res.key].index}")
        seen[res.key] = doc
    return resources
