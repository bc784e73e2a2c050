"""Chats in, completions out, through an engine: what every caller that decodes does (eval, validation during
training, rejection sampling, `r1kit generate`, export's speed check). Each chat is rendered with the R1 template,
submitted as one request with its own seed (so a chat's completion does not depend on what else is in the
batch), and its text is split into reasoning and answer as it streams; timings are kept for speed reports.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from r1kit.engine.batching import Failure, Finish, GenerationRequest, Token
from r1kit.r1format import CONTENT, REASONING, ReasoningStream, render_chat


@dataclass(frozen=True)
class Settings:
    temperature: float
    """0 decodes greedily."""
    top_p: float
    max_new_tokens: int
    seed: int


@dataclass
class Sample:
    reasoning: str | None
    answer: str
    """The response after the reasoning (what answers are extracted from)."""
    num_tokens: int
    seconds: float
    """Request to last token."""
    ttft: float | None
    """Request to first token."""
    itl: float | None
    """Mean time between tokens after the first."""
    finish_reason: str
    text: str = ""
    """The decoded completion as the model wrote it (special tokens removed, `<think>` tags kept); empty for
    endpoints that send reasoning apart."""
    num_prompt_tokens: int = 0


def sample_from_deltas(
    deltas: list[tuple[str, str]],
    saw_think: bool,
    token_times: list[float],
    sent: float,
    num_tokens: int,
    finish_reason: str,
) -> Sample:
    """A `Sample` from a split stream's deltas and the arrival times of its tokens (sent: when it was asked)."""
    reasoning = "".join(t for f, t in deltas if f == REASONING) if saw_think else None
    answer = "".join(t for f, t in deltas if f == CONTENT)
    ttft = token_times[0] - sent if token_times else None
    itl = (token_times[-1] - token_times[0]) / (len(token_times) - 1) if len(token_times) > 1 else None
    end = token_times[-1] if token_times else time.perf_counter()
    return Sample(reasoning, answer, num_tokens, end - sent, ttft, itl, finish_reason)


def sample_seed(base: int, problem: int, sample: int) -> int:
    """The seed of one sample of one problem, from a run's seed: every caller that draws several samples of
    several problems (eval, validation during training, rejection sampling) derives them alike."""
    return (base * 1_000_003 + problem * 1_009 + sample) % 2**63


class PromptTooLong(ValueError):
    """A prompt leaves no room for a single new token in the model's context."""


def complete_chats(
    engine,
    tokenizer,
    chats: list[list[dict]],
    settings: Settings,
    seeds: list[int],
    *,
    ignore_eos: bool = False,
) -> list[Sample]:
    """One sample per chat, in order, all submitted to `engine` at once (it batches them). Raises
    PromptTooLong before submitting anything, and RuntimeError when the engine fails a request."""
    prompts = [render_chat(tokenizer, messages) for messages in chats]
    budgets = []
    for ids, _ in prompts:
        budget = settings.max_new_tokens
        if engine.context_length is not None:
            budget = min(budget, engine.context_length - len(ids))
        if budget < 1:
            raise PromptTooLong(f"a prompt of {len(ids)} tokens leaves no room in the model's context")
        budgets.append(budget)
    results: list[Sample | None] = [None] * len(chats)
    done = threading.Semaphore(0)
    errors: list[str] = []

    def submit(index: int, ids: list[int], opened: bool, budget: int, seed: int) -> None:
        stream, deltas, token_times, texts = ReasoningStream(opened), [], [], []
        sent = time.perf_counter()

        def sink(event) -> None:
            if isinstance(event, Token):
                token_times.append(time.perf_counter())
                texts.append(event.text)
                deltas.extend(stream.feed(event.text))
            elif isinstance(event, Finish):
                deltas.extend(stream.finish())
                sample = sample_from_deltas(
                    deltas, stream.saw_think, token_times, sent, event.num_completion_tokens, event.reason
                )
                sample.text, sample.num_prompt_tokens = "".join(texts), len(ids)
                results[index] = sample
                done.release()
            elif isinstance(event, Failure):
                errors.append(event.message)
                done.release()

        engine.submit(
            GenerationRequest(
                ids,
                budget,
                temperature=settings.temperature,
                top_p=settings.top_p,
                seed=seed,
                sink=sink,
                ignore_eos=ignore_eos,
            )
        )

    for index, ((ids, opened), budget, seed) in enumerate(zip(prompts, budgets, seeds)):
        submit(index, ids, opened, budget, seed)
    for _ in chats:
        done.acquire()
    if errors:
        raise RuntimeError(errors[0])
    return [sample for sample in results if sample is not None]


def decode_chats(
    model,
    tokenizer,
    chats: list[list[dict]],
    settings: Settings,
    seeds: list[int],
    *,
    max_batch_size: int = 16,
    ignore_eos: bool = False,
) -> list[Sample]:
    """`complete_chats` on an engine of its own over `model` (left in eval mode), shut down afterwards."""
    from r1kit.engine.batching import TransformersEngine

    engine = TransformersEngine(
        model, tokenizer, max_batch_size=max_batch_size, max_queue_size=len(chats) + 1
    )
    try:
        return complete_chats(engine, tokenizer, chats, settings, seeds, ignore_eos=ignore_eos)
    finally:
        engine.shutdown()
