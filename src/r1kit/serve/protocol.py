"""The request shapes the server accepts: OpenAI's chat and completions APIs, and r1kit's `/generate`.

Validation happens here, before a request reaches the engine: a field of the wrong type, out of range, or
unknown (when the server is strict) is a 400 that names it. OpenAI fields the server does not implement are
accepted at their neutral value (`n: 1`, penalties 0, no logprobs) and refused otherwise, never ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

DEFAULT_TEMPERATURE, DEFAULT_TOP_P = 0.6, 0.95
"""DeepSeek's recommendation for R1 models (lower temperatures make them repeat themselves)."""
MIN_TEMPERATURE = 0.01
"""Below this (and above 0, which is greedy) logits divided by the temperature overflow to infinities."""
MAX_STOPS, MAX_STOP_CHARS = 4, 256
SEED_RANGE = (-(2**63), 2**64 - 1)
"""What a random generator takes (torch's range); vLLM takes the same."""


def _encodable(text: str) -> str:
    """Text that UTF-8 can encode: JSON's `\\ud800` escapes decode to lone surrogates, which cannot be."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"holds a lone surrogate ({error.object[error.start]!r}), which is not text"
        ) from None
    return text


Text = Annotated[str, AfterValidator(_encodable)]


def _temperature(value: float) -> float:
    if 0 < value < MIN_TEMPERATURE:
        raise ValueError(f"temperature is 0 (greedy) or at least {MIN_TEMPERATURE}")
    return value


Temperature = Annotated[float, Field(ge=0.0, le=2.0), AfterValidator(_temperature)]
TopP = Annotated[float, Field(gt=0.0, le=1.0)]
Seed = Annotated[int, Field(ge=SEED_RANGE[0], le=SEED_RANGE[1])]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error the server sends, in OpenAI's shape."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict] = {
    "4XX": {"model": ErrorResponse, "description": "The request cannot be served as sent"},
    "5XX": {
        "model": ErrorResponse,
        "description": "Full, shutting down, past the deadline, or generation failed",
    },
}
"""The routes' documented errors (in place of FastAPI's 422: validation errors are 400s here)."""


STREAMED = {200: {"content": {"application/json": {}, "text/event-stream": {}}}}
"""A route that answers with one JSON body, or with server-sent events when the request says `stream`."""


def request_models(strict: bool, model_name: str | None = None):
    """The request classes, rejecting (strict) or ignoring unknown fields. With `model_name`, the published
    schema names the one model served (another name is still a 404, as OpenAI answers)."""
    base = Strict if strict else Lenient
    served = {"enum": [model_name]} if model_name else None

    class TextPart(base):
        type: Literal["text"]
        text: Text

    class Message(base):
        role: Literal["system", "developer", "user", "assistant"]
        content: Text | list[TextPart] | None = None
        name: Text | None = None
        reasoning_content: Text | None = None
        """Earlier reasoning of an assistant turn; R1's template drops it from the prompt."""

        def text(self) -> str:
            if isinstance(self.content, list):
                return "".join(part.text for part in self.content)
            return self.content or ""

    class StreamOptions(base):
        include_usage: bool = False

    class Sampling(base):
        model: str = Field(json_schema_extra=served)
        max_tokens: int | None = Field(None, ge=1)
        temperature: Temperature = DEFAULT_TEMPERATURE
        top_p: TopP = DEFAULT_TOP_P
        stream: bool = False
        stream_options: StreamOptions | None = None
        stop: Text | list[Text] | None = None
        seed: Seed | None = None
        user: Text | None = None
        n: Literal[1] = 1
        presence_penalty: Literal[0, 0.0] = 0.0
        frequency_penalty: Literal[0, 0.0] = 0.0
        logprobs: Literal[False, None] = None

        @field_validator("stop")
        @classmethod
        def _stops(cls, value):
            stops = [value] if isinstance(value, str) else value or []
            if len(stops) > MAX_STOPS or any(not s or len(s) > MAX_STOP_CHARS for s in stops):
                raise ValueError(
                    f"stop takes up to {MAX_STOPS} non-empty strings of at most {MAX_STOP_CHARS} characters"
                )
            return stops

    class ChatRequest(Sampling):
        messages: list[Message] = Field(min_length=1)
        max_completion_tokens: int | None = Field(None, ge=1)

        def limit(self) -> int | None:
            return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    class CompletionRequest(Sampling):
        prompt: Text | list[Text]
        echo: Literal[False] = False

        @field_validator("prompt")
        @classmethod
        def _one_prompt(cls, value):
            if isinstance(value, list):
                if len(value) != 1:
                    raise ValueError("this server takes one prompt per request")
                return value[0]
            return value

        def limit(self) -> int | None:
            return self.max_tokens

    class GenerateRequest(base):
        prompt: Text = Field(min_length=1)
        """A user message; the model's chat template wraps it."""
        max_new_tokens: int | None = Field(None, ge=1)
        temperature: Temperature = DEFAULT_TEMPERATURE
        top_p: TopP = DEFAULT_TOP_P
        seed: Seed | None = None
        system: Text | None = None

        def limit(self) -> int | None:
            return self.max_new_tokens

    return ChatRequest, CompletionRequest, GenerateRequest


def describe_errors(errors: list[dict]) -> tuple[str, str | None]:
    """One message for pydantic's validation errors, and the first offending field (OpenAI's `param`).

    A field that takes one of several types (`content`: a string or a list of parts) fails once per type; the
    type-mismatch errors are dropped when another error says what is wrong with the value itself."""
    described = []
    for error in errors:
        if error.get("type") == "json_invalid":  # its location is a character offset, not a field
            described.append(("", "", f"invalid JSON: {error.get('ctx', {}).get('error', error.get('msg'))}"))
            continue
        field = ".".join(
            str(p) for p in error.get("loc", ()) if p != "body" and not _UNION_MEMBER.search(str(p))
        )
        described.append((field, error.get("type", ""), error.get("msg", "")))
    specific = [(f, t) for f, t, _ in described if not t.endswith("_type")]
    parts, param = [], None
    for field, kind, message in described:
        if kind.endswith("_type") and any(
            f.startswith(field) and (f, t) != (field, kind) for f, t in specific
        ):
            continue
        param = param or field or None
        if kind == "extra_forbidden":
            parts.append(f"{field}: unknown field")
        else:
            parts.append(f"{field}: {message}" if field else str(message))
    return "; ".join(dict.fromkeys(parts)), param


_UNION_MEMBER = re.compile(r"\[|^(str|int|float|bool|list|dict|none)$")
