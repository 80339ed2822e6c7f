"""Fixtures: a gateway on 127.0.0.1 with a route table and keys, and real upstream servers to route to."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from shipyard.gateway import GatewayServer, Route, RouteTable, StaticKeys, Upstream, create_gateway_app
from tests.conftest import wait_for
from tests.gateway.upstreams import EchoUpstream

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-proj-right-key-0123456789"
OTHER_PROJECT_KEY = "sk-other-project-key-0123456789"


@dataclass
class Gateway:
    table: RouteTable
    server: GatewayServer
    app: Any
    activations: list[tuple[str, str]]

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, key: str | None = KEY, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)


def route(name: str, *upstreams: Upstream, project: str = "proj", public: bool = False,
          scalable_from_zero: bool = False) -> Route:
    return Route(project=project, name=name, kind="Endpoint", public=public, upstreams=tuple(upstreams),
                 scalable_from_zero=scalable_from_zero)


@pytest.fixture
def make_gateway() -> Iterator[Callable[..., Gateway]]:
    servers: list[GatewayServer] = []

    def make(**options: Any) -> Gateway:
        table = RouteTable()
        activations: list[tuple[str, str]] = []
        keys = StaticKeys({"proj": [KEY], "other": [OTHER_PROJECT_KEY]})
        app = create_gateway_app(table, keys, lambda p, n: activations.append((p, n)), **options)
        server = GatewayServer(app, "127.0.0.1", 0)
        server.start()
        servers.append(server)
        return Gateway(table, server, app, activations)

    yield make
    _stop_all([server.stop for server in servers])


@pytest.fixture
def gateway(make_gateway: Callable[..., Gateway]) -> Gateway:
    return make_gateway()


class ThreadUpstream:
    """An ASGI app served by uvicorn in a thread of this process."""

    def __init__(self, app: Any, upstream_id: str):
        self.app = app
        self.server = GatewayServer(app, "127.0.0.1", 0)
        self.server.start()
        self.upstream = Upstream(id=upstream_id, host="127.0.0.1", port=self.server.port)

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def start_upstream() -> Iterator[Callable[..., ThreadUpstream]]:
    started: list[ThreadUpstream] = []

    def start(name: str, app: Any = None) -> ThreadUpstream:
        upstream = ThreadUpstream(app if app is not None else EchoUpstream(name), name)
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        if isinstance(upstream.app, EchoUpstream):
            upstream.app.gate.set()  # nothing may stay parked on it
    _stop_all([upstream.stop for upstream in started])


def _stop_all(stops: list[Callable[[], None]]) -> None:
    """Each server's graceful stop takes a few tenths of a second; they can all take them at once."""
    threads = [threading.Thread(target=stop) for stop in stops]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)


class ProcessUpstream:
    """tests/gateway/upstreams.py in a process of its own, so that a test can SIGKILL it."""

    def __init__(self, name: str, port: int):
        self.upstream = Upstream(id=name, host="127.0.0.1", port=port)
        self.process = subprocess.Popen([sys.executable, str(ROOT / "tests/gateway/upstreams.py"), "--port", str(port),
                                         "--name", name], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        wait_for(self._answers, timeout=30, message=f"upstream {name} to answer")

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"upstream {self.upstream.id} exited with {self.process.returncode}")
        try:
            return httpx.get(f"http://127.0.0.1:{self.upstream.port}/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


@pytest.fixture
def start_process_upstream() -> Iterator[Callable[[str], ProcessUpstream]]:
    started: list[ProcessUpstream] = []

    def start(name: str) -> ProcessUpstream:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        upstream = ProcessUpstream(name, port)
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        upstream.kill()


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text, or None if absent."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None
