"""Resource routes, generic over every kind in the registry: apply, list/watch, get, delete, events, logs.

Paths follow the Kubernetes layout (`/apis/GROUP/VERSION/namespaces/NS/PLURAL/NAME`); a namespace is a
Shipyard project. Nothing here knows a particular kind: a new kind registered in `shipyard.resources.KINDS`
is served without touching this file.

Watch is a long-poll over `Store.watch`, which blocks, so it runs in worker threads from a dedicated limiter
(a few hundred idle watchers must not starve the thread pool ordinary requests use).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from shipyard.resources import API_VERSION, KINDS, Document, ManifestError, Resource, validate_document
from shipyard.resources.manifest import MAX_DOCUMENT_BYTES
from shipyard.resources.selector import Selector, parse_selector
from shipyard.store import Gone, ListPage, NotFound, Store, WatchEvent
from shipyard.store.paging import page_resources

from ..authz import allow, check
from ..errors import error_response, one_line, validation_detail
from ..logs import LogOptions, check_options, log_target, open_log_stream

PREFIX = f"/apis/{API_VERSION}"
NAMESPACED = PREFIX + "/namespaces/{namespace}/{plural}"
DEFAULT_WATCH_SECONDS = 1800
STREAM_THREADS = 512

router = APIRouter()


class ApplyItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(default="-", max_length=4096)
    document: int = Field(default=1, ge=1)
    object: Any = Field()


class ApplyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    items: list[ApplyItem]
    dry_run: bool = Field(default=False, alias="dryRun")


def _store(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def _stream_limiter(request: Request) -> anyio.CapacityLimiter:
    # Created lazily: an anyio limiter needs the running event loop.
    limiter = getattr(request.app.state, "stream_limiter", None)
    if limiter is None:
        limiter = request.app.state.stream_limiter = anyio.CapacityLimiter(STREAM_THREADS)
    return limiter


def _kind(plural: str, namespaced: bool = True) -> type[Resource]:
    for cls in KINDS.values():
        if cls.PLURAL == plural and not (namespaced and cls.CLUSTER_SCOPED):
            return cls
    known = ", ".join(sorted(cls.PLURAL for cls in KINDS.values()))
    raise HTTPException(404, f"unknown resource type {plural!r} (known: {known})")


def _not_found(cls: type[Resource], namespace: str, name: str) -> HTTPException:
    return HTTPException(404, f"{cls.KIND.lower()}/{name} not found in project {namespace}")


def _field_selector(selector: str | None) -> dict[str, str]:
    wanted: dict[str, str] = {}
    for term in (selector or "").split(","):
        if not term.strip():
            continue
        field, sep, value = term.partition("=")
        field = field.strip().rstrip("=")  # accept `==` as Kubernetes does
        value = value.lstrip("=").strip()
        if not sep or field not in ("metadata.name", "metadata.namespace") or not value:
            raise HTTPException(400, f"unsupported field selector {term!r} (use metadata.name=NAME)")
        wanted[field] = value
    return wanted


def parse_label_query(text: str | None) -> Selector:
    try:
        return parse_selector(text)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


def _matcher(kind: str, namespace: str | None, fields: dict[str, str],
             labels: Selector) -> Callable[[dict[str, Any]], bool]:
    name = fields.get("metadata.name")
    namespace = fields.get("metadata.namespace", namespace)

    def match(obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        return (obj.get("kind") == kind and (namespace is None or meta.get("namespace") == namespace)
                and (name is None or meta.get("name") == name) and labels.matches(meta.get("labels")))

    return match


# --- apply ----------------------------------------------------------------------------------------------

def _parse_apply(raw: bytes) -> ApplyRequest:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise HTTPException(400, f"request body is not valid JSON: {one_line(str(exc))}") from None
    try:
        return ApplyRequest.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        detail = validation_detail(list(errors))
        raise HTTPException(422, detail if errors and errors[0]["loc"] else f"request body: {detail}") from None


def _oversized(request: ApplyRequest, body_size: int) -> str | None:
    if body_size <= MAX_DOCUMENT_BYTES:
        return None
    for item in request.items:
        size = len(json.dumps(item.object, separators=(",", ":")))
        if size > MAX_DOCUMENT_BYTES:
            # An object larger than a cluster's store accepts could never run there either.
            return (f"{item.source}: document {item.document}: object is {size / 1e6:.1f} MB; "
                    f"an object may have at most {MAX_DOCUMENT_BYTES >> 20} MiB")
    return None


def _validate(request: ApplyRequest) -> tuple[list[Resource], list[ManifestError]]:
    resources: list[Resource] = []
    failures: list[ManifestError] = []
    seen: dict[tuple[str, str, str], int] = {}
    for item in request.items:
        try:
            res = validate_document(Document(item.source, item.document, item.object))
        except ManifestError as exc:
            failures.append(exc)
            continue
        if res.key in seen:
            failures.append(ManifestError(item.source, item.document, "metadata.name",
                                          f"{res.ref} is also defined in document {seen[res.key]}"))
            continue
        seen[res.key] = item.document
        resources.append(res)
    return resources, failures


def _preview(store: Store, resources: list[Resource]) -> list[tuple[Resource, str]]:
    """What an apply would do, for a dry run: compares only the user-owned parts the store compares."""
    out = []
    for res in resources:
        existing = store.get(*res.key)
        if existing is None:
            out.append((res, "created"))
            continue
        same = (existing.model_dump().get("spec") == res.model_dump().get("spec")
                and existing.metadata.labels == res.metadata.labels
                and existing.metadata.annotations == res.metadata.annotations)
        out.append((res, "unchanged" if same else "configured"))
    return out


def _authorize_apply(request: Request, resources: list[Resource], dry_run: bool) -> None:
    """Apply creates or updates: both rights on each (kind, project) it touches, all checked before any
    write (a refusal leaves nothing half-applied)."""
    seen: set[tuple[str, str]] = set()
    for res in resources:
        if type(res).CLUSTER_SCOPED:
            # A Project: creating one is cluster-wide, changing one is a right in its own namespace (its
            # admin's), as routers/projects.py explains.
            name = res.metadata.name
            if _store(request).get(*res.key) is None:
                check(request, "create", type(res).PLURAL, name=name)
            else:
                check(request, "update", type(res).PLURAL, namespace=name, name=name)
            continue
        key = (type(res).PLURAL, res.metadata.namespace)
        if key in seen:
            continue
        seen.add(key)
        for verb in ("create", "update"):
            check(request, verb, key[0], namespace=key[1])
    if not dry_run:
        request.scope.setdefault("state", {}).setdefault("audit", {})["objects"] = [
            {"verb": "apply", "resource": type(r).PLURAL, "namespace": r.metadata.namespace, "name": r.metadata.name}
            for r in resources]


@router.post(PREFIX + "/apply", dependencies=[Depends(allow(None))])
async def apply(request: Request) -> JSONResponse:
    raw = await request.body()
    parsed = _parse_apply(raw)
    if not parsed.items:
        raise HTTPException(422, "no objects to apply")
    too_big = _oversized(parsed, len(raw))
    if too_big:
        raise HTTPException(413, too_big)
    resources, failures = _validate(parsed)
    if failures:
        more = len(failures) - 1
        detail = str(failures[0]) + (f" (and {more} more invalid document{'s' if more > 1 else ''})" if more else "")
        return error_response(422, detail, errors=[f.to_dict() for f in failures])
    _authorize_apply(request, resources, parsed.dry_run)
    store = _store(request)
    if parsed.dry_run:
        outcome = await run_in_threadpool(_preview, store, resources)
    else:
        results = await run_in_threadpool(store.apply, resources)
        outcome = [(r.resource, r.action) for r in results]
    items = [{"kind": res.kind, "namespace": res.metadata.namespace, "name": res.metadata.name, "action": action}
             for res, action in outcome]
    return JSONResponse({"items": items, **({"dryRun": True} if parsed.dry_run else {})})


# --- list and watch -------------------------------------------------------------------------------------

def _watch_line(event: WatchEvent) -> str:
    # The event's version, not the object's last one: a DELETED object carries its pre-deletion version, and
    # a client resuming from that would see the deletion twice.
    obj = dict(event.object)
    obj["metadata"] = {**(obj.get("metadata") or {}), "resourceVersion": str(event.resource_version)}
    return json.dumps({"type": event.type, "object": obj}, separators=(",", ":")) + "\n"


def _status_line(type_: str, since: int, **extra: Any) -> str:
    if type_ == "BOOKMARK":
        obj: dict[str, Any] = {"metadata": {"resourceVersion": str(since)}}
    else:
        obj = {"kind": "Status", **extra}
    return json.dumps({"type": type_, "object": obj}, separators=(",", ":")) + "\n"


async def _watch_stream(store: Store, first: list[WatchEvent], since: int, match: Callable[[dict[str, Any]], bool],
                        seconds: float, bookmark: float, limiter: anyio.CapacityLimiter) -> AsyncIterator[str]:
    deadline = time.monotonic() + seconds
    last_sent = time.monotonic()
    pending = first
    while True:
        lines = []
        for event in pending:
            since = max(since, event.resource_version)
            if match(event.object):
                lines.append(_watch_line(event))
        now = time.monotonic()
        if lines:
            yield "".join(lines)
            last_sent = now
        elif now - last_sent >= bookmark:
            yield _status_line("BOOKMARK", since)
            last_sent = now
        if now >= deadline:
            return
        wait = max(0.0, min(deadline - now, bookmark - (now - last_sent)))
        try:
            pending = await anyio.to_thread.run_sync(store.watch, since, wait, abandon_on_cancel=True,
                                                     limiter=limiter)
        except Gone as exc:
            yield _status_line("ERROR", since, code=410, reason="Expired", message=str(exc))
            return


def _page(store: Store, kind: str, namespace: str | None, name: str | None, limit: int | None,
          continue_token: str | None, selector: Selector) -> ListPage:
    list_page = getattr(store, "list_page", None)  # the optional PagedLister capability
    if list_page is not None:
        return list_page(kind, namespace, name, limit, continue_token,  # type: ignore[no-any-return]
                         selector or None)
    # Version first: a watch from it may repeat a change the list already shows, but never misses one.
    version = store.current_version()
    return page_resources(store.list(kind, namespace, selector or None), kind, namespace, name, limit,
                          continue_token, version)


def _list_response(cls: type[Resource], page: ListPage) -> Response:
    # The items are the store's JSON texts, spliced in unparsed: a list of 10,000 objects is one join.
    meta: dict[str, Any] = {"resourceVersion": str(page.resource_version)}
    if page.continue_token:
        meta["continue"] = page.continue_token
    head = json.dumps({"apiVersion": API_VERSION, "kind": f"{cls.KIND}List", "metadata": meta},
                      separators=(",", ":"))
    return Response(head[:-1] + ',"items":[' + ",".join(page.items) + "]}", media_type="application/json")


@dataclass(frozen=True)
class ListQuery:
    """A list's query parameters, as Kubernetes names them (one declaration for every list route)."""

    watch: bool
    resource_version: str | None
    field_selector: str | None
    label_selector: str | None
    timeout_seconds: int | None
    limit: int | None
    continue_token: str | None


def list_query(watch: bool = False,
               resource_version: str | None = Query(None, alias="resourceVersion"),
               field_selector: str | None = Query(None, alias="fieldSelector"),
               label_selector: str | None = Query(None, alias="labelSelector", max_length=4096),
               timeout_seconds: int | None = Query(None, alias="timeoutSeconds", ge=0, le=86400),
               limit: int | None = Query(None, ge=0),
               continue_token: str | None = Query(None, alias="continue", max_length=4096)) -> ListQuery:
    return ListQuery(watch, resource_version, field_selector, label_selector, timeout_seconds, limit,
                     continue_token)


async def list_kind(request: Request, cls: type[Resource], namespace: str | None, q: ListQuery) -> Response:
    store = _store(request)
    fields = _field_selector(q.field_selector)
    labels = parse_label_query(q.label_selector)
    # A watch sends only changes of matching objects (an object that stops matching is not announced).
    match = _matcher(cls.KIND, namespace, fields, labels)
    if not q.watch:
        scope = fields.get("metadata.namespace", namespace)
        page = await run_in_threadpool(_page, store, cls.KIND, scope, fields.get("metadata.name"), q.limit,
                                       q.continue_token, labels)
        return _list_response(cls, page)
    if q.resource_version is None or q.resource_version == "":
        since = store.current_version()
    elif q.resource_version.isdigit():
        since = int(q.resource_version)
    else:
        raise HTTPException(400, f"resourceVersion {q.resource_version!r} is not a number")
    limiter = _stream_limiter(request)
    # Asking with no wait surfaces Gone as a plain 410 before the stream (and its 200) starts.
    first = await anyio.to_thread.run_sync(store.watch, since, 0.0, limiter=limiter)
    seconds = DEFAULT_WATCH_SECONDS if q.timeout_seconds is None else q.timeout_seconds
    stream = _watch_stream(store, first, since, match, seconds, request.app.state.bookmark_seconds, limiter)
    return StreamingResponse(stream, media_type="application/x-ndjson")


@router.get(PREFIX + "/{plural}", response_model=None, dependencies=[Depends(allow("list", cluster_scoped=True))])
async def list_all(request: Request, plural: str, q: ListQuery = Depends(list_query)) -> Response:
    return await list_kind(request, _kind(plural, namespaced=False), None, q)


@router.get(NAMESPACED, response_model=None, dependencies=[Depends(allow("list"))])
async def list_namespaced(request: Request, namespace: str, plural: str,
                          q: ListQuery = Depends(list_query)) -> Response:
    return await list_kind(request, _kind(plural), namespace, q)


# --- one object -----------------------------------------------------------------------------------------

@router.get(NAMESPACED + "/{name}", dependencies=[Depends(allow("get"))])
def get_object(request: Request, namespace: str, plural: str, name: str) -> JSONResponse:
    cls = _kind(plural)
    obj = _store(request).get(cls.KIND, namespace, name)
    if obj is None:
        raise _not_found(cls, namespace, name)
    return JSONResponse(obj.to_wire())


@router.delete(NAMESPACED + "/{name}", dependencies=[Depends(allow("delete"))])
def delete_object(request: Request, namespace: str, plural: str, name: str) -> JSONResponse:
    cls = _kind(plural)
    obj = _store(request).delete(cls.KIND, namespace, name)
    if obj is None:
        raise _not_found(cls, namespace, name)
    return JSONResponse(obj.to_wire())


@router.get(NAMESPACED + "/{name}/events", dependencies=[Depends(allow("list", "events"))])
def events(request: Request, namespace: str, plural: str, name: str) -> JSONResponse:
    cls = _kind(plural)
    store = _store(request)
    if store.get(cls.KIND, namespace, name) is None:
        raise _not_found(cls, namespace, name)
    items = [{"type": e.type, "reason": e.reason, "message": e.message, "count": e.count,
              "firstTimestamp": e.first_timestamp.isoformat(), "lastTimestamp": e.last_timestamp.isoformat()}
             for e in store.list_events(cls.KIND, namespace, name)]
    return JSONResponse({"items": items})


@router.get(NAMESPACED + "/{name}/log", dependencies=[Depends(allow("get", subresource="log"))])
async def log(request: Request, namespace: str, plural: str, name: str,
              replica: int | None = Query(None, ge=0, le=1_000_000), pod: str | None = Query(None, max_length=253),
              all_pods: bool = Query(False, alias="all"), label_selector: str | None = Query(
                  None, alias="labelSelector", max_length=1000), previous: bool = False, follow: bool = False,
              tail_lines: int | None = Query(None, alias="tailLines", ge=0),
              since_seconds: int | None = Query(None, alias="sinceSeconds", ge=1),
              trial: int | None = Query(None, ge=0, le=1_000_000)) -> StreamingResponse:
    cls = _kind(plural)
    store = _store(request)
    obj = await run_in_threadpool(store.get, cls.KIND, namespace, name)
    if obj is None:
        raise _not_found(cls, namespace, name)
    source = request.app.state.logs
    if source is None:
        raise HTTPException(501, "this control plane has no log source (its runtime cannot stream logs)")
    try:
        options = check_options(LogOptions(
            replica=replica, pod=pod, all_pods=all_pods, selector=label_selector or "", previous=previous,
            follow=follow, tail_lines=tail_lines, since_seconds=since_seconds))
        obj = await run_in_threadpool(log_target, store, obj, trial)
        body = await open_log_stream(source, obj, options, _stream_limiter(request))
    except NotFound as exc:
        raise HTTPException(404, one_line(str(exc))) from None
    except ValueError as exc:
        raise HTTPException(400, one_line(str(exc))) from None
    return StreamingResponse(body, media_type="text/plain; charset=utf-8")
