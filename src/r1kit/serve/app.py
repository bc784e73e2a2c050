"""The HTTP API: OpenAI-compatible chat and completions with DeepSeek's `reasoning_content`, `/generate`, a
WebSocket stream, health, Prometheus metrics and a chat page.

Every error is a JSON body in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`: 400 for a
request that cannot be served as sent (bad JSON, a field of the wrong type or out of range, an unknown field,
a prompt or `max_tokens` over the limits, a role marker in a message), 401 for a missing or wrong API key, 404
for an unknown model, 413 for a body over the size limit, 503 with `Retry-After` when the queue or the server
is full or the server is shutting down, 504 past the request deadline, and 500 only when generating a valid
request fails (that request alone: see engine/batching.py).

The event loop only routes: prompts are checked against a character bound first (a prompt longer than the
context times the longest token cannot fit, so it is refused without being tokenized), then rendered and
tokenized on a worker thread. A client that leaves, streaming or not, frees its queue place at once and its
batch row at the next decode step. What requests must pass before any of this is in guard.py.
"""

import asyncio
import contextlib
import copy
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import ValidationError
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from r1kit.engine.batching import EngineOverloaded, Event, Failure, Finish, GenerationRequest, Token
from r1kit.r1format import CONTENT, REASONING, SPECIAL_TOKENS, NoChatTemplate, ReasoningStream, render_chat
from r1kit.serve.guard import MISSING_KEY, RETRY_AFTER_SECONDS, Guard, key_matches
from r1kit.serve.metrics import ServeMetrics, StatusRecorder
from r1kit.serve.protocol import ERROR_RESPONSES, STREAMED, describe_errors, request_models


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class ClientGone(Exception):
    """The client closed the connection before its response."""


@dataclass
class Prompt:
    """A request made ready for the engine."""

    ids: list[int]
    max_new_tokens: int
    opened: bool
    """The prompt ends inside an open `<think>` block (later R1 templates): the output starts as reasoning."""


class Service:
    """What the routes share: the engine, the tokenizer, limits and metrics."""

    def __init__(
        self,
        engine,
        tokenizer,
        *,
        model_name: str,
        max_tokens_limit: int,
        context_length: int | None,
        api_key: str | None,
        request_timeout: float = 600.0,
    ):
        self.engine = engine
        self.tokenizer = copy.deepcopy(tokenizer)  # the engine's thread decodes with its own
        self.model_name, self.max_tokens_limit, self.context_length = (
            model_name,
            max_tokens_limit,
            context_length,
        )
        self.api_key, self.request_timeout = api_key, request_timeout
        self.metrics = ServeMetrics(engine)
        self.draining = False
        # One thread renders and tokenizes, off the event loop (a tokenizer is not safe to share between threads).
        self._tokenizing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="r1kit-tokenize")
        vocabulary = self.tokenizer.get_vocab()
        self.longest_token = max((len(token) for token in vocabulary), default=1)
        """Characters one token can stand for at most (a byte-level token's string is at least as long)."""
        self.markers = sorted(
            {t for t in SPECIAL_TOKENS if t in vocabulary}
            | {str(t) for t in self.tokenizer.added_tokens_decoder.values() if t.special}
        )
        """Token strings chat text may not hold: the template's role markers and the tokenizer's specials."""

    def close(self) -> None:
        self._tokenizing.shutdown(wait=False, cancel_futures=True)

    # ---- requests into prompts
    def check_key(self, authorization: str | None, query_key: str | None = None) -> None:
        if not key_matches(self.api_key, authorization, query_key):
            raise ApiError(401, MISSING_KEY, code="invalid_api_key", kind="authentication_error")

    def check_model(self, name: str) -> None:
        if name != self.model_name:
            raise ApiError(
                404,
                f"model {name!r} not found; this server serves {self.model_name!r}",
                param="model",
                code="model_not_found",
            )

    async def chat_prompt(
        self, messages: list[dict], limit: int | None, fields: list[str] | None = None
    ) -> Prompt:
        """`fields`: the request field each message came from (default `messages[i].content`), for errors."""
        fields = fields or [f"messages[{i}].content" for i in range(len(messages))]
        self._check_length(sum(len(m["content"]) for m in messages), fields[0].split("[")[0])
        ids, opened = await self._off_loop(self._render_chat, messages, fields)
        return Prompt(ids, self.budget(len(ids), limit), opened)

    def _render_chat(self, messages: list[dict], fields: list[str]) -> tuple[list[int], bool]:
        for message, field in zip(messages, fields):
            self._check_markers(message["content"], field)
        try:
            return render_chat(self.tokenizer, messages)
        except NoChatTemplate as error:
            raise ApiError(400, f"{error}: use /v1/completions") from None

    async def text_prompt(self, text: str, limit: int | None) -> Prompt:
        """A raw completion prompt: sent as written, special tokens included (the caller renders its own)."""
        self._check_length(len(text), "prompt")
        ids = (await self._off_loop(self.tokenizer, text))["input_ids"]
        return Prompt(ids, self.budget(len(ids), limit), False)

    async def _off_loop(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self._tokenizing, function, *args)

    def _check_length(self, num_chars: int, param: str) -> None:
        """Refuse, without tokenizing it, a prompt too long for the context whatever its tokens."""
        if self.context_length is None:
            return
        bound = self.context_length * self.longest_token
        if num_chars > bound:
            raise ApiError(
                400,
                f"the prompt is {num_chars} characters; the model's context of {self.context_length} tokens "
                f"holds at most {bound}",
                param=param,
                code="context_length_exceeded",
            )

    def _check_markers(self, text: str, param: str) -> None:
        """Chat text is text: a role marker in it would let a user write turns the template did not."""
        for marker in self.markers:
            if marker in text:
                raise ApiError(
                    400,
                    f"{param} holds the special token {marker!r}; chat messages are text and may not hold "
                    "the template's markers (send raw prompts to /v1/completions)",
                    param=param,
                )

    def budget(self, num_prompt_tokens: int, asked: int | None) -> int:
        """The completion's token budget: as asked, within the server's limit and the model's context."""
        context = self.context_length
        if context is not None and num_prompt_tokens >= context:
            raise ApiError(
                400,
                f"the prompt is {num_prompt_tokens} tokens; the model's context is {context}",
                param="messages",
                code="context_length_exceeded",
            )
        if asked is None:
            return min(
                self.max_tokens_limit, context - num_prompt_tokens if context else self.max_tokens_limit
            )
        if asked > self.max_tokens_limit:
            raise ApiError(
                400,
                f"max_tokens is {asked}; this server allows at most {self.max_tokens_limit}",
                param="max_tokens",
            )
        if context is not None and num_prompt_tokens + asked > context:
            raise ApiError(
                400,
                f"the prompt ({num_prompt_tokens} tokens) plus max_tokens ({asked}) exceeds the "
                f"model's context of {context} tokens",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return asked

    # ---- running them
    def start(self, prompt: Prompt, body, route: str) -> AsyncIterator[Event]:
        """Queue the request now (so a full queue is a 503 before any response starts) and return its events."""
        if self.draining:
            raise ApiError(503, "the server is shutting down", kind="server_error")
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()

        def sink(event: Event) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:  # the event loop has closed: nobody is listening any more
                pass

        request = GenerationRequest(
            prompt.ids,
            prompt.max_new_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            seed=body.seed,
            stop=getattr(body, "stop", None) or [],
            sink=sink,
        )
        try:
            self.engine.submit(request)
        except EngineOverloaded as error:
            raise ApiError(
                503, str(error), kind="server_error", headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
            ) from None
        return self._events(request, queue, route)

    async def _events(self, request: GenerationRequest, queue: asyncio.Queue, route: str):
        first, deadline = True, time.monotonic() + self.request_timeout
        try:
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), deadline - time.monotonic())
                except TimeoutError:
                    yield Failure(
                        f"the request ran past the server's deadline of {self.request_timeout:g} s "
                        "(serve.request_timeout)",
                        status=504,
                    )
                    return
                if isinstance(event, Token) and first:
                    self.metrics.ttft.observe(time.perf_counter() - request.arrived)
                    first = False
                if isinstance(event, Finish):
                    self.metrics.latency.labels(route).observe(time.perf_counter() - request.arrived)
                    self.metrics.prompt_tokens.inc(event.num_prompt_tokens)
                    self.metrics.completion_tokens.inc(event.num_completion_tokens)
                yield event
                if isinstance(event, (Finish, Failure)):
                    return
        finally:
            self.engine.cancel(
                request
            )  # a client that left frees its queue place now, its batch row next step


def usage(finish: Finish) -> dict:
    return {
        "prompt_tokens": finish.num_prompt_tokens,
        "completion_tokens": finish.num_completion_tokens,
        "total_tokens": finish.num_prompt_tokens + finish.num_completion_tokens,
    }


async def collect(events: AsyncIterator[Event], splitter: ReasoningStream | None):
    """Run a request to its end: (reasoning or None, content, finish)."""
    parts: dict[str, list[str]] = {REASONING: [], CONTENT: []}
    async for event in events:
        if isinstance(event, Failure):
            raise ApiError(event.status, event.message, kind="server_error")
        if isinstance(event, Token):
            for field, text in splitter.feed(event.text) if splitter else [(CONTENT, event.text)]:
                parts[field].append(text)
        if isinstance(event, Finish):
            for field, text in splitter.finish() if splitter else []:
                parts[field].append(text)
            reasoning = "".join(parts[REASONING]) if splitter and splitter.saw_think else None
            return reasoning, "".join(parts[CONTENT]), event


async def unless_gone(request: Request, work: Awaitable):
    """`work`'s result, or ClientGone as soon as the client disconnects (cancelling `work`, which frees the
    engine's row). The body has been read: the next message from the connection can only be its end."""

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task, watcher = asyncio.ensure_future(work), asyncio.ensure_future(gone())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task  # its clean-up (the engine's cancel) runs before the answer
    if task.cancelled():
        raise ClientGone
    return task.result()


def create_app(
    engine,
    tokenizer,
    *,
    model_name: str,
    max_tokens_limit: int = 4096,
    context_length: int | None = None,
    api_key: str | None = None,
    strict: bool = True,
    public_metrics: bool = False,
    allowed_origins: list[str] | None = None,
    max_request_bytes: int = 8 * 2**20,
    max_concurrent_requests: int = 1024,
    request_timeout: float = 600.0,
):
    """The ASGI app: the API (FastAPI) behind the guard (guard.py), its responses counted for /metrics."""
    service = Service(
        engine,
        tokenizer,
        model_name=model_name,
        max_tokens_limit=max_tokens_limit,
        context_length=context_length,
        api_key=api_key,
        request_timeout=request_timeout,
    )
    ChatRequest, CompletionRequest, GenerateRequest = request_models(strict, model_name)
    origins = set(allowed_origins or [])

    async def lifespan(app):
        yield
        service.draining = True  # uvicorn has let in-flight requests finish; stop the engine's thread
        await asyncio.to_thread(engine.shutdown)
        service.close()

    app = FastAPI(title="r1kit", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, error: ClientGone):
        return Response(status_code=499)  # nobody reads it; /metrics counts it (nginx's "client closed")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        message, param = describe_errors(error.errors())
        return JSONResponse(ApiError(400, message, param=param).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        return JSONResponse(
            ApiError(error.status_code, str(error.detail)).body(), status_code=error.status_code
        )

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return resources.files("r1kit.serve").joinpath("chat.html").read_text(encoding="utf-8")

    @app.get("/health")
    async def health():
        """Liveness: the engine's worker runs (a draining server is still alive)."""
        alive = engine.alive()
        state = "draining" if service.draining else "ok" if alive else "engine stopped"
        return JSONResponse({"status": state, "engine": engine.name}, status_code=200 if alive else 503)

    @app.get("/ready")
    async def ready():
        """Readiness: the server takes new requests (alive, not draining, room in the queue)."""
        stats = engine.stats()
        if not engine.alive():
            state = "engine stopped"
        elif service.draining:
            state = "draining"
        elif stats["queue_depth"] >= getattr(engine, "max_queue_size", float("inf")):
            state = "queue full"
        else:
            state = "ready"
        return JSONResponse(
            {"status": state, "queue_depth": stats["queue_depth"], "batch_size": stats["batch_size"]},
            status_code=200 if state == "ready" else 503,
        )

    @app.get("/metrics", response_class=PlainTextResponse, responses=ERROR_RESPONSES)
    async def metrics():
        return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", responses=ERROR_RESPONSES)
    async def models(request: Request):
        return {
            "object": "list",
            "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "r1kit"}],
        }

    @app.post("/v1/chat/completions", responses={**ERROR_RESPONSES, **STREAMED})
    async def chat_completions(request: Request, body: ChatRequest):
        service.check_model(body.model)
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in body.messages
        ]
        prompt = await service.chat_prompt(messages, body.limit())
        events = service.start(prompt, body, "/v1/chat/completions")
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model_name}
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return EventSourceResponse(
                _chat_chunks(events, ReasoningStream(prompt.opened), base, include_usage)
            )
        reasoning, content, finish = await unless_gone(
            request, collect(events, ReasoningStream(prompt.opened))
        )
        message = {"role": "assistant", "content": content, "reasoning_content": reasoning}
        return {
            **base,
            "object": "chat.completion",
            "usage": usage(finish),
            "choices": [{"index": 0, "message": message, "finish_reason": finish.reason, "logprobs": None}],
        }

    @app.post("/v1/completions", responses={**ERROR_RESPONSES, **STREAMED})
    async def completions(request: Request, body: CompletionRequest):
        service.check_model(body.model)
        prompt = await service.text_prompt(body.prompt, body.limit())
        events = service.start(prompt, body, "/v1/completions")
        base = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model_name}
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return EventSourceResponse(_completion_chunks(events, base, include_usage))
        _, text, finish = await unless_gone(request, collect(events, None))
        return {
            **base,
            "object": "text_completion",
            "usage": usage(finish),
            "choices": [{"index": 0, "text": text, "finish_reason": finish.reason, "logprobs": None}],
        }

    @app.post("/generate", responses=ERROR_RESPONSES)
    async def generate(request: Request, body: GenerateRequest):
        """The simple API: a prompt in, the reasoning and the answer out."""
        messages, fields = _user_turn(body)
        prompt = await service.chat_prompt(messages, body.limit(), fields)
        reasoning, content, finish = await unless_gone(
            request, collect(service.start(prompt, body, "/generate"), ReasoningStream(prompt.opened))
        )
        return {
            "model": model_name,
            "reasoning": reasoning,
            "answer": content,
            "finish_reason": finish.reason,
            "usage": usage(finish),
        }

    @app.websocket("/v1/stream")
    async def stream(socket: WebSocket):
        """One JSON request per message, as for /generate; replies stream as `{"type": "reasoning"|"content",
        "text"}` messages, then `{"type": "done", ...}` (or `{"type": "error", "message"}`)."""
        origin = socket.headers.get("origin")
        if not _origin_allowed(origin, socket.headers.get("host"), origins):
            await socket.close(code=1008, reason=f"origin {origin} is not allowed (serve.allowed_origins)")
            return
        try:
            service.check_key(socket.headers.get("authorization"), socket.query_params.get("api_key"))
        except ApiError as error:
            await socket.close(code=1008, reason=error.message)
            return
        await socket.accept()
        try:
            while True:
                message = await socket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") is None:
                    await socket.send_json(
                        {
                            "type": "error",
                            "status": 400,
                            "message": "send each request as JSON in a text frame",
                        }
                    )
                    continue
                await _serve_socket_request(socket, message["text"], service, GenerateRequest)
        except WebSocketDisconnect:
            return

    guarded = Guard(
        app,
        api_key=api_key,
        public_metrics=public_metrics,
        max_request_bytes=max_request_bytes,
        max_concurrent_requests=max_concurrent_requests,
    )
    return StatusRecorder(guarded, service.metrics)


def _origin_allowed(origin: str | None, host: str | None, allowed: set[str]) -> bool:
    """No Origin (not a browser), this server's own pages (the Origin's host:port is the Host connected to),
    or an origin the operator allows: a page elsewhere must not drive a user's local server."""
    if origin is None or "*" in allowed or origin in allowed:
        return True
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()


def _user_turn(body) -> tuple[list[dict], list[str]]:
    """/generate's and the WebSocket's request as a chat, and the request field each message came from."""
    system = [({"role": "system", "content": body.system}, "system")] if body.system else []
    turns = [*system, ({"role": "user", "content": body.prompt}, "prompt")]
    return [message for message, _ in turns], [field for _, field in turns]


async def _serve_socket_request(socket: WebSocket, raw: str, service: Service, GenerateRequest) -> None:
    try:
        body = GenerateRequest.model_validate(json.loads(raw))
        messages, fields = _user_turn(body)
        prompt = await service.chat_prompt(messages, body.limit(), fields)
        events = service.start(prompt, body, "/v1/stream")
    except (ValueError, RecursionError) as error:  # JSON that does not parse (too deep, too long a number)
        if isinstance(error, ValidationError):
            message, _ = describe_errors(error.errors())
            return await socket.send_json({"type": "error", "status": 400, "message": message})
        return await socket.send_json({"type": "error", "status": 400, "message": f"invalid JSON: {error}"})
    except ApiError as error:
        return await socket.send_json({"type": "error", "status": error.status, "message": error.message})
    splitter = ReasoningStream(prompt.opened)
    kinds = {REASONING: "reasoning", CONTENT: "content"}
    async for event in events:
        if isinstance(event, Failure):
            await socket.send_json({"type": "error", "status": event.status, "message": event.message})
        elif isinstance(event, Token):
            for field, text in splitter.feed(event.text):
                await socket.send_json({"type": kinds[field], "text": text})
        else:
            for field, text in splitter.finish():
                await socket.send_json({"type": kinds[field], "text": text})
            await socket.send_json({"type": "done", "finish_reason": event.reason, "usage": usage(event)})


async def _chat_chunks(events, splitter: ReasoningStream, base: dict, include_usage: bool):
    def chunk(delta: dict, finish_reason=None) -> dict:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return {"data": json.dumps({**base, "object": "chat.completion.chunk", "choices": [choice]})}

    yield chunk({"role": "assistant", "content": ""})
    async for event in events:
        if isinstance(event, Failure):
            yield {"data": json.dumps(ApiError(event.status, event.message, kind="server_error").body())}
            return
        if isinstance(event, Token):
            for field, text in splitter.feed(event.text):
                yield chunk({field: text})
        if isinstance(event, Finish):
            for field, text in splitter.finish():
                yield chunk({field: text})
            yield chunk({}, event.reason)
            if include_usage:
                yield {
                    "data": json.dumps(
                        {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage(event)}
                    )
                }
    yield {"data": "[DONE]"}


async def _completion_chunks(events, base: dict, include_usage: bool):
    def chunk(text: str, finish_reason=None) -> dict:
        choice = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}
        return {"data": json.dumps({**base, "object": "text_completion", "choices": [choice]})}

    async for event in events:
        if isinstance(event, Failure):
            yield {"data": json.dumps(ApiError(event.status, event.message, kind="server_error").body())}
            return
        if isinstance(event, Token) and event.text:
            yield chunk(event.text)
        if isinstance(event, Finish):
            yield chunk("", event.reason)
            if include_usage:
                yield {
                    "data": json.dumps(
                        {**base, "object": "text_completion", "choices": [], "usage": usage(event)}
                    )
                }
    yield {"data": "[DONE]"}
