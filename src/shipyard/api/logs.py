"""Replica logs over HTTP: the LogSource seam and the bridge from its blocking iterator to a streaming body.

A runtime that can show logs implements LogSource; one that cannot is simply absent (the API answers 501).
Iterators block (they tail files or a cluster's log stream), so every step runs in a worker thread, and the
first chunk is fetched before the response starts so that "no such replica" is still a clean 404 rather than
a stream that ends early.
"""

from __future__ import annotations

import logging
from typing import AsyncIterator, Iterator, Protocol

import anyio
import anyio.to_thread

from shipyard.resources import Resource
from shipyard.store import NotFound

log = logging.getLogger("shipyard.api")

_END = object()


class LogSource(Protocol):
    def stream(self, resource: Resource, replica: int, follow: bool, tail_lines: int | None) -> Iterator[bytes]:
        """Bytes of replica `replica`'s log; with `follow`, keep yielding as it grows until the replica ends.

        Raise shipyard.store.NotFound when there is no such replica or log. A following iterator should
        yield (b"" is fine) at least every few seconds while idle, so a stream whose client went away ends.
        """
        ...


async def open_log_stream(source: LogSource, resource: Resource, replica: int, follow: bool,
                          tail_lines: int | None, limiter: anyio.CapacityLimiter) -> AsyncIterator[bytes]:
    """Start the stream (NotFound propagates from here, before any byte is sent) and return its body."""

    def start() -> tuple[Iterator[bytes], object]:
        iterator = iter(source.stream(resource, replica, follow, tail_lines))
        return iterator, next(iterator, _END)

    iterator, first = await anyio.to_thread.run_sync(start, limiter=limiter)

    async def body() -> AsyncIterator[bytes]:
        chunk = first
        busy = False
        try:
            while chunk is not _END:
                if chunk:
                    yield chunk  # type: ignore[misc]
                busy = True
                # Abandon (rather than wait for) a thread blocked on a quiet follow when the client leaves.
                chunk = await anyio.to_thread.run_sync(next, iterator, _END, abandon_on_cancel=True,
                                                       limiter=limiter)
                busy = False
        except NotFound:
            return  # the replica vanished mid-stream: the log simply ends
        except Exception:
            log.exception("log stream of %s replica %d failed", resource.ref, replica)
        finally:
            close = getattr(iterator, "close", None)
            # A generator still running in an abandoned thread cannot be closed; it is collected later.
            if close is not None and not busy:
                close()

    return body()
