"""Upstream servers the gateway tests proxy to: real uvicorn servers on 127.0.0.1, in a thread or a process.

`EchoUpstream` answers every path with what it received (so a test sees exactly what the gateway forwarded)
and has a few special paths: /slow and /sse wait on a gate the test opens, /work takes a few milliseconds,
/forever streams until the client goes away (and records that it noticed), /ws echoes WebSocket messages.
`FakeOpenAI` is the smallest OpenAI-compatible chat server the official client accepts.

Run standalone (for tests that kill an upstream): python tests/gateway/upstreams.py --port P --name NAME
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from typing import Any, Callable


async def _lifespan(receive: Callable, send: Callable) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _json(send: Callable, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Callable) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


class EchoUpstream:
    def __init__(self, name: str):
        self.name = name
        self.seen: list[dict[str, Any]] = []
        self.in_flight = 0
        self.gate = threading.Event()
        self.sse_finished = threading.Event()
        self.disconnected = threading.Event()

    def headers_of(self, index: int = -1) -> dict[str, str]:
        return dict(self.seen[index]["headers"])

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            self.in_flight += 1
            try:
                await self._http(scope, receive, send)
            finally:
                self.in_flight -= 1

    async def _http(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        body = await _read_body(receive)
        path = scope["path"]
        record = {"method": scope["method"], "path": path, "raw_path": scope.get("raw_path", b"").decode(),
                  "query": scope["query_string"].decode(), "body_length": len(body),
                  "headers": [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]}
        self.seen.append(record)
        if path == "/slow":
            await asyncio.to_thread(self.gate.wait, 30)
        elif path == "/work":
            await asyncio.sleep(0.02)  # simulated service time, so that requests overlap
        if path == "/sse":
            await self._sse(send)
        elif path == "/forever":
            await self._forever(receive, send)
        else:
            await _json(send, 200, {"upstream": self.name, **record, "body": body.decode("latin-1")[:1000]},
                        [(b"x-upstream", self.name.encode())])

    async def _sse(self, send: Callable) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        await send({"type": "http.response.body", "body": b"data: first\n\n", "more_body": True})
        await asyncio.to_thread(self.gate.wait, 30)
        for i in range(3):
            await send({"type": "http.response.body", "body": f"data: event {i}\n\n".encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        self.sse_finished.set()

    async def _forever(self, receive: Callable, send: Callable) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        watcher = asyncio.ensure_future(receive())
        try:
            while not watcher.done():
                await send({"type": "http.response.body", "body": b"data: tick\n\n", "more_body": True})
                await asyncio.wait({watcher}, timeout=0.05)  # a tick interval, not a synchronisation
            self.disconnected.set()
        finally:
            watcher.cancel()

    async def _websocket(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        await receive()  # websocket.connect
        self.seen.append({"path": scope["path"], "query": scope["query_string"].decode(),
                          "headers": [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]})
        offered = scope.get("subprotocols") or []
        await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.disconnected.set()
                return
            text = message.get("text")
            if text is not None and text.startswith("close:"):
                await send({"type": "websocket.close", "code": int(text[6:]), "reason": "asked to"})
                return
            if text is not None:
                await send({"type": "websocket.send", "text": f"{self.name}:{text}"})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


class FakeOpenAI:
    """/v1/models and /v1/chat/completions (plain and streamed), echoing the last user message."""

    def __init__(self) -> None:
        self.authorization_seen: list[str | None] = []

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        body = await _read_body(receive)
        headers = dict(scope["headers"])
        self.authorization_seen.append(headers.get(b"authorization", b"").decode() or None)
        if scope["path"] == "/v1/models":
            await _json(send, 200, {"object": "list", "data": [{"id": "tiny", "object": "model", "created": 0,
                                                                 "owned_by": "shipyard"}]})
            return
        if scope["path"] != "/v1/chat/completions":
            await _json(send, 404, {"error": {"message": "not found", "type": "not_found_error", "code": None}})
            return
        request = json.loads(body)
        text = f"echo: {request['messages'][-1]['content']}"
        created = int(time.time())
        if not request.get("stream"):
            await _json(send, 200, {
                "id": "chatcmpl-1", "object": "chat.completion", "created": created, "model": request["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for piece in text.split(" "):
            chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": created,
                     "model": request["model"],
                     "choices": [{"index": 0, "delta": {"content": piece + " "}, "finish_reason": None}]}
            await send({"type": "http.response.body", "body": f"data: {json.dumps(chunk)}\n\n".encode(),
                        "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    uvicorn.run(EchoUpstream(args.name), host="127.0.0.1", port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
