"""math: GSM8K- and MATH-style problems, whose answers are numbers or expressions checked for mathematical
equality by `math-verify` (sympy under the hood: `\\frac{1}{2}` = `0.5` = `1/2`, `\\sqrt{2}/2` =
`\\frac{\\sqrt2}{2}`, sets and intervals). The task of any problem whose record names no task r1kit knows.

Problems come from files: GSM8K and MATH-500 (the reference data), or any `data clean` folder. The prompt is the
question followed by the recipe's instruction (`eval.instruction`). A gold answer that cannot be parsed never
scores: the verifier returns None, which callers count.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from r1kit.r1format import NUMBER, clean_latex, clean_number, extract_answer
from r1kit.tasks.task import Problem, Task


def _timeout() -> int | None:
    """math-verify times out with SIGALRM, which only the main thread can set; elsewhere run untimed."""
    return 5 if threading.current_thread() is threading.main_thread() else None


@functools.lru_cache(maxsize=4096)
def _parse(answer: str) -> tuple[Any, ...]:
    """math-verify's parse: the extracted expressions (sympy, then the matched text); empty when none. Cached:
    a GRPO group checks its gold answer once per completion, and most completions give the same few answers
    (sympy expressions are immutable, so sharing them is safe)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    answer = clean_latex(answer)
    if NUMBER.fullmatch(answer):
        answer = clean_number(answer)
    config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    return tuple(
        parse(
            f"${answer}$" if "$" not in answer else answer,
            extraction_config=config,
            parsing_timeout=_timeout(),
        )
    )


def gold_parses(gold: str) -> bool:
    """math-verify returns [value, text] when it parsed a gold answer, [text] alone when it could not."""
    return len(_parse(gold)) >= 2


def answers_match(predicted: str | None, gold: str) -> bool | None:
    """Whether `predicted` (an extracted answer) equals `gold` mathematically; None when the gold cannot be
    parsed, False when there is no prediction."""
    from math_verify import verify as math_verify

    gold_parsed = _parse(gold)
    if len(gold_parsed) < 2:
        return None
    if predicted is None:
        return False
    if clean_number(clean_latex(predicted)) == clean_number(clean_latex(gold)):
        return True
    predicted_parsed = _parse(predicted)
    return len(predicted_parsed) >= 2 and math_verify(
        list(gold_parsed), list(predicted_parsed), timeout_seconds=_timeout()
    )


def verify(output: str, problem: Problem) -> bool | None:
    return answers_match(extract_answer(output), problem.gold)


TASK = Task("math", verify)
