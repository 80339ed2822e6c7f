"""The part of every reconcile that is about existence, shared by the controllers of every kind.

Gone from the store → clean up by name (a resource deleted before its first reconcile never got the
finalizer). Being deleted → the kind's finalize step, which calls `release` once its children are gone.
Otherwise make sure the finalizer is there, then the kind's live reconcile; a Conflict there means someone
wrote in between, so the object is read again at once.
"""

from __future__ import annotations

from typing import Any, Callable

from shipyard.store.protocol import Conflict, NotFound, Store

from .manager import ObjectKey, Result

FINALIZER = "shipyard.dev/cleanup"


def reconcile_lifecycle(store: Store, kind: str, key: ObjectKey, *, gone: Callable[[str, str], None],
                        finalize: Callable[[Any], Result], live: Callable[[Any], Result]) -> Result:
    resource = store.get(kind, key.namespace, key.name)
    if resource is None:
        gone(key.namespace, key.name)
        return Result()
    if resource.metadata.deletion_timestamp is not None:
        return finalize(resource)
    if FINALIZER not in resource.metadata.finalizers:
        resource.metadata.finalizers.append(FINALIZER)
        resource = store.update_metadata(resource)
    try:
        return live(resource)
    except Conflict:
        return Result(requeue_after=0)


def release(store: Store, resource: Any) -> Result:
    """Remove the finalizer (the children are gone): the store then completes the deletion."""
    if FINALIZER in resource.metadata.finalizers:
        resource.metadata.finalizers.remove(FINALIZER)
        try:
            store.update_metadata(resource)
        except (Conflict, NotFound):
            return Result(requeue_after=0)
    return Result()
