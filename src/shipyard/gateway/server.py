"""Serving the gateway app on its own port, in its own thread with its own event loop.

Why a thread of its own: the daemon's API server and controllers must not add latency to proxied requests,
and the gateway's loop must not stall the API. uvloop and httptools when installed (they are core
dependencies; the fallbacks keep the gateway working where a wheel is missing). uvicorn is told to leave
logging alone (log_config=None, no log level), because the daemon configured it already and uses uvicorn's
loggers for its API server too. Proxy headers are off: the gateway is the edge and sets X-Forwarded-* itself.
"""

from __future__ import annotations

import importlib.util
import socket
import threading
from typing import Any, Callable

import uvicorn

STARTUP_TIMEOUT_SECONDS = 30.0


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ready: threading.Event):
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self._ready.set()


class GatewayServer:
    """`start()` returns once the port accepts connections; `.port` is the bound port (useful with port 0)."""

    def __init__(self, app: Callable[..., Any], host: str = "127.0.0.1", port: int = 0, *,
                 keep_alive_seconds: float = 30.0, graceful_shutdown_seconds: float = 5.0):
        self.app = app
        self.host = host
        self.port = port
        self._keep_alive = keep_alive_seconds
        self._graceful = graceful_shutdown_seconds
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the gateway server is already started")
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
            sock.listen(2048)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, loop="uvloop" if _has("uvloop") else "asyncio", http="httptools" if _has("httptools") else "h11",
            ws="websockets-sansio", lifespan="on", log_config=None, log_level=None, access_log=False,
            server_header=False, date_header=False, proxy_headers=False, timeout_keep_alive=int(self._keep_alive),
            timeout_graceful_shutdown=int(self._graceful), backlog=2048)
        ready = threading.Event()
        self._server = _Server(config, ready)

        def run() -> None:
            try:
                assert self._server is not None
                self._server.run(sockets=[sock])
            except BaseException as exc:  # noqa: BLE001 - reported to start()'s caller
                self._error = exc
            finally:
                sock.close()
                ready.set()

        self._thread = threading.Thread(target=run, name=f"shipyard-gateway-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(STARTUP_TIMEOUT_SECONDS):
            self.stop()
            raise RuntimeError(f"the gateway did not start listening within {STARTUP_TIMEOUT_SECONDS:g}s")
        if self._error is not None or not self._server.started:
            self.stop()
            raise RuntimeError(f"the gateway failed to start: {self._error!r}")

    def stop(self, timeout: float = 15.0) -> None:
        """Stop accepting, let in-flight requests finish (up to the graceful period), then close."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(5.0)
        self._server = self._thread = None

    def __enter__(self) -> "GatewayServer":
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
