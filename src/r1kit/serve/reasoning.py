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


REASONING, CONTENT = "reasoning_content", "content"


class ReasoningStream:
    """Splits a completion that arrives piece by piece into reasoning and answer deltas, as the DeepSeek API
    streams them (`delta.reasoning_content`, then `delta.content`).

    `opened`: the prompt already ends with `<think>` (later R1 templates), so the output starts as reasoning.
    Tags split across pieces are held back until they can be told apart from text, and whitespace around the
    reasoning and the answer is dropped, so that the joined deltas of a text that starts with its think block
    equal `split_reasoning` of the whole text."""

    def __init__(self, opened: bool = False):
        self.state = "reasoning" if opened else "start"
        self.saw_think = opened
        self._buffer = ""
        self._began = False  # the current part has sent non-whitespace text

    def feed(self, text: str) -> list[tuple[str, str]]:
        self._buffer += text
        deltas: list[tuple[str, str]] = []
        while True:
            if self.state == "start":
                head = self._buffer.lstrip()
                if not head or (THINK_OPEN.startswith(head) and head != THINK_OPEN):
                    return deltas  # nothing yet, or a think tag still arriving
                if head.startswith(THINK_OPEN):
                    self.state, self.saw_think, self._buffer = "reasoning", True, head[len(THINK_OPEN) :]
                else:
                    self.state, self._buffer = "answer", head
                continue
            if self.state == "reasoning" and THINK_CLOSE in self._buffer:
                before, _, after = self._buffer.partition(THINK_CLOSE)
                self._emit(REASONING, before.rstrip(), deltas)
                self.state, self._buffer, self._began = "answer", after, False
                continue
            hold = _partial_suffix(self._buffer, THINK_CLOSE) if self.state == "reasoning" else 0
            ready = self._buffer[: len(self._buffer) - hold]
            sendable = ready.rstrip()  # trailing whitespace waits: it is dropped if the part ends here
            self._emit(REASONING if self.state == "reasoning" else CONTENT, sendable, deltas)
            self._buffer = self._buffer[len(sendable) :]
            return deltas

    def finish(self) -> list[tuple[str, str]]:
        """The rest, once the completion has ended (an unclosed think block is all reasoning)."""
        deltas: list[tuple[str, str]] = []
        rest, self._buffer = self._buffer.strip(), ""
        self._emit(REASONING if self.state == "reasoning" else CONTENT, rest, deltas)
        return deltas

    def _emit(self, field: str, text: str, deltas: list[tuple[str, str]]) -> None:
        if not self._began:
            text = text.lstrip()
        if text:
            self._began = True
            deltas.append((field, text))


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is the start of `tag` (a tag that may still be arriving)."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0
