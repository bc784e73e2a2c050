"""The request shapes the server accepts: OpenAI's chat and completions APIs, and r1kit's `/generate`.

Validation happens here, before a request reaches the engine: a field of the wrong type, out of range, or
unknown (when the server is strict) is a 400 that names it. OpenAI fields the server does not implement are
accepted at their neutral value (`n: 1`, penalties 0, no logprobs) and refused otherwise, never ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_TEMPERATURE, DEFAULT_TOP_P = 0.6, 0.95
"""DeepSeek's recommendation for R1 models (lower temperatures make them repeat themselves)."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


def request_models(strict: bool):
    """The request classes, rejecting (strict) or ignoring unknown fields."""
    base = Strict if strict else Lenient

    class TextPart(base):
        type: Literal["text"]
        text: str

    class Message(base):
        role: Literal["system", "developer", "user", "assistant"]
        content: str | list[TextPart] | None = None
        name: str | None = None
        reasoning_content: str | None = None
        """Earlier reasoning of an assistant turn; R1's template drops it from the prompt."""

        def text(self) -> str:
            if isinstance(self.content, list):
                return "".join(part.text for part in self.content)
            return self.content or ""

    class StreamOptions(base):
        include_usage: bool = False

    class Sampling(base):
        model: str
        max_tokens: int | None = Field(None, ge=1)
        temperature: float = Field(DEFAULT_TEMPERATURE, ge=0.0, le=2.0)
        top_p: float = Field(DEFAULT_TOP_P, gt=0.0, le=1.0)
        stream: bool = False
        stream_options: StreamOptions | None = None
        stop: str | list[str] | None = None
        seed: int | None = None
        user: str | None = None
        n: Literal[1] = 1
        presence_penalty: Literal[0, 0.0] = 0.0
        frequency_penalty: Literal[0, 0.0] = 0.0
        logprobs: Literal[False, None] = None

        @field_validator("stop")
        @classmethod
        def _stops(cls, value):
            stops = [value] if isinstance(value, str) else value or []
            if len(stops) > 4 or any(not s for s in stops):
                raise ValueError("stop takes up to 4 non-empty strings")
            return stops

    class ChatRequest(Sampling):
        messages: list[Message] = Field(min_length=1)
        max_completion_tokens: int | None = Field(None, ge=1)

        def limit(self) -> int | None:
            return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    class CompletionRequest(Sampling):
        prompt: str | list[str]
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
        prompt: str = Field(min_length=1)
        """A user message; the model's chat template wraps it."""
        max_new_tokens: int | None = Field(None, ge=1)
        temperature: float = Field(DEFAULT_TEMPERATURE, ge=0.0, le=2.0)
        top_p: float = Field(DEFAULT_TOP_P, gt=0.0, le=1.0)
        seed: int | None = None
        system: str | None = None

        def limit(self) -> int | None:
            return self.max_new_tokens

    return ChatRequest, CompletionRequest, GenerateRequest


def describe_errors(errors: list[dict]) -> tuple[str, str | None]:
    """One message for pydantic's validation errors, and the first offending field (OpenAI's `param`)."""
    parts, param = [], None
    for error in errors:
        if error.get("type") == "json_invalid":  # its location is a character offset, not a field
            parts.append(f"invalid JSON: {error.get('ctx', {}).get('error', error.get('msg'))}")
            continue
        field = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        param = param or field or None
        if error.get("type") == "extra_forbidden":
            parts.append(f"{field}: unknown field")
        else:
            parts.append(f"{field}: {error.get('msg')}" if field else str(error.get("msg")))
    return "; ".join(parts), param
