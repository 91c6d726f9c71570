"""The FastAPI application: OpenAI-compatible routes over one :class:`ModelWorker` per served model.

Routes: ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/chat/completions``, ``POST /v1/completions``
(both with ``stream: true`` as server-sent events ending in ``data: [DONE]``), ``GET /health`` and
``GET /metrics`` (Prometheus text). Errors use OpenAI's JSON shape ``{"error": {message, type, param, code}}``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from tutti.errors import TuttiError
from tutti.models.interface import Model, StreamChunk
from tutti.server import protocol as P
from tutti.server.metrics import server_metrics
from tutti.server.worker import END, ContextTooLong, Job, ModelWorker, QueueFull, TokenPrompt

POLL_S = 0.05  # how often a waiting handler checks that its client is still connected


class APIError(Exception):
    """An error answered in OpenAI's shape with an HTTP status."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param

    def response(self) -> JSONResponse:
        """The JSON response."""
        return JSONResponse(P.error_body(self.message, self.type, self.code, self.param), status_code=self.status)


def _as_api_error(e: BaseException) -> APIError:
    if isinstance(e, APIError):
        return e
    if isinstance(e, ContextTooLong):
        return APIError(400, str(e), code="context_length_exceeded", param="messages")
    if isinstance(e, TuttiError | ValueError):
        return APIError(400, str(e))
    if isinstance(e, TimeoutError):
        return APIError(504, str(e) or "request timed out", "timeout", "timeout")
    return APIError(500, f"{type(e).__name__}: {e}", "server_error")


class Server:
    """The served models and their workers, plus request limits.

    Args:
        models: served id -> model (anything implementing :class:`tutti.models.interface.Model`).
        api_key: bearer key clients must send (None = open).
        queue_size, max_batch_size, batch_wait_ms, default_max_tokens: worker settings (see ``ServeConfig``).
        request_timeout_s: per-request limit.
        max_n: largest ``n`` accepted.
        batch_sizes: per-model overrides of ``max_batch_size``.
        rebuilders: per composite id, a function building the composite with request-level strategy overrides.
    """

    def __init__(self, models: Mapping[str, Model], *, api_key: str | None = None, queue_size: int = 64,
                 max_batch_size: int = 8, batch_wait_ms: float = 5.0, request_timeout_s: float = 300.0,
                 default_max_tokens: int = 256, max_n: int = 8, batch_sizes: Mapping[str, int] | None = None,
                 rebuilders: Mapping[str, Callable[[Mapping[str, Any]], Model]] | None = None) -> None:
        self.models = dict(models)
        self.api_key = api_key
        self.request_timeout_s = request_timeout_s
        self.max_n = max_n
        self.created = int(time.time())
        self.metrics = server_metrics(lambda: {k: w.depth for k, w in self.workers.items()})
        self._worker_kw = {"queue_size": queue_size, "batch_wait_s": batch_wait_ms / 1000,
                           "default_max_tokens": default_max_tokens}
        self._max_batch_size = max_batch_size
        self.workers = {
            k: ModelWorker(k, metrics=self.metrics, max_batch_size=(batch_sizes or {}).get(k, max_batch_size),
                           **self._worker_kw)  # type: ignore[arg-type]
            for k in self.models
        }
        self._lock = threading.Lock()
        self.rebuilders = dict(rebuilders or {})
        self._overridden: dict[tuple[str, str], Model] = {}

    def close(self) -> None:
        """Stop every worker."""
        for w in self.workers.values():
            w.close()

    def check_key(self, request: Request) -> None:
        """401 unless the request carries ``Authorization: Bearer <api_key>``."""
        if self.api_key is None:
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:] if auth.lower().startswith("bearer ") else ""
        if not given or not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise APIError(401, "missing or wrong API key; send 'Authorization: Bearer <key>'", code="invalid_api_key")

    def _named_composite(self, model_id: str) -> bool:
        """Build ``STRATEGY:ID+ID...`` over served models on first use (e.g. ``ensemble:smol+gemma``)."""
        strategy, _, rest = model_id.partition(":")
        ids = rest.split("+") if rest else []
        if not strategy or not ids or any(i not in self.models for i in ids):
            return False
        try:
            from tutti.server.runner import composite_of
        except ImportError:
            return False
        with self._lock:
            if model_id not in self.models:
                try:
                    model = composite_of(strategy, [self.models[i] for i in ids], ids, name=model_id)
                except TuttiError as e:
                    raise APIError(400, f"model {model_id!r}: {e}", param="model") from None
                self.workers[model_id] = ModelWorker(model_id, metrics=self.metrics,
                                                     max_batch_size=self._max_batch_size,
                                                     **self._worker_kw)  # type: ignore[arg-type]
                self.models[model_id] = model
        return True

    def model_for(self, model_id: str, collab: dict[str, Any] | None) -> Model:
        """The served model, or a composite rebuilt with the request's strategy overrides (cached)."""
        if model_id not in self.models and not self._named_composite(model_id):
            from difflib import get_close_matches

            near = get_close_matches(model_id, list(self.models), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; served: {', '.join(sorted(self.models))}"
            raise APIError(404, f"model {model_id!r} does not exist{hint}", code="model_not_found", param="model")
        base = self.models[model_id]
        if not collab:
            return base
        key = (model_id, json.dumps(collab, sort_keys=True))
        if key not in self._overridden:
            rebuild = self.rebuilders.get(model_id)
            if rebuild is None:
                raise APIError(400, f"model {model_id!r} is not a composite: it takes no strategy overrides "
                               "('collab' in extra_body)", param="collab")
            try:
                self._overridden[key] = rebuild(collab)
            except (TuttiError, TypeError, ValueError) as e:
                raise APIError(400, f"bad strategy override for {model_id!r}: {e}", param="collab") from None
        return self._overridden[key]


def create_app(server: Server) -> FastAPI:
    """The FastAPI app over ``server`` (workers stop on shutdown)."""
    app = FastAPI(title="tutti", description="OpenAI-compatible API over tutti models and composites.")
    app.state.tutti = server
    app.router.add_event_handler("shutdown", server.close)

    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError) -> JSONResponse:
        return e.response()

    @app.exception_handler(ClientGone)
    async def _gone(_: Request, e: ClientGone) -> Response:
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it, the metrics do

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        err = e.errors()[0]
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        return APIError(400, f"{'.'.join(loc) or 'body'}: {err.get('msg')}", param=".".join(loc) or None).response()

    app.add_middleware(_CountRequests, server=server)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": {k: {"queue_depth": w.depth} for k, w in server.workers.items()}}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(server.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        server.check_key(request)
        return {"object": "list", "data": [_model_card(k, server.created) for k in server.models]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        server.check_key(request)
        server.model_for(model_id, None)
        return _model_card(model_id, server.created)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: P.ChatCompletionRequest, request: Request) -> Any:
        server.check_key(request)
        return await _complete(server, request, body, [body.prompt()], chat=True)

    @app.post("/v1/completions", response_model=None)
    async def completions(body: P.CompletionRequest, request: Request) -> Any:
        server.check_key(request)
        prompts = _prompts(body.prompt)
        if not prompts:
            raise APIError(400, "prompt: give at least one prompt", param="prompt")
        return await _complete(server, request, body, prompts, chat=False)

    return app


class _CountRequests:
    """Counts ``/v1/`` requests by status and observes latency (streams observe their own at the end).

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` wraps ``receive`` so that a handler can no
    longer see its client disconnect (``Request.is_disconnected`` stays False).
    """

    def __init__(self, app: Any, server: Server) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        t0, seen = time.monotonic(), {"status": 500, "stream": False}

        async def watch(message: Any) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                headers = dict(message.get("headers") or [])
                seen["stream"] = headers.get(b"content-type", b"").startswith(b"text/event-stream")
                self.server.metrics.inc("requests_total", endpoint=path, status=str(seen["status"]))
                if not seen["stream"] or seen["status"] != 200:
                    self.server.metrics.observe("request_latency_seconds", time.monotonic() - t0, endpoint=path)
            await send(message)

        await self.app(scope, receive, watch)


def _prompts(prompt: Any) -> list[Any]:
    """The prompts of a completions request: strings, or :class:`TokenPrompt` for token ids."""
    if isinstance(prompt, str):
        return [prompt]
    if prompt and all(isinstance(t, int) for t in prompt):
        return [TokenPrompt(tuple(prompt))]
    out = [TokenPrompt(tuple(p)) if isinstance(p, list) else p for p in prompt]
    if any(isinstance(p, TokenPrompt) and not p.ids for p in out):
        raise APIError(400, "prompt: a token-id prompt needs at least one token", param="prompt")
    return out


def _model_card(model_id: str, created: int) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "tutti"}


async def _complete(server: Server, request: Request, body: Any, prompts: list[Any], *, chat: bool) -> Any:
    if body.n > server.max_n:
        raise APIError(400, f"n={body.n} is more than this server's limit of {server.max_n}", param="n")
    if body.stream and (body.n > 1 or len(prompts) > 1):
        raise APIError(400, "streaming supports one prompt and n=1", param="stream")
    model = server.model_for(body.model, body.collab)
    worker = server.workers[body.model]
    want_lp, top = body.want_logprobs
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + server.request_timeout_s

    def make_params(max_new: int) -> Any:
        try:
            return body.sampling(max_new, top, want_lp)
        except ValueError as e:
            raise APIError(400, str(e)) from None

    jobs = [Job(model=model, prompt=p, max_tokens=body.requested_max_tokens, make_params=make_params, loop=loop,
                stream=body.stream, token_ids=body.return_tokens_as_token_ids, deadline=deadline)
            for p in prompts]
    try:
        for j in jobs:
            worker.submit(j)
    except QueueFull as e:
        for j in jobs:
            j.cancel.set()
        server.metrics.inc("rejected_total", model=body.model)
        raise APIError(503, str(e), "server_error", "overloaded") from None
    if body.stream:
        return await _stream(server, request, jobs[0], body, chat=chat)
    try:
        groups = await _until_done_or_gone(request, asyncio.gather(*(j.future for j in jobs)), deadline)
    except ClientGone:
        for j in jobs:  # the worker drops them from the queue, or does not deliver a batch that already runs
            j.cancel.set()
        raise
    except TimeoutError:
        for j in jobs:
            j.cancel.set()
        raise APIError(504, f"request timed out after {server.request_timeout_s:g} s", "timeout", "timeout") from None
    except BaseException as e:
        for j in jobs:
            j.cancel.set()
        if isinstance(e, Exception):
            raise _as_api_error(e) from None
        raise
    as_ids = body.return_tokens_as_token_ids
    if chat:
        return P.chat_response(body.model, groups[0], as_ids)
    echo = [p if isinstance(p, str) else "" for p in prompts] if body.echo else None
    return P.completion_response(body.model, groups, echo, as_ids)


class ClientGone(Exception):
    """The HTTP client disconnected before its answer was ready."""


async def _until_done_or_gone(request: Request, waiting: Awaitable[Any], deadline: float) -> Any:
    """Await ``waiting`` until ``deadline`` (``TimeoutError``), checking every ``POLL_S`` whether the client is
    still connected (:class:`ClientGone` when not): a non-streamed request has no send to fail on."""
    task = asyncio.ensure_future(waiting)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            done, _ = await asyncio.wait({task}, timeout=min(POLL_S, left))
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientGone
    finally:
        if not task.done():
            task.cancel()


async def _stream(server: Server, request: Request, job: Job, body: Any, *, chat: bool) -> StreamingResponse:
    t0 = time.monotonic()
    assert job.chunks is not None
    try:  # the first item decides the HTTP status: errors before any token get a proper error response
        first = await _until_done_or_gone(request, job.chunks.get(), job.deadline)
    except TimeoutError:
        job.cancel.set()
        raise APIError(504, "request timed out before the first token", "timeout", "timeout") from None
    except BaseException:
        job.cancel.set()
        raise
    if isinstance(first, BaseException):
        raise _as_api_error(first)
    server.metrics.observe("time_to_first_token_seconds", time.monotonic() - t0, model=body.model)
    rid, created = P.new_id("chatcmpl" if chat else "cmpl"), int(time.time())
    kind = "chat.completion.chunk" if chat else "text_completion"

    def event(choice: dict[str, Any], usage: dict[str, int] | None = None) -> str:
        obj = {"id": rid, "object": kind, "created": created, "model": body.model,
               "choices": [choice] if choice else []}
        if usage is not None:
            obj["usage"] = usage
        return f"data: {json.dumps(obj)}\n\n"

    def chunk_event(c: StreamChunk) -> str:
        lp = None
        if c.logprob is not None:
            ids = (c.token_id,) if c.token_id is not None else ()
            fmt = P.chat_logprobs if chat else P.completion_logprobs
            lp = fmt((c.logprob,), ids, body.return_tokens_as_token_ids)
        if chat:
            return event({"index": 0, "delta": {"content": c.text} if c.text else {}, "logprobs": lp,
                          "finish_reason": c.finish_reason})
        return event({"index": 0, "text": c.text, "logprobs": lp, "finish_reason": c.finish_reason})

    async def events() -> AsyncIterator[str]:
        tokens, item = 0, first
        try:
            if chat:
                yield event({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                             "finish_reason": None})
            while item is not END:
                if isinstance(item, BaseException):
                    err = _as_api_error(item)
                    yield f"data: {json.dumps(P.error_body(err.message, err.type, err.code))}\n\n"
                    break
                if item.token_id is not None and item.finish_reason is None:
                    tokens += 1
                if item.text or item.finish_reason:
                    yield chunk_event(item)
                left = job.deadline - time.monotonic()
                try:
                    item = await asyncio.wait_for(job.chunks.get(), timeout=max(0.0, left))
                except TimeoutError:
                    item = TimeoutError("request timed out while streaming")
            if body.stream_options is not None and body.stream_options.include_usage:
                yield event({}, P.usage(job.prompt_tokens, tokens))
            yield "data: [DONE]\n\n"
        finally:  # a client that goes away cancels the generation
            job.cancel.set()
            server.metrics.observe("request_latency_seconds", time.monotonic() - t0,
                                   endpoint="/v1/chat/completions" if chat else "/v1/completions")

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
