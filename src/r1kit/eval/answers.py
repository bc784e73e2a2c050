"""Final answers: pull them out of solutions and model outputs, and check them against gold answers.

Extraction, in order of how explicitly a text marks its answer: the last `\\boxed{...}` (braces matched, so
`\\boxed{\\frac{1}{2}}` is whole), GSM8K's `#### 42`, "the answer is ...", then the last number. Numbers lose
thousands separators (`1,234`) and trailing units of punctuation; negatives and fractions stay.

Equivalence is `math-verify`'s (sympy under the hood: `\\frac{1}{2}` = `0.5` = `1/2`, `\\sqrt{2}/2` =
`\\frac{\\sqrt2}{2}`, sets and intervals). A gold answer that cannot be parsed never scores: the check returns
False and `GoldProblems` counts it, so a broken data set shows up as a count rather than as free points.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from r1kit.models.tokenizer import THINK_CLOSE

_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:)\s*:?\s*(.+)", re.IGNORECASE)


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
        match = matches[-1]
        tail = match.group(1).strip()
        numbers = _NUMBER.findall(tail.split("\n")[0])
        return clean_number(numbers[0]) if numbers else tail.split("\n")[0].rstrip(".").strip() or None
    numbers = _NUMBER.findall(text)
    return clean_number(numbers[-1]) if numbers else None


@dataclass
class GoldProblems:
    """Gold answers that could not be parsed, counted (and a few kept to show)."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, gold: str) -> None:
        self.count += 1
        if len(self.examples) < 5:
            self.examples.append(gold)


def _timeout() -> int | None:
    """math-verify times out with SIGALRM, which only the main thread can set; elsewhere run untimed."""
    import threading

    return 5 if threading.current_thread() is threading.main_thread() else None


@functools.lru_cache(maxsize=4096)
def _parse(answer: str) -> tuple[Any, ...]:
    """math-verify's parse: the extracted expressions (sympy, then the matched text); empty when none. Cached:
    a GRPO group checks its gold answer once per completion, and most completions give the same few answers
    (sympy expressions are immutable, so sharing them is safe)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    answer = clean_latex(answer)
    if _NUMBER.fullmatch(answer):
        answer = clean_number(answer)
    config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    return tuple(
        parse(
            f"${answer}$" if "$" not in answer else answer,
            extraction_config=config,
            parsing_timeout=_timeout(),
        )
    )


def answers_match(predicted: str | None, gold: str, problems: GoldProblems | None = None) -> bool:
    """Whether `predicted` (an extracted answer) equals `gold` mathematically; False when either is missing.
    An unparseable gold is counted in `problems` and scores False."""
    from math_verify import verify

    gold_parsed = _parse(gold)
    if (
        len(gold_parsed) < 2
    ):  # math-verify returns [value, text] when it parsed, [text] alone when it could not
        if problems is not None:
            problems.add(gold)
        return False
    if predicted is None:
        return False
    if clean_number(clean_latex(predicted)) == clean_number(clean_latex(gold)):
        return True
    predicted_parsed = _parse(predicted)
    return len(predicted_parsed) >= 2 and verify(
        list(gold_parsed), list(predicted_parsed), timeout_seconds=_timeout()
    )


def is_correct(output: str, gold: str, problems: GoldProblems | None = None) -> bool:
    """Whether a model output (or a reference solution) ends with the gold answer."""
    return answers_match(extract_answer(output), gold, problems)
