"""The few calls `shipyard.Client` makes, over the standard library's http.client, for plain `http://` URLs.

Why: importing httpx (with httpcore, anyio, certifi...) costs a `shipyard get` more CPU than everything else it
does, while http.client is mostly loaded already. This covers exactly what the client uses: request, stream
with line iteration, keep-alive on one connection, timeouts (connect / read, read=None to wait forever).
Failures are raised as the httpx exceptions the client already handles, imported only when one happens, so
the client's error handling is the same whichever transport carried the request. Anything else (TLS, the
cluster's service proxy) uses httpx.
"""

from __future__ import annotations

import sys

if "http.client" not in sys.modules and "ssl" not in sys.modules:
    # http.client imports ssl (~15 ms of a CLI call) only to offer HTTPSConnection, which this module never
    # uses (plain http only). Import it with ssl hidden, then unhide it: anything else that wants TLS later in
    # the process (httpx, on an error path) imports ssl as usual.
    sys.modules["ssl"] = None  # type: ignore[assignment]
    try:
        import http.client
    finally:
        del sys.modules["ssl"]
import http.client
import json as jsonlib
import socket
from contextlib import contextmanager
from typing import Any, Iterator
from urllib.parse import urlencode, urlsplit


class Timeout:
    """httpx.Timeout's shape, as far as the client uses it: a connect timeout and a read timeout (None: wait)."""

    def __init__(self, timeout: float, read: float | None = None):
        self.connect, self.read = timeout, read


def _error(name: str, exc: BaseException) -> Exception:
    import httpx  # only on failure: the client catches httpx's exception types

    return getattr(httpx, name)(str(exc) or type(exc).__name__)


class Response:
    def __init__(self, raw: http.client.HTTPResponse):
        self._raw = raw
        self.status_code = raw.status
        self.reason_phrase = raw.reason
        self._body: bytes | None = None

    @property
    def is_closed(self) -> bool:
        return self._body is not None

    def read(self) -> bytes:
        if self._body is None:
            try:
                self._body = self._raw.read()
            except (OSError, http.client.HTTPException) as exc:
                raise _error("ReadTimeout" if isinstance(exc, socket.timeout) else "ReadError", exc) from None
        return self._body

    @property
    def text(self) -> str:
        return self.read().decode("utf-8", errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.read())

    def iter_lines(self) -> Iterator[str]:
        try:
            while line := self._raw.readline():
                yield line.decode("utf-8", errors="replace").rstrip("\r\n")
        except (OSError, http.client.HTTPException) as exc:
            raise _error("ReadTimeout" if isinstance(exc, socket.timeout) else "ReadError", exc) from None
        self._body = b""


class StdClient:
    def __init__(self, base_url: str, headers: dict[str, str], timeout: float):
        parts = urlsplit(base_url)
        self.base_url = base_url
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._prefix = parts.path.rstrip("/")
        self.headers = dict(headers)
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None  # kept alive between plain requests

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _send(self, conn: http.client.HTTPConnection, method: str, path: str, params: dict[str, Any] | None,
              content: str | bytes | None, json: Any, headers: dict[str, str] | None) -> Response:
        url = self._prefix + path + ("?" + urlencode(params) if params else "")
        body = content.encode() if isinstance(content, str) else content
        sent = {**self.headers, **(headers or {})}
        if json is not None:
            body = jsonlib.dumps(json).encode()
            sent.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, url, body=body, headers=sent)
        except socket.timeout as exc:
            raise _error("ConnectTimeout", exc) from None
        except OSError as exc:
            raise _error("ConnectError", exc) from None
        try:
            return Response(conn.getresponse())
        except socket.timeout as exc:
            raise _error("ReadTimeout", exc) from None
        except (OSError, http.client.HTTPException) as exc:
            raise _error("RemoteProtocolError", exc) from None

    def _connection(self, timeout: float | Timeout | None) -> http.client.HTTPConnection:
        limit = timeout.connect if isinstance(timeout, Timeout) else (timeout or self.timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=limit)

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                content: str | bytes | None = None, json: Any = None, headers: dict[str, str] | None = None,
                timeout: float | None = None) -> Response:
        for attempt in (1, 2):
            reused = self._conn is not None
            if self._conn is None:
                self._conn = self._connection(timeout)
            try:
                resp = self._send(self._conn, method, path, params, content, json, headers)
                resp.read()
                return resp
            except Exception:
                self.close()
                if not reused or attempt == 2:  # a kept-alive connection the server closed: retry once
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str, timeout: float | None = None) -> Response:
        return self.request("GET", path, timeout=timeout)

    @contextmanager
    def stream(self, method: str, path: str, *, params: dict[str, Any] | None = None,
               timeout: float | Timeout | None = None) -> Iterator[Response]:
        conn = self._connection(timeout)  # a connection of its own: the stream may outlive other requests
        try:
            resp = self._send(conn, method, path, params, None, None, None)
            if conn.sock is not None:
                conn.sock.settimeout(timeout.read if isinstance(timeout, Timeout) else (timeout or self.timeout))
            yield resp
        finally:
            conn.close()
