"""Storage of Shipyard resources behind a small protocol (SQLite locally; custom resources on a cluster)."""

from .protocol import ApplyResult, Conflict, Event, Gone, Invalid, NotFound, Store, StoreError, WatchEvent

__all__ = ["ApplyResult", "Conflict", "Event", "Gone", "Invalid", "NotFound", "Store", "StoreError", "WatchEvent"]
