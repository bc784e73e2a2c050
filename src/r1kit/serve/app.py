"""The HTTP API: OpenAI-compatible chat and completions with DeepSeek's `reasoning_content`, `/generate`, a
WebSocket stream, health, Prometheus metrics and a chat page.

Every error is a JSON body in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`: 400 for a
request that cannot be served as sent (bad JSON, a field of the wrong type or out of range, an unknown field,
a prompt or `max_tokens` over the limits), 401 for a missing or wrong API key, 404 for an unknown model, 503
when the queue is full or the server is shutting down.
"""

import asyncio
import copy
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources

from fastapi import Depends, FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from r1kit.engine.batching import EngineOverloaded, Event, Failure, Finish, GenerationRequest, Token
from r1kit.r1format import CONTENT, REASONING, NoChatTemplate, ReasoningStream, render_chat
from r1kit.serve.metrics import ServeMetrics, StatusRecorder
from r1kit.serve.protocol import describe_errors, request_models


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


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
    ):
        self.engine, self.tokenizer = (
            engine,
            copy.deepcopy(tokenizer),
        )  # the engine's thread decodes with its own
        self.model_name, self.max_tokens_limit, self.context_length = (
            model_name,
            max_tokens_limit,
            context_length,
        )
        self.api_key = api_key
        self.metrics = ServeMetrics(engine)
        self.draining = False

    # ---- requests into prompts
    def check_key(self, authorization: str | None, query_key: str | None = None) -> None:
        if self.api_key is None:
            return
        given = query_key or (
            authorization[7:] if authorization and authorization.startswith("Bearer ") else ""
        )
        if not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise ApiError(
                401,
                "missing or wrong API key: send the header `Authorization: Bearer <key>`",
                code="invalid_api_key",
                kind="authentication_error",
            )

    def check_model(self, name: str) -> None:
        if name != self.model_name:
            raise ApiError(
                404,
                f"model {name!r} not found; this server serves {self.model_name!r}",
                param="model",
                code="model_not_found",
            )

    def chat_prompt(self, messages: list[dict], limit: int | None) -> Prompt:
        try:
            ids, opened = render_chat(self.tokenizer, messages)
        except NoChatTemplate as error:
            raise ApiError(400, f"{error}: use /v1/completions") from None
        return Prompt(ids, self.budget(len(ids), limit), opened)

    def text_prompt(self, text: str, limit: int | None) -> Prompt:
        ids = self.tokenizer(text)["input_ids"]
        return Prompt(ids, self.budget(len(ids), limit), False)

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
            raise ApiError(503, str(error), kind="server_error") from None
        return self._events(request, queue, route)

    async def _events(self, request: GenerationRequest, queue: asyncio.Queue, route: str):
        first = True
        try:
            while True:
                event = await queue.get()
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
            raise ApiError(500, event.message, kind="server_error")
        if isinstance(event, Token):
            for field, text in splitter.feed(event.text) if splitter else [(CONTENT, event.text)]:
                parts[field].append(text)
        if isinstance(event, Finish):
            for field, text in splitter.finish() if splitter else []:
                parts[field].append(text)
            reasoning = "".join(parts[REASONING]) if splitter and splitter.saw_think else None
            return reasoning, "".join(parts[CONTENT]), event


def create_app(
    engine,
    tokenizer,
    *,
    model_name: str,
    max_tokens_limit: int = 4096,
    context_length: int | None = None,
    api_key: str | None = None,
    strict: bool = True,
) -> FastAPI:
    service = Service(
        engine,
        tokenizer,
        model_name=model_name,
        max_tokens_limit=max_tokens_limit,
        context_length=context_length,
        api_key=api_key,
    )
    ChatRequest, CompletionRequest, GenerateRequest = request_models(strict)

    async def lifespan(app):
        yield
        service.draining = True  # uvicorn has let in-flight requests finish; stop the engine's thread
        await asyncio.to_thread(engine.shutdown)

    app = FastAPI(title="r1kit", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        message, param = describe_errors(error.errors())
        return JSONResponse(ApiError(400, message, param=param).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        return JSONResponse(
            ApiError(error.status_code, str(error.detail)).body(), status_code=error.status_code
        )

    def authorize(request: Request) -> None:  # a dependency: runs before the body is read and validated
        service.check_key(request.headers.get("authorization"))

    guarded = [Depends(authorize)]

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return resources.files("r1kit.serve").joinpath("chat.html").read_text(encoding="utf-8")

    @app.get("/health")
    async def health():
        status = 503 if service.draining else 200
        return JSONResponse(
            {"status": "draining" if service.draining else "ok", "model": model_name, "engine": engine.name},
            status_code=status,
        )

    @app.get("/metrics")
    async def metrics():
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", dependencies=guarded)
    async def models(request: Request):
        return {
            "object": "list",
            "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "r1kit"}],
        }

    @app.post("/v1/chat/completions", dependencies=guarded)
    async def chat_completions(request: Request, body: ChatRequest):
        service.check_model(body.model)
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in body.messages
        ]
        prompt = service.chat_prompt(messages, body.limit())
        events = service.start(prompt, body, "/v1/chat/completions")
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model_name}
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return EventSourceResponse(
                _chat_chunks(events, ReasoningStream(prompt.opened), base, include_usage)
            )
        reasoning, content, finish = await collect(events, ReasoningStream(prompt.opened))
        message = {"role": "assistant", "content": content, "reasoning_content": reasoning}
        return {
            **base,
            "object": "chat.completion",
            "usage": usage(finish),
            "choices": [{"index": 0, "message": message, "finish_reason": finish.reason, "logprobs": None}],
        }

    @app.post("/v1/completions", dependencies=guarded)
    async def completions(request: Request, body: CompletionRequest):
        service.check_model(body.model)
        prompt = service.text_prompt(body.prompt, body.limit())
        events = service.start(prompt, body, "/v1/completions")
        base = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model_name}
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return EventSourceResponse(_completion_chunks(events, base, include_usage))
        _, text, finish = await collect(events, None)
        return {
            **base,
            "object": "text_completion",
            "usage": usage(finish),
            "choices": [{"index": 0, "text": text, "finish_reason": finish.reason, "logprobs": None}],
        }

    @app.post("/generate", dependencies=guarded)
    async def generate(request: Request, body: GenerateRequest):
        """The simple API: a prompt in, the reasoning and the answer out."""
        prompt = service.chat_prompt(_user_turn(body), body.limit())
        reasoning, content, finish = await collect(
            service.start(prompt, body, "/generate"), ReasoningStream(prompt.opened)
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
        try:
            service.check_key(socket.headers.get("authorization"), socket.query_params.get("api_key"))
        except ApiError as error:
            await socket.close(code=1008, reason=error.message)
            return
        await socket.accept()
        try:
            while True:
                await _serve_socket_request(socket, await socket.receive_text(), service, GenerateRequest)
        except WebSocketDisconnect:
            return

    return StatusRecorder(app, service.metrics)


def _user_turn(body) -> list[dict]:
    return ([{"role": "system", "content": body.system}] if body.system else []) + [
        {"role": "user", "content": body.prompt}
    ]


async def _serve_socket_request(socket: WebSocket, raw: str, service: Service, GenerateRequest) -> None:
    try:
        body = GenerateRequest.model_validate(json.loads(raw))
        prompt = service.chat_prompt(_user_turn(body), body.limit())
        events = service.start(prompt, body, "/v1/stream")
    except json.JSONDecodeError as error:
        return await socket.send_json({"type": "error", "status": 400, "message": f"invalid JSON: {error}"})
    except ValidationError as error:
        message, _ = describe_errors(error.errors())
        return await socket.send_json({"type": "error", "status": 400, "message": message})
    except ApiError as error:
        return await socket.send_json({"type": "error", "status": error.status, "message": error.message})
    splitter = ReasoningStream(prompt.opened)
    kinds = {REASONING: "reasoning", CONTENT: "content"}
    async for event in events:
        if isinstance(event, Failure):
            await socket.send_json({"type": "error", "status": 500, "message": event.message})
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
            yield {"data": json.dumps(ApiError(500, event.message, kind="server_error").body())}
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
            yield {"data": json.dumps(ApiError(500, event.message, kind="server_error").body())}
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
