"""Readiness probes, run by the local runtime as the kubelet runs them, without blocking the sync loop.

A probe may take up to its timeoutSeconds, far longer than the runtime's 0.1 s tick, so probes run on a small
thread pool: the sync loop only asks `Prober.observe` for the latest verdict (scheduling the next probe when
one is due), and a finished probe wakes the loop when the verdict changes, so readiness reaches subscribers
(and the gateway) within milliseconds, not at the next tick.

Semantics are Kubernetes': the first probe runs initialDelaySeconds after the container started, then every
periodSeconds; a container is not ready until successThreshold consecutive successes, and becomes not ready
after failureThreshold consecutive failures. httpGet succeeds on a 2xx/3xx answer within timeoutSeconds
(redirects are not followed; HTTPS is not verified, as the kubelet does not verify); tcpSocket succeeds when a
connection opens; exec succeeds on exit code 0. Local adaptation: httpGet and tcpSocket always go to
127.0.0.1 and the pod's host port for the named or numbered containerPort (every pod shares the loopback
address; see network.py), and an exec probe runs the command as a process with the container's environment.
The cluster node agent passes its own `target` instead: the pod's IP and the containerPort itself.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Hashable

from ..pods import container_port
from .network import LOOPBACK

log = logging.getLogger(__name__)

Check = Callable[[], bool]


@dataclass(frozen=True)
class Timing:
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @classmethod
    def of(cls, probe: dict[str, Any]) -> "Timing":
        return cls(float(probe.get("initialDelaySeconds", 0)), float(probe.get("periodSeconds", 10)),
                   float(probe.get("timeoutSeconds", 1)), int(probe.get("successThreshold", 1)),
                   int(probe.get("failureThreshold", 3)))


def http_get(port: int, path: str, timeout: float, scheme: str = "HTTP",
             headers: dict[str, str] | None = None, host: str = LOOPBACK) -> bool:
    if scheme.upper() == "HTTPS":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=ssl._create_unverified_context())  # noqa: S323 - as the kubelet
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path or "/", headers={"User-Agent": "shipyard-probe", **(headers or {})})
        return 200 <= conn.getresponse().status < 400
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def tcp_socket(port: int, timeout: float, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def run_exec(argv: list[str], env: dict[str, str], cwd: str | None, timeout: float) -> bool:
    try:
        return subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=timeout).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


Target = Callable[[int | str], tuple[str, int]]


def host_port_target(pod: dict[str, Any]) -> Target:
    """The local runtime's probe target: 127.0.0.1 and the host port the runtime gave the containerPort."""
    host_ports = pod["status"].get("hostPorts", {})

    def target(port: int | str) -> tuple[str, int]:
        number = container_port(pod, port)
        if number is None or str(number) not in host_ports:
            raise ValueError(f"readiness probe port {port!r} is not a declared containerPort")
        return LOOPBACK, int(host_ports[str(number)])
    return target


def readiness_check(pod: dict[str, Any], container: dict[str, Any],
                    exec_context: Callable[[], tuple[dict[str, str], str | None]],
                    target: Target | None = None) -> Check | None:
    """A zero-argument check for the container's readinessProbe, or None if it has none. Raises ValueError for
    a probe that cannot run (a port it does not know, an unknown handler). `target` maps the probe's port
    (number or name) to the (host, port) to connect to; by default the local runtime's host_port_target."""
    probe = container.get("readinessProbe")
    if not probe:
        return None
    timeout = Timing.of(probe).timeout
    address = target or host_port_target(pod)

    if "httpGet" in probe:
        action = probe["httpGet"]
        host, port = address(action["port"])
        headers = {h["name"]: h["value"] for h in action.get("httpHeaders", [])}
        return lambda: http_get(port, action.get("path", "/"), timeout, action.get("scheme", "HTTP"), headers, host)
    if "tcpSocket" in probe:
        host, port = address(probe["tcpSocket"]["port"])
        return lambda: tcp_socket(port, timeout, host)
    if "exec" in probe:
        argv = list(probe["exec"]["command"])

        def check() -> bool:
            env, cwd = exec_context()
            return run_exec(argv, env, cwd, timeout)
        return check
    raise ValueError("readiness probe has no httpGet, tcpSocket or exec handler")


@dataclass
class _Worker:
    check: Check
    timing: Timing
    due: float
    running: bool = False
    successes: int = 0
    failures: int = 0
    ready: bool | None = None  # None: no verdict yet


class Prober:
    """One worker per container start (key), like the kubelet's probe workers, on a shared thread pool."""

    def __init__(self, on_change: Callable[[], None], workers: int = 4):
        self._on_change = on_change
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="readiness-probe")
        self._workers: dict[Hashable, _Worker] = {}
        self._lock = threading.Lock()
        self._closed = False

    def observe(self, key: Hashable, timing: Timing, make_check: Callable[[], Check],
                running_for: float) -> bool | None:
        """The current verdict for `key` (None: none yet), starting a probe if one is due.

        `running_for` is how long the container has run, so a runtime restarted after a crash does not wait
        the initial delay again for containers it adopts."""
        now = time.monotonic()
        with self._lock:
            worker = self._workers.get(key)
            if worker is None:
                worker = _Worker(make_check(), timing, now + max(0.0, timing.initial_delay - running_for))
                self._workers[key] = worker
            if not worker.running and now >= worker.due and not self._closed:
                worker.running = True
                worker.due = now + timing.period
                self._pool.submit(self._run, key, worker)
            return worker.ready

    def _run(self, key: Hashable, worker: _Worker) -> None:
        try:
            ok = worker.check()
        except Exception:  # noqa: BLE001 - a broken probe is a failed probe, never a dead worker
            log.exception("readiness probe %s failed to run", key)
            ok = False
        with self._lock:
            worker.running = False
            before = worker.ready
            if ok:
                worker.successes, worker.failures = worker.successes + 1, 0
                if worker.successes >= worker.timing.success_threshold:
                    worker.ready = True
            else:
                worker.failures, worker.successes = worker.failures + 1, 0
                if worker.failures >= worker.timing.failure_threshold or worker.ready is None:
                    worker.ready = False
            changed = worker.ready != before
        if changed:
            self._on_change()

    def forget(self, keep: set[Hashable]) -> None:
        """Drop the workers of containers that are gone (stopped, restarted or deleted)."""
        with self._lock:
            for key in [k for k in self._workers if k not in keep]:
                del self._workers[key]

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
