"""`shipyard logs` over pods: which pods a LogOptions picks, and their logs as one stream.

The API's LogSource for both composition roots: `shipyard up` reads the local runtime's log files (which
outlive their pods while the owner exists), the operator reads the cluster's pod log API. Both find a
resource's pods by its kind and name labels, so every kind with pods works the same way; what differs is a
small backend (list the pods, read one pod's log, say whether it has a previous attempt).

How pods are told apart, whatever the workload: a job's pods by their completion index (a replica is the
newest pod of its index; the pod before it is its previous attempt), a StatefulSet's by ordinal, a
Deployment's by creation order. This module must never decide anything about a workload beyond that choice.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Iterator, Protocol

from shipyard.api.logs import LogOptions
from shipyard.compiler.common import COMPLETION_INDEX_ANNOTATION, KIND_LABEL, NAME_LABEL, RESTART_LABEL
from shipyard.resources import Resource
from shipyard.resources.selector import parse_selector
from shipyard.store import NotFound

STS_POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
IDLE_SECONDS = 1.0  # how often a quiet merged follow yields b"", so a stream whose client left ends
Pod = dict[str, Any]


class PodLogBackend(Protocol):
    def pods(self, namespace: str, labels: dict[str, str]) -> list[Pod]:
        """The pods with these labels; pods that are gone but whose logs are kept carry `"departed": True`."""

    def read(self, namespace: str, pod: Pod, previous: bool, options: LogOptions) -> Iterator[bytes]: ...

    def has_previous(self, namespace: str, pod: Pod) -> bool:
        """Whether the pod's container ran before in place (a restart), leaving a previous attempt's log."""


# --- choosing pods (pure) ---------------------------------------------------------------------------------


def _created(pod: Pod) -> tuple[int, str, str]:
    """Age order. A job's attempt number comes first: a cluster's timestamps have whole seconds, and a fast
    retry creates the next attempt's pod within the same second as the failed one."""
    attempt = pod["metadata"].get("labels", {}).get(RESTART_LABEL, "0")
    return int(attempt) if attempt.isdigit() else 0, pod["metadata"].get("creationTimestamp") or "", \
        pod["metadata"]["name"]


def _slot(pod: Pod) -> int | None:
    meta = pod["metadata"]
    index = meta.get("annotations", {}).get(COMPLETION_INDEX_ANNOTATION)
    if index is not None:
        return int(index)
    if STS_POD_NAME_LABEL in meta.get("labels", {}):
        ordinal = meta["name"].rpartition("-")[2]
        return int(ordinal) if ordinal.isdigit() else None
    return None


def _ready(pod: Pod) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions", []))


def _current(pods: list[Pod]) -> list[Pod]:
    """One pod per replica, in replica order: the newest of each slot, or (Deployments) the live pods in
    creation order (the departed ones when none is live: a workload scaled to zero still shows its last)."""
    if any(_slot(p) is not None for p in pods):
        newest: dict[int, Pod] = {}
        for pod in sorted(pods, key=_created):
            slot = _slot(pod)
            if slot is not None:
                newest[slot] = pod
        return [newest[i] for i in sorted(newest)]
    live = [p for p in pods if not p.get("departed")]
    return sorted(live or pods, key=_created)


def choose(ref: str, pods: list[Pod], options: LogOptions) -> list[Pod]:
    """The pods whose logs `options` asks for. NotFound when there are none, ValueError for a replica that
    cannot exist."""
    selector = parse_selector(options.selector)
    matching = [p for p in pods if selector.matches(p["metadata"].get("labels", {}))]
    where = f" matching {options.selector!r}" if options.selector else ""
    if not matching:
        raise NotFound(f"{ref} has no pods{where} running or finished yet")
    if options.pod is not None:
        named = [p for p in matching if p["metadata"]["name"] == options.pod]
        if not named:
            names = ", ".join(p["metadata"]["name"] for p in _current(matching))
            raise NotFound(f"{ref} has no pod {options.pod!r}{where} (its pods: {names})")
        return named[-1:]
    current = _current(matching)
    slotted = any(_slot(p) is not None for p in matching)
    if options.replica is not None:
        if slotted:
            found = [p for p in current if _slot(p) == options.replica]
            if found:
                return found
            top = max(_slot(p) or 0 for p in current)
            if options.replica > top:
                raise ValueError(f"{ref} has replicas 0..{top}{where}: --replica {options.replica} is out of range")
            raise NotFound(f"{ref} has no replica {options.replica} running or finished yet")
        if options.replica >= len(current):
            raise ValueError(f"{ref} has {len(current)} pod(s){where}: --replica must be below {len(current)}")
        return [current[options.replica]]
    if options.all_pods:
        return current
    if slotted:
        first = [p for p in current if _slot(p) == 0] or current[:1]
        return first
    ready = [p for p in current if _ready(p)]
    return [(ready or current)[-1]]


def previous_attempt(ref: str, pod: Pod, pods: list[Pod], backend: PodLogBackend, namespace: str) -> tuple[Pod, bool]:
    """(pod, read its previous log?) for --previous: the container's previous run in place if it has one,
    else the pod before it in the same replica (a job's earlier attempt, a recreated StatefulSet pod)."""
    if backend.has_previous(namespace, pod):
        return pod, True
    slot = _slot(pod)
    earlier = [p for p in pods if slot is not None and _slot(p) == slot and _created(p) < _created(pod)
               and p["metadata"]["name"] != pod["metadata"]["name"]]
    if earlier:
        return sorted(earlier, key=_created)[-1], False
    raise NotFound(f"pod {pod['metadata']['name']} of {ref} has no previous attempt")


# --- streaming --------------------------------------------------------------------------------------------


def prefixed(name: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """`[pod/NAME] ` before every line, as `kubectl logs --prefix` does; b"" (idle) passes through."""
    prefix, rest = f"[pod/{name}] ".encode(), b""
    for chunk in chunks:
        if not chunk:
            yield b""
            continue
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        if lines:
            yield b"".join(prefix + line + b"\n" for line in lines)
    if rest:
        yield prefix + rest + b"\n"


def merged(streams: list[Iterator[bytes]]) -> Iterator[bytes]:
    """Interleave followed streams as their lines arrive (one reader thread each)."""
    out: queue.Queue[bytes | None] = queue.Queue(maxsize=256)
    stop = threading.Event()

    def put(item: bytes | None) -> None:
        # Never block for good on a reader that has gone away (the queue is bounded).
        while not stop.is_set():
            try:
                out.put(item, timeout=IDLE_SECONDS)
                return
            except queue.Full:
                continue

    def pump(stream: Iterator[bytes]) -> None:
        try:
            for chunk in stream:
                if stop.is_set():
                    break
                if chunk:
                    put(chunk)
        except Exception:  # noqa: BLE001 - one pod's stream ending badly ends only its part
            pass
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001
                    pass
            put(None)

    threads = [threading.Thread(target=pump, args=(s,), name="pod-log", daemon=True) for s in streams]
    for thread in threads:
        thread.start()
    running = len(threads)
    try:
        while running:
            try:
                chunk = out.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                yield b""
                continue
            if chunk is None:
                running -= 1
            else:
                yield chunk
    finally:
        stop.set()


class PodLogs:
    """The LogSource of both composition roots, over a PodLogBackend."""

    def __init__(self, backend: PodLogBackend):
        self._backend = backend

    def stream(self, resource: Resource, options: LogOptions) -> Iterator[bytes]:
        ns = resource.metadata.namespace
        pods = self._backend.pods(ns, {KIND_LABEL: resource.kind.lower(), NAME_LABEL: resource.metadata.name})
        chosen = [(pod, False) for pod in choose(resource.ref, pods, options)]
        if options.previous:
            chosen = [previous_attempt(resource.ref, pod, pods, self._backend, ns) for pod, _ in chosen]
        if len(chosen) == 1 and not options.all_pods:
            pod, previous = chosen[0]
            return self._backend.read(ns, pod, previous, options)
        streams = [prefixed(pod["metadata"]["name"], iter(self._backend.read(ns, pod, previous, options)))
                   for pod, previous in chosen]
        if options.follow:
            return merged(streams)
        return (chunk for stream in streams for chunk in stream)


class LocalPodLogs:
    """The local runtime's pods, and the logs it keeps of departed ones while their owner exists."""

    def __init__(self, runtime: Any):  # shipyard.runtime.local.LocalRuntime (duck-typed: no import here)
        self._runtime = runtime

    def pods(self, namespace: str, labels: dict[str, str]) -> list[Pod]:
        live = self._runtime.list("Pod", namespace, labels)
        departed = [{"metadata": {k: m.get(k) for k in ("name", "namespace", "uid", "creationTimestamp")}
                     | {"labels": m.get("labels", {}), "annotations": m.get("annotations", {})},
                     "status": {}, "departed": True}
                    for m in self._runtime.departed_pods(namespace)
                    if all(m.get("labels", {}).get(k) == v for k, v in labels.items())]
        return departed + live

    def read(self, namespace: str, pod: Pod, previous: bool, options: LogOptions) -> Iterator[bytes]:
        return self._runtime.pod_log(namespace, pod["metadata"]["name"], previous=previous,
                                     follow=options.follow and not pod.get("departed"),
                                     tail_lines=options.tail_lines, since_seconds=options.since_seconds)

    def has_previous(self, namespace: str, pod: Pod) -> bool:
        return bool(self._runtime.has_previous_log(namespace, pod["metadata"]["name"]))


class ClusterPodLogs:
    """A cluster's pods and its pod log API (`previous`, `sinceSeconds`, `tailLines`, `follow`)."""

    def __init__(self, runtime: Any):  # shipyard.runtime.kubernetes.KubernetesRuntime
        self._runtime = runtime

    def pods(self, namespace: str, labels: dict[str, str]) -> list[Pod]:
        return self._runtime.list("Pod", namespace, labels)

    def read(self, namespace: str, pod: Pod, previous: bool, options: LogOptions) -> Iterator[bytes]:
        return self._runtime.read_log_lines(namespace, pod["metadata"]["name"], follow=options.follow,
                                            tail_lines=options.tail_lines, previous=previous,
                                            since_seconds=options.since_seconds)

    def has_previous(self, namespace: str, pod: Pod) -> bool:
        statuses = pod.get("status", {}).get("containerStatuses") or [{}]
        return int(statuses[0].get("restartCount", 0)) > 0
