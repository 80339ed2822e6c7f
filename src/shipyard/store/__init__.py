"""Storage of Shipyard resources behind a small protocol (SQLite locally; custom resources on a cluster)."""

from .protocol import (
    ApiKey, ApiKeyStore, ApplyResult, Conflict, Event, Gone, Invalid, NotFound, Store, StoreError, WatchEvent,
)

__all__ = ["ApiKey", "ApiKeyStore", "ApplyResult", "Conflict", "Event", "Gone", "Invalid", "NotFound", "Store",
           "StoreError", "WatchEvent"]
