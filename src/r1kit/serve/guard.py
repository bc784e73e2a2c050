"""What an HTTP request must pass before the API does any work for it: ASGI middleware in front of the app.

In order, each refusal a JSON error in OpenAI's shape:
1. the API key, from the headers alone, before a byte of the body is read (401), on every route but the public
   ones (`/`, `/health`, `/ready`, and `/metrics` when `serve.public_metrics` is set);
2. the number of requests being served at once (503 with `Retry-After`), probes and metrics not counted;
3. the body's type: JSON (`application/json` or `+json`), or no Content-Type at all (read as JSON); a form
   or plain text is refused (415) rather than misread;
4. the body's size: a `Content-Length` over `serve.max_request_bytes` is refused at once, and a body sent
   without one is counted while it is read and refused as soon as it passes the limit (413). The body the app
   reads is then replayed from memory; later reads go to the connection (so a route can tell when its client
   leaves).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable

PUBLIC_PATHS = frozenset({"/", "/health", "/ready"})
UNCOUNTED_PATHS = frozenset({"/health", "/ready", "/metrics"})
RETRY_AFTER_SECONDS = 1


def error_body(message: str, *, kind: str, code: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


def key_matches(api_key: str | None, authorization: str | None, query_key: str | None = None) -> bool:
    """Whether a request carries the key (`Authorization: Bearer KEY`, or `?api_key=` for WebSockets, which
    browsers cannot give headers); always true when the server has no key."""
    if api_key is None:
        return True
    given = query_key or (authorization[7:] if authorization and authorization.startswith("Bearer ") else "")
    return hmac.compare_digest(given.encode(), api_key.encode())


MISSING_KEY = "missing or wrong API key: send the header `Authorization: Bearer <key>`"


class Guard:
    def __init__(
        self,
        app,
        *,
        api_key: str | None,
        public_metrics: bool,
        max_request_bytes: int,
        max_concurrent_requests: int,
    ):
        self.app, self.api_key = app, api_key
        self.public = PUBLIC_PATHS | ({"/metrics"} if public_metrics else set())
        self.max_request_bytes, self.max_concurrent_requests = max_request_bytes, max_concurrent_requests
        self.active = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)  # WebSockets check their key and origin themselves
        path, headers = scope["path"], _headers(scope)
        if path not in self.public and not key_matches(self.api_key, headers.get("authorization")):
            return await _refuse(send, 401, MISSING_KEY, kind="authentication_error", code="invalid_api_key")
        counted = path not in UNCOUNTED_PATHS
        if counted and self.active >= self.max_concurrent_requests:
            return await _refuse(
                send,
                503,
                f"{self.active} requests are being served, the most this server takes at once "
                "(serve.max_concurrent_requests); try again shortly",
                kind="server_error",
                retry_after=True,
            )
        self.active += counted
        try:
            await self._serve(scope, receive, send, headers)
        finally:
            self.active -= counted

    async def _serve(self, scope, receive, send, headers: dict[str, str]) -> None:
        if scope["method"] in ("POST", "PUT", "PATCH"):
            media_type = headers.get("content-type", "").split(";")[0].strip().lower()
            if not media_type:  # curl without -H, some scripts: JSON is the only body this API takes
                scope = {**scope, "headers": [*scope["headers"], (b"content-type", b"application/json")]}
            elif media_type != "application/json" and not media_type.endswith("+json"):
                return await _refuse(
                    send,
                    415,
                    f"the body is {media_type}; send JSON with `Content-Type: application/json`",
                    kind="invalid_request_error",
                )
        limit = self.max_request_bytes
        too_big = f"the request body is over {limit} bytes (serve.max_request_bytes)"
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await _refuse(send, 413, too_big, kind="invalid_request_error")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await _refuse(send, 413, too_big, kind="invalid_request_error")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: list[bytes] | None = [b"".join(chunks)]

        async def replay():
            nonlocal body
            if body is not None:
                message, body = {"type": "http.request", "body": body[0], "more_body": False}, None
                return message
            return await receive()

        await self.app(scope, replay, send)


def _headers(scope) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}


async def _refuse(
    send: Callable[[dict], Awaitable[None]],
    status: int,
    message: str,
    *,
    kind: str,
    code: str | None = None,
    retry_after: bool = False,
) -> None:
    body = error_body(message, kind=kind, code=code)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after:
        headers.append((b"retry-after", str(RETRY_AFTER_SECONDS).encode()))
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
