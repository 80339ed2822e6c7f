"""A Kubernetes API mock server over real HTTP for operator tests: kmock's emulator, plus the API server
behaviour the operator relies on that the emulator leaves out.

kmock's KubernetesEmulator keeps objects in memory and applies every write as a plain merge. Added here, each
as a real API server does it: server-side apply creates an absent object; uid, creationTimestamp, generation,
managedFields (without field sets) and a global resourceVersion are assigned; a write that names a stale resourceVersion is a 409 Conflict;
label selectors filter lists and watches. Every request is recorded for assertions. It runs on its own event
loop thread, so tests and the operator (whose client is synchronous) talk to it only over HTTP.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import aiohttp.web
import attrs
from kmock import KubernetesEmulator, ResourceInfo, Server, action
from kmock import KubernetesError

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    params: dict[str, str]
    content_type: str
    data: Any

    @property
    def is_apply(self) -> bool:
        return self.method == "PATCH" and self.content_type.startswith(APPLY_CONTENT_TYPE)


def _selected(params: Any, obj: dict[str, Any]) -> bool:
    selector = (params or {}).get("labelSelector")
    if not selector:
        return True
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip():
            return False
    return True


@attrs.define(kw_only=True)
class ApiServerEmulator(KubernetesEmulator):
    recorded: list[Recorded] = attrs.field(factory=list, init=False)
    # The API server's service proxy: "/api/v1/namespaces/NS/services/http:NAME:PORT/proxy" → a URL here.
    proxies: dict[str, str] = attrs.field(factory=dict, init=False)
    _versions: Any = attrs.field(factory=lambda: itertools.count(1), init=False)

    async def _handle(self, request: Any) -> Any:
        for prefix, target in self.proxies.items():
            if request.url.path.startswith(prefix + "/"):
                return await self._proxy(request, target + request.url.path[len(prefix):])
        content_type = request.headers.get("Content-Type", request.headers.get("content-type", ""))
        self.recorded.append(Recorded(str(request.method.value if hasattr(request.method, "value") else request.method),
                                      request.url.path, dict(request.params), content_type, request.data))
        if request.resource is not None and isinstance(request.data, dict):
            await self._server_side(request, content_type)
        return await super()._handle(request)

    async def _server_side(self, request: Any, content_type: str) -> None:
        meta = request.data.setdefault("metadata", {})
        key = (request.resource, request.namespace, request.name)
        current = self._objects[key] if request.name and key in self._objects else None
        if current is not None and current.deleted:
            current = None
        now = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        creating = request.action == action.CREATE
        if request.action == action.UPDATE and current is None and content_type.startswith(APPLY_CONTENT_TYPE):
            creating = True
        # Every write is recorded in managedFields, as the real server does (without the field sets): clients
        # must cope with it in what they read back.
        meta["managedFields"] = [{"manager": request.params.get("fieldManager", "unknown"),
                                  "operation": "Apply" if content_type.startswith(APPLY_CONTENT_TYPE) else "Update",
                                  "apiVersion": request.data.get("apiVersion", ""), "fieldsType": "FieldsV1",
                                  "time": now}]
        if creating:
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now, resourceVersion=str(next(self._versions)),
                        generation=1)
            if request.namespace and not meta.get("namespace"):
                meta["namespace"] = request.namespace
            if request.action == action.UPDATE:
                # Server-side apply of an absent object creates it; the emulator's update path then merges.
                async with self._lock:
                    self._objects[key] = dict(request.data)
                    await self._buses[request.resource].put({"type": "ADDED", "object": self._objects[key].raw})
        elif request.action == action.UPDATE and current is not None:
            wanted = meta.get("resourceVersion")
            have = (current.get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != have:
                raise KubernetesError(status=409, reason="Conflict",
                                      message="the object has been modified; please apply your changes to the latest "
                                              "version and try again")
            meta["resourceVersion"] = str(next(self._versions))
            # Fields only the server sets are never taken from a client.
            for field in ("uid", "creationTimestamp", "deletionTimestamp"):
                meta.pop(field, None)
            if "spec" in request.data and request.data["spec"] != current.get("spec"):
                meta["generation"] = int((current.get("metadata") or {}).get("generation", 1)) + 1
        return request

    async def _proxy(self, request: Any, url: str) -> Any:
        # Like the real one, the proxy consumes the caller's Authorization header (it authenticated them).
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("authorization", "host", "content-length", "transfer-encoding")}
        async with aiohttp.ClientSession() as session:
            async with session.request(str(request.method.value if hasattr(request.method, "value")
                                           else request.method), url, params=dict(request.params),
                                       data=request.body or None, headers=headers) as answer:
                body = await answer.read()
                return aiohttp.web.Response(status=answer.status, body=body,
                                            content_type=answer.content_type or "application/octet-stream")

    async def _serve_list(self, request: Any) -> Any:
        payload = await super()._serve_list(request)
        payload["items"] = [o for o in payload["items"] if _selected(request.params, o)]
        return payload

    async def _serve_watch(self, request: Any) -> Any:
        async for event in super()._serve_watch(request):
            if isinstance(event, dict) and not _selected(request.params, event.get("object") or {}):
                continue
            yield event


class ApiServer:
    """The emulator on 127.0.0.1 in a thread of its own; `url` and `kubeconfig()` for clients."""

    def __init__(self, custom_resources: dict[str, ResourceInfo]):
        self._custom = custom_resources
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self.url = ""
        self.emulator: ApiServerEmulator | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),),
                                        name="kube-apiserver", daemon=True)

    async def _main(self) -> None:
        self._stopped = asyncio.Event()
        async with ApiServerEmulator() as emulator, Server(emulator) as server:
            emulator.resources.load_bundled()
            for key, info in self._custom.items():
                emulator.resources[key] = info
            self.emulator = emulator
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stopped.wait()
            # Watch streams never end by themselves: cancel them, or the server waits for them on shutdown.
            current = asyncio.current_task()
            for task in asyncio.all_tasks():
                if task is not current:
                    task.cancel()

    def start(self) -> "ApiServer":
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the API mock server did not start")
        return self

    def stop(self) -> None:
        if self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(timeout=10)

    @property
    def requests(self) -> list[Recorded]:
        assert self.emulator is not None
        return list(self.emulator.recorded)

    def kubeconfig(self, namespace: str = "default") -> dict[str, Any]:
        # kmock serves plain HTTP without authentication; lightkube still insists on a user entry.
        return {
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester", "namespace": namespace}}],
        }
