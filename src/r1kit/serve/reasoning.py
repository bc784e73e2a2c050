"""Splitting a reasoning model's output into its chain of thought and its answer.

DeepSeek's API convention: the text inside `<think>…</think>` is `reasoning_content`, the rest `content`.
Generation prompts that end in `<think>\n` (later R1 releases) make the model emit only the closing tag, so a
lone `</think>` also ends the reasoning.
"""

from __future__ import annotations

from r1kit.models.tokenizer import THINK_CLOSE, THINK_OPEN


def split_reasoning(text: str) -> tuple[str | None, str]:
    """Return (reasoning, answer). Reasoning is None when the text has no think block; an unclosed block
    (generation cut off mid-thought) is all reasoning and no answer."""
    head, open_tag, rest = text.partition(THINK_OPEN)
    if not open_tag:
        if THINK_CLOSE in text:
            reasoning, _, answer = text.partition(THINK_CLOSE)
            return reasoning.strip(), answer.strip()
        return None, text.strip()
    reasoning, close_tag, answer = rest.partition(THINK_CLOSE)
    if not close_tag:
        return reasoning.strip(), head.strip()
    return reasoning.strip(), (head + answer).strip()
