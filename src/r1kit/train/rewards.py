"""Verifiable rewards for GRPO: pure functions `(prompts, completions, **columns) -> list[float]`, chosen by name
with weights in the recipe (`grpo.rewards: {accuracy: 1.0}`), or by import path (`my_pkg.rewards:score`).

TRL calls each with the batch's prompts and completions (strings, or message lists for chat data), the
dataset's other columns by name (`answer`), `completion_ids`, and `log_metric` for extra figures. Every
function here accepts and ignores what it does not use.

- accuracy: 1 when the completion solves the problem by its task's verifier (tasks/: the record's `task`, kept
  in its `meta`, names it; countdown checks the expression itself, arithmetic wants the integer, math answers
  are compared with the gold `answer` by math-verify); a gold that cannot be checked gives 0, is counted and
  logged as `rewards/unparseable_golds`, never 1.
- format: 1 when the completion is one `<think>...</think>` block followed by a non-empty answer.
- tag_count: 0.5 for exactly one `<think>` and 0.5 for exactly one `</think>` (partial credit while the
  format is being learned).
- length: DAPO's soft overlong punishment: 0 up to `max_length - buffer` tokens, then falling linearly to -1
  at `max_length` (completions cut at the limit get -1).
- repetition: minus the share of repeated word 3-grams (0 for none, towards -1 for a loop).
- steps: the share of the reference solution's reasoning lines (the dataset's worked `<think>` steps, passed as
  `reasoning`) that the completion's think block reproduces, line for line and in order, over the longer of
  the two; 0 without a reference. Credit for each right step, for tasks with one canonical worked solution
  (the built-in arithmetic ones): groups whose answers are all wrong still learn which steps went wrong.
- random: the spurious-reward control. The batch gets as many 1s as `accuracy` would pay it, on completions
  drawn at random (seeded by the batch's text): the same mean reward, no information about which completion is
  right. GRPO with it measures what RL moves without a real signal.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from r1kit.errors import UserError
from r1kit.r1format import THINK_CLOSE, THINK_OPEN, is_well_formed, split_reasoning
from r1kit.tasks import GoldProblems, Problem, check, meta_of

RewardFunction = Callable[..., list[float]]
"""`(prompts, completions, **columns) -> one reward per completion`; TRL passes the dataset's other columns
(e.g. `answer`) and `completion_ids` as keywords."""
Completion = str | list[dict[str, Any]]
"""A completion as TRL passes it: text, or chat messages `[{"role": "assistant", "content": ...}]`."""


def completion_text(completion: Completion) -> str:
    """A completion as text: TRL passes chat completions as `[{"role": "assistant", "content": ...}]`."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content") or "" for m in completion)


def accuracy(
    prompts: Sequence[Any],
    completions: Sequence[Completion],
    answer: Sequence[str],
    task: Sequence[str | None] | None = None,
    meta: Sequence[str | None] | None = None,
    log_metric: Callable[[str, float], None] | None = None,
    **_: Any,
) -> list[float]:
    """`task` and `meta`: the dataset's columns (the task's name and the record's other fields, as JSON)."""
    problems = GoldProblems()
    tasks = task if task is not None else [None] * len(completions)
    metas = meta if meta is not None else [None] * len(completions)
    rewards = [
        float(check(completion_text(c), Problem("", [], gold, task=name or None, meta=meta_of(m)), problems))
        for c, gold, name, m in zip(completions, answer, tasks, metas)
    ]
    if log_metric is not None:
        log_metric("rewards/unparseable_golds", float(problems.count))
    if problems.count:
        import warnings

        warnings.warn(
            f"{problems.count} gold answers could not be parsed and scored 0, e.g. {problems.examples[0]!r}",
            stacklevel=2,
        )
    return rewards


def format(prompts: Sequence[Any], completions: Sequence[Completion], **_: Any) -> list[float]:
    return [float(is_well_formed(completion_text(c))) for c in completions]


def tag_count(prompts: Sequence[Any], completions: Sequence[Completion], **_: Any) -> list[float]:
    return [
        0.5 * (completion_text(c).count(THINK_OPEN) == 1) + 0.5 * (completion_text(c).count(THINK_CLOSE) == 1)
        for c in completions
    ]


def length(
    prompts: Sequence[Any],
    completions: Sequence[Completion],
    completion_ids: Sequence[Sequence[int]] | None = None,
    *,
    max_length: int = 1024,
    buffer: int | None = None,
    **_: Any,
) -> list[float]:
    """`max_length` is the rollouts' max_completion_length (the recipe sets it); `buffer` defaults to a quarter."""
    buffer = buffer if buffer is not None else max(1, max_length // 4)
    sizes = (
        [len(ids) for ids in completion_ids]
        if completion_ids is not None
        else [len(completion_text(c).split()) for c in completions]
    )
    return [0.0 if n <= max_length - buffer else max(-1.0, (max_length - buffer - n) / buffer) for n in sizes]


def repetition(
    prompts: Sequence[Any], completions: Sequence[Completion], *, ngram: int = 3, **_: Any
) -> list[float]:
    rewards = []
    for c in completions:
        words = completion_text(c).lower().split()
        grams = [tuple(words[i : i + ngram]) for i in range(len(words) - ngram + 1)]
        rewards.append(-(1.0 - len(set(grams)) / len(grams)) if grams else 0.0)
    return rewards


def _lines(text: str | None) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def steps(
    prompts: Sequence[Any],
    completions: Sequence[Completion],
    reasoning: Sequence[str | None] | None = None,
    **_: Any,
) -> list[float]:
    references = reasoning if reasoning is not None else [None] * len(completions)
    rewards = []
    for c, reference in zip(completions, references):
        gold = _lines(reference)
        got = _lines(split_reasoning(completion_text(c))[0])
        right = sum(a == b for a, b in zip(gold, got))
        rewards.append(right / max(len(gold), len(got)) if gold else 0.0)
    return rewards


def coin_flip(prompts: Sequence[Any], completions: Sequence[Completion], **columns: Any) -> list[float]:
    """The `random` reward (see the module's docstring)."""
    import random

    import xxhash

    real = accuracy(prompts, completions, **columns)
    if columns.get("log_metric") is not None:  # what the policy really achieves, which this reward hides
        columns["log_metric"]("rewards/random/true_accuracy", sum(real) / max(len(real), 1))
    paid = round(sum(real))
    seed = xxhash.xxh64_intdigest("\0".join(completion_text(c) for c in completions))
    winners = set(random.Random(seed).sample(range(len(completions)), paid))
    return [float(i in winners) for i in range(len(completions))]


BUILT_IN: dict[str, RewardFunction] = {
    "accuracy": accuracy,
    "random": coin_flip,
    "format": format,
    "tag_count": tag_count,
    "length": length,
    "repetition": repetition,
    "steps": steps,
}


def resolve(name: str, *, max_completion_length: int) -> RewardFunction:
    """The reward function called `name`: a built-in, or `module.path:function` (imported, so it runs in this
    process: only name code you trust)."""
    if name in BUILT_IN:
        function = BUILT_IN[name]
        if function is length:

            def length_reward(
                prompts: Sequence[Any],
                completions: Sequence[Completion],
                completion_ids: Sequence[Sequence[int]] | None = None,
                **kwargs: Any,
            ) -> list[float]:
                return length(
                    prompts, completions, completion_ids, max_length=max_completion_length, **kwargs
                )

            length_reward.__name__ = "length"
            return length_reward
        return function
    module_name, _, attribute = name.partition(":")
    if not attribute:
        raise UserError(
            f"grpo.rewards: unknown reward {name!r}; built-in: {', '.join(BUILT_IN)}, "
            "or give an import path as module:function"
        )
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise UserError(f"grpo.rewards: cannot import {name!r}: {error}") from None
    if not callable(function):
        raise UserError(f"grpo.rewards: {name!r} is not a function")
    return function
