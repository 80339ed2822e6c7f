"""The kubelet's log endpoint, so `kubectl logs` (and the operator's pod-log reads) work through the API server.

The API server serves pods/log by calling the pod's node at https://INTERNAL_IP:PORT/containerLogs/NS/POD/
CONTAINER (the port from the Node's status.daemonEndpoints.kubeletEndpoint); the agent answers from the files
its pods write (ROOT/logs/NS/POD.log, and POD.previous.log for `previous=true`). Supported query parameters:
follow (until the container stops), tailLines, limitBytes, previous. sinceSeconds, sinceTime and timestamps
are accepted and ignored: the shim writes the container's output as it comes, with no time per line.

TLS: a self-signed certificate generated at start (kept under ROOT/tls). The API server verifies a kubelet's
certificate only when started with --kubelet-certificate-authority, which a test control plane is not; and
the agent does not ask the API server for a client certificate either. So anyone who can reach the port can
read the logs of the agent's pods: it listens on the node's address only (loopback by default), for tests.
One server serves every node of the agent (they share the address).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger(__name__)

# (namespace, pod) → (current log, previous log, container running) or None for a pod not here.
LogSource = Callable[[str, str], "tuple[Path, Path, bool] | None"]
FOLLOW_POLL_SECONDS = 0.1


def self_signed(directory: Path, address: str) -> tuple[Path, Path]:
    """(certificate, key) for `address`, made once and reused."""
    cert_path, key_path = directory / "kubelet.crt", directory / "kubelet.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shipyard-node-agent")])
    now = datetime.datetime.now(datetime.timezone.utc)
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(address))
    except ValueError:
        san = x509.DNSName(address)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .sign(key, hashes.SHA256()))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def tail(data: bytes, lines: int) -> bytes:
    """The last `lines` lines of `data` (a final line without a newline counts)."""
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


class LogServer:
    def __init__(self, tls_dir: Path, address: str, port: int, source: LogSource):
        self._tls_dir = tls_dir
        self._address = address
        self._requested_port = port
        self._source = source
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self._requested_port

    def start(self) -> None:
        cert, key = self_signed(self._tls_dir, self._address)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        handler = type("Handler", (_Handler,), {"source": staticmethod(self._source), "stopping": self._stopping})
        server = ThreadingHTTPServer((self._address, self._requested_port), handler)
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="nodeagent-logs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    source: LogSource
    stopping: threading.Event

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        log.debug("log server: " + format, *args)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if parts == ["healthz"]:
            self._plain(200, b"ok")
            return
        if len(parts) != 4 or parts[0] != "containerLogs":
            self._plain(404, b"not found")
            return
        _, namespace, pod, _container = parts
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        found = self.source(namespace, pod)
        if found is None:
            self._plain(404, f"pod {namespace}/{pod} is not on this node".encode())
            return
        current, previous, _running = found
        if query.get("previous") == "true":
            if not previous.exists():
                self._plain(400, f"previous terminated container of pod {namespace}/{pod} not found".encode())
                return
            path = previous
        else:
            path = current
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        offset = len(data)
        if query.get("tailLines", "").isdigit():
            data = tail(data, int(query["tailLines"]))
        limit = int(query["limitBytes"]) if query.get("limitBytes", "").isdigit() else None
        if limit is not None:
            data = data[:limit]
        if query.get("follow") != "true" or path == previous:
            self._plain(200, data)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = len(data)
        try:
            self._chunk(data)
            while limit is None or sent < limit:
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    more = fh.read()
                if more:
                    offset += len(more)
                    if limit is not None:
                        more = more[:limit - sent]
                    sent += len(more)
                    self._chunk(more)
                    continue
                found = self.source(namespace, pod)
                if found is None or not found[2] or self.stopping.is_set():
                    # The container stopped after its last write: what it wrote since the read above is sent.
                    with open(path, "rb") as fh:
                        fh.seek(offset)
                        more = fh.read()
                    self._chunk(more if limit is None else more[:limit - sent])
                    break
                time.sleep(FOLLOW_POLL_SECONDS)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, FileNotFoundError):
            pass  # the client went away (or the pod did)

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    def _plain(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
