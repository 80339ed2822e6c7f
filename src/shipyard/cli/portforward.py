"""`shipyard port-forward KIND/NAME LOCAL[:REMOTE]`: a local port that reaches a replica, through the API.

Each accepted connection gets its own WebSocket to the API's portforward route, which connects to a ready
replica; bytes are pumped both ways by two threads per connection (a handful of connections from a browser
or a debugger: threads are simpler than an event loop here and cost nothing that matters).

It stops on SIGINT and SIGTERM through handlers of its own: a command started in the background by a
non-interactive shell inherits SIGINT *ignored*, and Python then never installs its Ctrl-C handler, so a
forwarder relying on KeyboardInterrupt would run until killed.
"""

from __future__ import annotations

import signal
import socket
import threading
from typing import Annotated
from urllib.parse import quote

import typer

from .common import CliError, ProjectOption, make_client, project_of, split_ref

CHUNK = 64 * 1024


class _Stop(Exception):
    """Raised in the main thread by the SIGINT/SIGTERM handler: ends the accept loop."""


def _stop(signum: int, _frame: object) -> None:
    raise _Stop(signum)


def _install_stop_handlers() -> dict[int, object]:
    """Our handlers for SIGINT and SIGTERM (whatever was inherited, ignored included); the old ones returned."""
    if threading.current_thread() is not threading.main_thread():
        return {}  # only the main thread may set handlers (an embedding caller stops us its own way)
    return {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}


def _ports(spec: str) -> tuple[int, str | None]:
    local, _, remote = spec.partition(":")
    if not local.isdigit() or not 0 <= int(local) <= 65535:
        raise CliError(f"port {spec!r}: expected LOCAL or LOCAL:REMOTE, LOCAL a number (0: any free port)")
    return int(local), remote or None


def _relay(conn: socket.socket, ws_url: str, token: str) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    try:
        ws = connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=30,
                     max_size=None)
    except Exception as exc:  # noqa: BLE001 - one failed connection must not stop the forwarder
        typer.echo(f"error: connection refused by the control plane: {exc}", err=True)
        conn.close()
        return

    def to_replica() -> None:
        try:
            while data := conn.recv(CHUNK):
                ws.send(data)
        except (OSError, ConnectionClosed):
            pass
        finally:
            ws.close()

    sender = threading.Thread(target=to_replica, daemon=True)
    sender.start()
    try:
        for message in ws:
            conn.sendall(message if isinstance(message, bytes) else message.encode())
    except (OSError, ConnectionClosed):
        pass
    finally:
        conn.close()
        ws.close()


def port_forward(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="KIND/NAME", help="e.g. endpoint/chat, app/playground, tj/train")],
    ports: Annotated[str, typer.Argument(metavar="LOCAL[:REMOTE]",
                                         help="local port, and the replica's port (number or name; default its "
                                              "http port)")],
    address: Annotated[str, typer.Option("--address", help="Local address to listen on.")] = "127.0.0.1",
    project: ProjectOption = None,
) -> None:
    """Forward a local port to a replica (bypasses the gateway: for debugging, like kubectl port-forward)."""
    cls, obj_name = split_ref(ref, None)
    if not obj_name:
        raise CliError(f"port-forward needs a name: shipyard port-forward {cls.KIND.lower()}/NAME PORT")
    local, remote = _ports(ports)
    namespace = project_of(ctx, project)
    with make_client() as client:
        client.get(cls.KIND, obj_name, namespace)  # a clear 404 now rather than on the first connection
        if client.cluster:
            # The API server's service proxy does not carry WebSocket upgrades with the cluster's credentials;
            # kubectl's own port-forward reaches the pod directly and is what a cluster user has anyway.
            workload = "job" if cls.KIND == "TrainingJob" else "deployment"
            raise CliError(f"on a cluster, forward with kubectl: kubectl port-forward -n {namespace} "
                           f"{workload}/{obj_name} {ports}")
        base = client.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        token = client.token or ""
    ws_url = f"{base}/apis/shipyard.dev/v1alpha1/namespaces/{quote(namespace)}/{cls.PLURAL}/{quote(obj_name)}" \
             f"/portforward" + (f"?port={quote(remote)}" if remote else "")
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((address, local))
    except OSError as exc:
        raise CliError(f"cannot listen on {address}:{local}: {exc.strerror}") from None
    listener.listen(64)
    previous = _install_stop_handlers()  # before the line below: whoever reads it may signal at once
    try:
        typer.echo(f"Forwarding from {address}:{listener.getsockname()[1]} -> {cls.KIND.lower()}/{obj_name}"
                   f":{remote or 'http'} (Ctrl-C to stop)")
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=_relay, args=(conn, ws_url, token), daemon=True).start()
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        listener.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
