"""The DeepSeek-R1 format, in one place: its tokens, its chat template, how a completion splits into reasoning and
answer (whole or streamed), where its final answer is, and whether it is well formed.

This module is the bottom of r1kit: it imports nothing else from r1kit, and everything that reads or writes the
R1 format imports it.

Tokens: BOS/EOS and the role markers `<｜User｜>`/`<｜Assistant｜>` are the released R1 tokenizer's strings, so
prompts render as the released template renders them. `<think>`/`</think>` are ordinary added tokens (not
special), so decoders that skip special tokens keep them. Padding has its own token `<｜▁pad▁｜>` (the
DeepSeek-V3 tokenizer's) rather than EOS, which collators would mask out of the labels.

Reasoning (DeepSeek's API convention): the text inside `<think>…</think>` is `reasoning_content`, the rest
`content`. R1-Distill models, and prompts that end in `<think>\\n` (later R1 templates), give only the closing
tag: text before a `</think>` that no `<think>` opened is reasoning too. The rules, in the order the tags appear:
1. an opening tag before any closing one: the text inside the block is reasoning, the text around it answer (an
   unclosed block, cut off mid-thought, is all reasoning and no answer);
2. else a closing tag: the text before it is reasoning, the text after it answer;
3. else no reasoning (None), all answer.
Whitespace around each part is dropped. `ReasoningStream` gives the same parts for a completion that arrives in
pieces, however it is cut.

Answers: the last `\\boxed{...}` (braces matched), GSM8K's `#### 42`, "the answer is ...", then the last number,
looked for after the reasoning only.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
SPECIAL_TOKENS = [BOS, EOS, PAD, USER, ASSISTANT]
REASONING_TOKENS = [THINK_OPEN, THINK_CLOSE]


# ------------------------------------------------------------------------------------------- chat template


def chat_template() -> str:
    """r1kit's DeepSeek-R1 chat template (templates/r1_chat.jinja, shipped in the package)."""
    return resources.files("r1kit").joinpath("templates/r1_chat.jinja").read_text(encoding="utf-8")


class NoChatTemplate(ValueError):
    """The tokenizer has no chat template, so chats cannot be rendered (plain-text prompts still can)."""


def render_chat(tokenizer: Any, messages: list[dict]) -> tuple[list[int], bool]:
    """(prompt token ids, whether the prompt leaves a `<think>` block open) for a chat to be answered. The text
    is rendered first and encoded without added special tokens: the template writes BOS itself. A tokenizer
    without a chat template raises NoChatTemplate."""
    if tokenizer.chat_template is None:
        raise NoChatTemplate("the tokenizer has no chat template")
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"], text.rstrip().endswith(THINK_OPEN)


# ------------------------------------------------------------------------------------------------ reasoning


def split_reasoning(text: str) -> tuple[str | None, str]:
    """(reasoning, answer) by the rules in the module docstring; reasoning is None when the text has no tag."""
    opening, closing = text.find(THINK_OPEN), text.find(THINK_CLOSE)
    if opening >= 0 and (closing < 0 or opening < closing):
        head, rest = text[:opening], text[opening + len(THINK_OPEN) :]
        reasoning, close_tag, answer = rest.partition(THINK_CLOSE)
        return reasoning.strip(), (head + answer if close_tag else head).strip()
    if closing >= 0:
        return text[:closing].strip(), text[closing + len(THINK_CLOSE) :].strip()
    return None, text.strip()


REASONING, CONTENT = "reasoning_content", "content"


class ReasoningStream:
    """Splits a completion that arrives piece by piece into reasoning and answer deltas, as the DeepSeek API
    streams them (`delta.reasoning_content`, then `delta.content`); the joined deltas equal `split_reasoning` of
    the whole text, and all reasoning comes before any answer.

    `opened`: the prompt already ends with `<think>`, so the output starts as reasoning (the whole text it
    matches is then `<think>` + the output).

    Text that starts without an opening tag is held back until a tag decides what it is (a `</think>` makes it
    reasoning; a `<think>` makes it answer text around a reasoning block) or the completion ends (answer). Output
    that opens with `<think>`, as r1kit's models' does, streams at once; tags split across pieces are held back
    until they can be told apart from text."""

    def __init__(self, opened: bool = False):
        self.state = "reasoning" if opened else "undecided"
        self.saw_think = opened
        self._buffer = ""
        self._head = ""  # answer text written before the reasoning block, sent once the block is over
        self._began = False  # the current part has sent non-whitespace text

    def feed(self, text: str) -> list[tuple[str, str]]:
        self._buffer += text
        deltas: list[tuple[str, str]] = []
        if self.state == "undecided":
            opening, closing = self._buffer.find(THINK_OPEN), self._buffer.find(THINK_CLOSE)
            if opening >= 0 and (closing < 0 or opening < closing):
                self._head, self._buffer = self._buffer[:opening], self._buffer[opening + len(THINK_OPEN) :]
                self.state, self.saw_think = "reasoning", True
            elif closing >= 0:
                self.state, self.saw_think = "reasoning", True
            else:
                return deltas  # nothing decides yet
        if self.state == "reasoning":
            if THINK_CLOSE in self._buffer:
                before, _, after = self._buffer.partition(THINK_CLOSE)
                self._emit(REASONING, before.rstrip(), deltas)
                self.state, self._buffer, self._began = "answer", self._head + after, False
                self._head = ""
            else:
                hold = _partial_suffix(self._buffer, THINK_CLOSE)
                sendable = self._buffer[: len(self._buffer) - hold].rstrip()  # trailing whitespace waits
                self._emit(REASONING, sendable, deltas)
                self._buffer = self._buffer[len(sendable) :]
                return deltas
        sendable = self._buffer.rstrip()  # trailing whitespace waits: it is dropped if the answer ends here
        self._emit(CONTENT, sendable, deltas)
        self._buffer = self._buffer[len(sendable) :]
        return deltas

    def finish(self) -> list[tuple[str, str]]:
        """The rest, once the completion has ended (an unclosed think block is all reasoning)."""
        deltas: list[tuple[str, str]] = []
        rest, self._buffer = self._buffer.strip(), ""
        if self.state == "reasoning":
            self._emit(REASONING, rest, deltas)
            self._began, rest = False, self._head.strip()
        self._emit(CONTENT, rest, deltas)
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


# ------------------------------------------------------------------------------------------------- answers

NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:)\s*:?\s*(.+)", re.IGNORECASE)
_GSM8K_CALCULATOR = re.compile(r"<<[^<>]*>>")


def last_boxed(text: str) -> str | None:
    """Contents of the last `\\boxed{...}` (or `\\fbox{...}`), nested braces included."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for i in range(brace, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[brace + 1 : i].strip()
    return None


def clean_number(text: str) -> str:
    """`$1,234.50.` -> `1234.50`: currency, thousands separators and trailing punctuation removed."""
    return text.replace("$", "").replace(",", "").strip().rstrip(".")


def clean_latex(answer: str) -> str:
    """LaTeX spacing and currency that carry no value: `\\$32,\\!348` -> `32,348`."""
    for mark in ("\\$", "\\!", "\\,", "\\;", "\\ "):
        answer = answer.replace(mark, "")
    return answer.strip()


def extract_answer(text: str) -> str | None:
    """The final answer a solution or a model output gives, or None when it gives none. Text before a
    `</think>` is reasoning and is skipped (an answer is what follows the thinking)."""
    if THINK_CLOSE in text:
        text = text.rsplit(THINK_CLOSE, 1)[1]
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    if "####" in text:
        tail = text.rsplit("####", 1)[1].strip()
        return clean_number(tail.splitlines()[0]) if tail else None
    matches = list(_ANSWER_IS.finditer(text))
    if matches:
        tail = matches[-1].group(1).strip()
        numbers = NUMBER.findall(tail.split("\n")[0])
        return clean_number(numbers[0]) if numbers else tail.split("\n")[0].rstrip(".").strip() or None
    numbers = NUMBER.findall(text)
    return clean_number(numbers[-1]) if numbers else None


def split_gsm8k(answer: str) -> tuple[str, str] | None:
    """(worked solution without calculator notes, final answer) of a GSM8K answer, or None without `####`."""
    if "####" not in answer:
        return None
    solution, _, final = answer.rpartition("####")
    return _GSM8K_CALCULATOR.sub("", solution).strip(), final.strip()


# -------------------------------------------------------------------------------------------------- format

_FORMAT = re.compile(
    rf"^\s*(?:{re.escape(THINK_OPEN)})?(?:(?!{re.escape(THINK_OPEN)}).)*?{re.escape(THINK_CLOSE)}\s*\S",
    re.DOTALL,
)


def is_well_formed(text: str) -> bool:
    """Whether a completion is one `<think>...</think>` block, at its start, followed by a non-empty answer."""
    return (
        text.lstrip().startswith(THINK_OPEN)
        and text.count(THINK_OPEN) == 1
        and text.count(THINK_CLOSE) == 1
        and bool(_FORMAT.match(text))
    )
