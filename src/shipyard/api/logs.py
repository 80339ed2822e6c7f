"""Replica logs over HTTP: the LogSource seam and the bridge from its blocking iterator to a streaming body.

A runtime that can show logs implements LogSource; one that cannot is simply absent (the API answers 501).
Iterators block (they tail files or a cluster's log stream), so every step runs in a worker thread, and the
first chunk is fetched before the response starts so that "no such replica" is still a clean 404 (and a
replica out of range a clean 400) rather than a stream that ends early.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import AsyncIterator, Iterator, Protocol

import anyio
import anyio.to_thread

from shipyard.resources import Resource
from shipyard.resources.selector import parse_selector
from shipyard.store import NotFound, Store

log = logging.getLogger("shipyard.api")

_END = object()


@dataclass(frozen=True)
class LogOptions:
    """What `shipyard logs` asks for; the names follow the pod log API and `kubectl logs`.

    Which pods: `pod` (by name), else `replica` (a job's completion index, a StatefulSet's ordinal, a
    Deployment's pods in creation order), else every pod with `all_pods`, else the default (replica 0 of a job,
    the newest ready pod of anything else). `selector` narrows the resource's pods by label first.
    """

    replica: int | None = None
    pod: str | None = None
    all_pods: bool = False
    selector: str = ""  # a kubectl label selector (shipyard.resources.selector)
    previous: bool = False
    follow: bool = False
    tail_lines: int | None = None
    since_seconds: int | None = None


class LogSource(Protocol):
    def stream(self, resource: Resource, options: LogOptions) -> Iterator[bytes]:
        """Bytes of the chosen pods' logs (each line prefixed `[pod/NAME] ` when more than one pod is
        asked for); with `follow`, keep yielding as they grow until the pods end.

        Raise shipyard.store.NotFound when there is no such pod or log, ValueError for options that cannot
        apply (the API answers 400). A following iterator should yield (b"" is fine) at least every few
        seconds while idle, so a stream whose client went away ends.
        """
        ...


def check_options(options: LogOptions) -> LogOptions:
    """ValueError (one line) for options that contradict each other or a selector that does not parse."""
    parse_selector(options.selector)
    chosen = [flag for flag, on in (("--pod", options.pod is not None), ("--replica", options.replica is not None),
                                    ("--all", options.all_pods)) if on]
    if len(chosen) > 1:
        raise ValueError(f"{' and '.join(chosen)} each pick the pods: give one of them")
    if options.previous and options.follow:
        raise ValueError("--previous shows an attempt that has ended: it cannot be followed")
    return options


def log_target(store: Store, resource: Resource, trial: int | None) -> Resource:
    """The resource whose pods hold the logs: the resource itself, or trial `trial` (a TrainingJob) of a Sweep."""
    if resource.KIND != "Sweep":
        if trial is not None:
            raise ValueError(f"--trial applies to a sweep, not to {resource.ref}")
        return resource
    trials = list(getattr(resource.status, "trials", None) or [])
    if trial is None:
        raise ValueError(f"{resource.ref} runs no pods itself: pick one of its {len(trials)} trial(s) with --trial I")
    if trial >= len(trials):
        raise ValueError(f"{resource.ref} has {len(trials)} trial(s) so far: --trial must be below {len(trials)}")
    job = store.get("TrainingJob", resource.metadata.namespace, trials[trial].name)
    if job is None:
        raise NotFound(f"trial {trial} of {resource.ref} (trainingjob/{trials[trial].name}) is gone")
    return job


async def open_log_stream(source: LogSource, resource: Resource, options: LogOptions,
                          limiter: anyio.CapacityLimiter) -> AsyncIterator[bytes]:
    """Start the stream (NotFound and ValueError propagate from here, before any byte is sent) and return
    its body."""

    def start() -> tuple[Iterator[bytes], object]:
        iterator = iter(source.stream(resource, options))
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
            log.exception("log stream of %s failed", resource.ref)
        finally:
            close = getattr(iterator, "close", None)
            # A generator still running in an abandoned thread cannot be closed; it is collected later.
            if close is not None and not busy:
                close()

    return body()
