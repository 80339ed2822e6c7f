"""Port forwarding over a WebSocket: `shipyard port-forward` tunnels each local TCP connection through the API
to a replica's port, as `kubectl port-forward` tunnels through the Kubernetes API server.

The API server does not know where replicas listen; a `PortForwarder` (given by the composition root, backed
by the runtime) answers that. Bytes are relayed both ways until either side closes. Authentication and
authorization (`create` on `PLURAL/portforward`, as Kubernetes' pods/portforward) are checked here by hand,
because router dependencies take an HTTP Request, which a WebSocket handshake is not.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from fastapi import APIRouter, HTTPException, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from shipyard.resources import API_VERSION, KINDS, Resource
from shipyard.store import NotFound

from ..authz import Permission, check, declares, identify

router = APIRouter()
CHUNK = 64 * 1024
POLICY_VIOLATION = 1008  # WebSocket close codes: refused (auth), and "the other side went away"
TRY_AGAIN = 1013


class PortForwarder(Protocol):
    def address(self, resource: Resource, port: str | None) -> tuple[str, int]:
        """Where a ready replica of `resource` serves `port` (a number or a port name; None: its main port).
        NotFound when none is ready or it has no such port."""


@router.websocket(f"/apis/{API_VERSION}/namespaces/{{namespace}}/{{plural}}/{{name}}/portforward")
@declares(Permission("create", subresource="portforward"))
async def port_forward(websocket: WebSocket, namespace: str, plural: str, name: str, port: str | None = None) -> None:
    app = websocket.app
    try:
        identify(websocket)
        check(websocket, "create", plural, namespace=namespace, name=name, subresource="portforward")
    except HTTPException as exc:
        await websocket.close(POLICY_VIOLATION, str(exc.detail)[:120])
        return
    cls = next((c for c in KINDS.values() if c.PLURAL == plural), None)
    forwarder: PortForwarder | None = app.state.port_forward
    resource = await run_in_threadpool(app.state.store.get, cls.KIND, namespace, name) if cls else None
    if resource is None or forwarder is None:
        await websocket.close(POLICY_VIOLATION, f"{plural}/{name} not found in project {namespace}")
        return
    try:
        host, target_port = await run_in_threadpool(forwarder.address, resource, port)
        reader, writer = await asyncio.open_connection(host, target_port)
    except NotFound as exc:
        await websocket.close(TRY_AGAIN, str(exc)[:120])
        return
    except OSError as exc:
        await websocket.close(TRY_AGAIN, f"cannot connect to the replica: {exc.strerror or exc}"[:120])
        return
    await websocket.accept()

    async def upstream_to_client() -> None:
        while data := await reader.read(CHUNK):
            await websocket.send_bytes(data)

    async def client_to_upstream() -> None:
        try:
            while True:
                data = await websocket.receive_bytes()
                writer.write(data)
                await writer.drain()
        except WebSocketDisconnect:
            pass

    tasks = [asyncio.create_task(upstream_to_client()), asyncio.create_task(client_to_upstream())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        writer.close()
        try:
            await websocket.close()
        except RuntimeError:
            pass  # already closed by the client
