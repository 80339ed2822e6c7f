"""Storage of Shipyard resources behind a small protocol (SQLite locally; custom resources on a cluster)."""

from .protocol import (
    ApiKey, ApiKeyStore, ApplyResult, BadRequest, Conflict, Event, Gone, Invalid, ListPage, NotFound, PagedLister,
    Store, StoreError, WatchEvent,
)

__all__ = ["ApiKey", "ApiKeyStore", "ApplyResult", "BadRequest", "Conflict", "Event", "Gone", "Invalid", "ListPage",
           "NotFound", "PagedLister", "Store", "StoreError", "WatchEvent"]
