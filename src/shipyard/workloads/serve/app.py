"""The HTTP surface: OpenAI's /v1 routes, /health and /metrics, as a FastAPI app.

Handlers are thin: parse and validate (protocol.py), turn prompts into token ids under the context limit,
submit to the engine, then either collect the outputs or stream them as server-sent events. Auth and "is the
model loaded" are dependencies of the /v1 router, checked in that order, so a wrong key is a 401 even while
loading and no handler runs before the model exists. /health and /metrics stay open: probes and scrapers
carry no API key (as with vLLM).

A non-streamed request still notices a client that hangs up (it races the generation against the ASGI
disconnect message) so an abandoned request stops costing a batch slot; a streamed one is cancelled by
Starlette on disconnect, and closing the stream aborts its sequences.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Callable

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from . import chat, protocol
from .errors import APIError, bad_request, from_validation_error, install_handlers
from .handoff import Generation, make_sink
from .loader import Loaded, ServerState
from .metrics import MetricsMiddleware, ServeMetrics

log = logging.getLogger("shipyard.serve")
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def create_app(state: ServerState, metrics: ServeMetrics | None = None,
               on_fatal: Callable[[str], None] | None = None) -> FastAPI:
    settings = state.settings
    metrics = metrics or ServeMetrics()
    model_name = settings.served_model_names[0]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start_loading(sink=make_sink(asyncio.get_running_loop()), on_step=metrics.batch_size.observe,
                            on_ready=metrics.track_engine, on_fatal=on_fatal or log.error)
        yield
        state.shutdown()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    install_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    # async: FastAPI would run a plain `def` dependency in its threadpool, a thread hop per request.
    async def require_key(request: Request) -> None:
        if not settings.api_key:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise APIError(401, "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise APIError(401, "Incorrect API key provided.", code="invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})

    async def ready() -> Loaded:
        if state.phase == "ready" and state.loaded is not None:
            return state.loaded
        if state.phase == "draining":
            raise APIError(503, "The server is shutting down; retry on another replica.", type="server_error",
                           code="shutting_down")
        if state.phase == "failed":
            raise APIError(503, f"The model failed to load: {state.error}", type="server_error",
                           code="model_load_failed")
        raise APIError(503, "The model is still loading; retry when GET /health returns 200.", type="server_error",
                       code="model_loading", headers={"Retry-After": "1"})

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])

    @app.get("/health")
    async def health() -> Response:
        if state.phase == "ready" and state.loaded is not None and state.loaded.engine.alive:
            return JSONResponse({"status": "ok"})
        body = {"status": state.phase if state.phase != "ready" else "engine_dead"}
        if state.error:
            body["error"] = state.error
        return JSONResponse(body, status_code=503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    def model_card(loaded: Loaded, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": loaded.created, "owned_by": "shipyard",
                "root": settings.model, "parent": None, "max_model_len": loaded.max_model_len}

    @v1.get("/models")
    async def list_models(loaded: Loaded = Depends(ready)) -> dict[str, Any]:
        return {"object": "list", "data": [model_card(loaded, n) for n in settings.served_model_names]}

    @v1.get("/models/{name:path}")
    async def get_model(name: str, loaded: Loaded = Depends(ready)) -> dict[str, Any]:
        if name not in settings.served_model_names:
            raise APIError(404, f"The model `{name}` does not exist.", type="not_found_error", param="model",
                           code="model_not_found")
        return model_card(loaded, name)

    @v1.post("/completions")
    async def completions(request: Request, loaded: Loaded = Depends(ready)) -> Response:
        started = time.monotonic()
        body = await _parse(request, protocol.CompletionRequest)
        _check_model(body.model, settings.served_model_names)
        prompts = [_encode(loaded, p, add_special_tokens=True) for p in body.prompt]
        params = [body.sampling(_max_tokens(loaded, len(ids), body.max_tokens, "prompt")) for ids in prompts]
        gen = _start(loaded, prompts, params)
        rid, created = protocol.new_id("cmpl"), protocol.now()
        tracker = _Tracker(metrics, "/v1/completions", started)
        if body.stream:
            return _sse(_stream_completion(gen, tracker, rid, created, model_name, body.include_usage))
        result = await _collect(request, gen, tracker, len(prompts))
        if result is None:
            return Response(status_code=499)  # the client left; nobody reads this
        texts, reasons, use = result
        return JSONResponse(protocol.completion(rid, created, model_name, list(zip(texts, reasons)), use))

    @v1.post("/chat/completions")
    async def chat_completions(request: Request, loaded: Loaded = Depends(ready)) -> Response:
        started = time.monotonic()
        body = await _parse(request, protocol.ChatCompletionRequest)
        _check_model(body.model, settings.served_model_names)
        text = chat.render(loaded.tokenizer, [m.as_template_input() for m in body.messages],
                           template=loaded.chat_template, add_generation_prompt=body.add_generation_prompt,
                           template_kwargs=body.chat_template_kwargs)
        ids = _encode(loaded, text, add_special_tokens=False, param="messages")
        params = body.sampling(_max_tokens(loaded, len(ids), body.requested_max_tokens, "messages"))
        gen = _start(loaded, [ids], [params])
        rid, created = protocol.new_id("chatcmpl"), protocol.now()
        tracker = _Tracker(metrics, "/v1/chat/completions", started)
        if body.stream:
            return _sse(_stream_chat(gen, tracker, rid, created, model_name, body.include_usage))
        result = await _collect(request, gen, tracker, 1)
        if result is None:
            return Response(status_code=499)
        texts, reasons, use = result
        return JSONResponse(protocol.chat_completion(rid, created, model_name, texts[0], reasons[0], use))

    app.include_router(v1)
    app.state.serve = state
    return app


# ---- request preparation ------------------------------------------------------------------------------
async def _parse(request: Request, model: type[BaseModel]) -> Any:
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request("We could not parse the JSON body of your request: it is not valid JSON "
                          f"({exc}).") from None
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def _check_model(requested: str | None, served: list[str]) -> None:
    if requested is not None and requested not in served:
        raise bad_request(f"The model `{requested}` does not exist; this server serves {', '.join(served)}.",
                          "model", "model_not_found")


def _encode(loaded: Loaded, prompt: str | list[int], *, add_special_tokens: bool, param: str = "prompt") -> list[int]:
    if isinstance(prompt, list):
        if any(t < 0 or t >= loaded.vocab_size for t in prompt):
            raise bad_request(f"Token ids must be in [0, {loaded.vocab_size}).", param)
        return prompt
    ids = loaded.tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]
    if not ids:
        raise bad_request("The prompt is empty after tokenization.", param)
    return ids


def _max_tokens(loaded: Loaded, prompt_len: int, requested: int | None, param: str) -> int:
    """Requested max_tokens, capped so prompt + completion fits --max-model-len; no cap asked = all that fits."""
    room = loaded.max_model_len - prompt_len
    if room < 1:
        raise bad_request(f"This model's maximum context length is {loaded.max_model_len} tokens. However, your "
                          f"prompt has {prompt_len} tokens (and at least 1 token must remain for the completion). "
                          "Please shorten your prompt.", param, "context_length_exceeded")
    return min(requested, room) if requested else room


def _start(loaded: Loaded, prompts: list[list[int]], params: list[protocol.SamplingParams]) -> Generation:
    gen = Generation(loaded.engine, prompts, params)
    try:
        gen.start()
    except RuntimeError:
        raise APIError(503, "The server is shutting down; retry on another replica.", type="server_error",
                       code="shutting_down") from None
    return gen


# ---- responses ----------------------------------------------------------------------------------------
class _Tracker:
    """Time to first token, latency and token counts of one request, recorded as its outputs arrive."""

    def __init__(self, metrics: ServeMetrics, route: str, started: float):
        self.metrics, self.route, self.started = metrics, route, started
        self.first = True
        self.prompt_tokens = self.completion_tokens = 0
        self.closed = False

    def see(self, out: Any) -> None:
        if self.first and out.completion_tokens:
            self.first = False
            self.metrics.ttft.observe(time.monotonic() - self.started)
        if out.finished:
            self.prompt_tokens += out.prompt_tokens
            self.completion_tokens += out.completion_tokens

    def done(self) -> dict[str, int]:
        """Record the request once (also when an abandoned stream is closed half-way)."""
        if not self.closed:
            self.closed = True
            self.metrics.latency.labels(self.route).observe(time.monotonic() - self.started)
            self.metrics.prompt_tokens.inc(self.prompt_tokens)
            self.metrics.completion_tokens.inc(self.completion_tokens)
        return protocol.usage(self.prompt_tokens, self.completion_tokens)


def _finish(reason: str | None) -> str | None:
    return None if reason is None else ("length" if reason == "length" else "stop")


def _server_error(message: str | None) -> APIError:
    return APIError(500, f"Generation failed: {message}", type="server_error")


async def _collect(request: Request, gen: Generation, tracker: _Tracker, n: int):
    """All outputs of a non-streamed request, or None if the client disconnected first."""

    async def run() -> tuple[list[str], list[str | None], dict[str, int]]:
        texts: list[list[str]] = [[] for _ in range(n)]
        reasons: list[str | None] = [None] * n
        async for index, out in gen.outputs():
            tracker.see(out)
            if out.error:
                raise _server_error(out.error)
            texts[index].append(out.text)
            reasons[index] = _finish(out.finish_reason)
        return ["".join(t) for t in texts], reasons, tracker.done()

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    work, watch = asyncio.ensure_future(run()), asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not work.done():
            work.cancel()  # also aborts the sequences (the outputs() generator closes)
    return work.result() if work in done else None


def _sse(chunks: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(chunks, media_type="text/event-stream", headers=_SSE_HEADERS)


def _error_event(message: str | None) -> str:
    return protocol.sse(_server_error(message).body())


async def _stream_completion(gen: Generation, tracker: _Tracker, rid: str, created: int, model: str,
                             include_usage: bool) -> AsyncIterator[str]:
    try:
        async for index, out in gen.outputs():
            tracker.see(out)
            if out.error:
                yield _error_event(out.error)
                break
            if out.text or out.finished:
                yield protocol.sse(protocol.completion_chunk(rid, created, model, index, out.text,
                                                             _finish(out.finish_reason)))
    finally:
        tracker.done()  # idempotent: also records a stream the client abandoned
    use = tracker.done()
    if include_usage:
        yield protocol.sse(protocol.usage_chunk(rid, created, model, "text_completion", use))
    yield protocol.sse("[DONE]")


async def _stream_chat(gen: Generation, tracker: _Tracker, rid: str, created: int, model: str,
                       include_usage: bool) -> AsyncIterator[str]:
    # OpenAI's first chunk carries the role and an empty content; the last one the finish_reason.
    yield protocol.sse(protocol.chat_chunk(rid, created, model, {"role": "assistant", "content": ""}, None))
    try:
        async for _, out in gen.outputs():
            tracker.see(out)
            if out.error:
                yield _error_event(out.error)
                break
            if out.text or out.finished:
                delta = {"content": out.text} if out.text else {}
                yield protocol.sse(protocol.chat_chunk(rid, created, model, delta, _finish(out.finish_reason)))
    finally:
        tracker.done()  # idempotent: also records a stream the client abandoned
    use = tracker.done()
    if include_usage:
        yield protocol.sse(protocol.usage_chunk(rid, created, model, "chat.completion.chunk", use))
    yield protocol.sse("[DONE]")
