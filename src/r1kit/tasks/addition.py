"""addition: two numbers added column by column in a compact form (`1597+806: 7+6=13`, `159+80: 9+0+1=10`), for
small models (the demo and the GRPO learning benchmark), in three forms: `addition`, `addition-labelled` and
`addition-running` (see `generate`). Verified by the integer answer, as arithmetic is."""

from __future__ import annotations

import random
import string
from functools import partial
from typing import Literal, get_args

from r1kit.tasks.task import Difficulty, Task, verify_integer

PROMPT = "What is {a} + {b}?"

ADDITION_DIGITS = {"easy": (2, 2), "medium": (2, 4), "hard": (3, 6)}


AdditionForm = Literal["addition", "addition-labelled", "addition-running"]


def generate(
    rng: random.Random,
    level: Difficulty,
    *,
    form: AdditionForm = "addition",
    digits: tuple[int, int] | None = None,
) -> dict:
    """Addition of two 2-4-digit numbers (by difficulty; `digits` gives another range of lengths), worked one column per line: the numbers still to add,
    then their last digits with the carry (`1597+806: 7+6=13`, `159+80: 9+0+1=10`, ...).

    Naming the remaining numbers on each line keeps every lookup local: the digits a line adds are the last ones
    of the numbers it has just written, and the next line copies those numbers less their last digit. A small
    model learns this far sooner than lines that must find the i-th digit from the right in the question (on
    our 2-core machines, 38% held-out accuracy after 750 SFT steps against ~20%).

    The answer is the last digit of every line read backwards (the last line's whole sum), which is where small
    models trained on this form go wrong most: a line read twice or skipped (research/grpo-learning.md, ninth and
    tenth rounds). Two forms make that step explicit (the same seed gives the same problems in every form):
    - `addition-labelled` starts each line with a letter, `a` for the ones column (`a 1597+806: 7+6=13`,
      `b 159+80: 9+0+1=10`, ...), so that the answer's next digit comes from the line lettered one before the
      last one read: a lookup by content rather than by counting lines;
    - `addition-running` ends each line with the answer's digits so far (`1597+806: 7+6=13 | 3`,
      `159+80: 9+0+1=10 | 03`, ...), so that the answer is a copy of the last line, at the cost of longer
      lines to learn."""
    low_digits, high_digits = digits or ADDITION_DIGITS[level.name]
    if not 1 <= low_digits <= high_digits:
        raise ValueError(f"digits must be 1 <= low <= high, got {digits}")
    a, b = (
        rng.randint(10 ** (d - 1), 10**d - 1)
        for d in (rng.randint(low_digits, high_digits), rng.randint(low_digits, high_digits))
    )
    lines: list[str] = []
    carry, left, right, written = 0, a, b, ""
    while left or right:
        x, y = left % 10, right % 10
        total = x + y + carry
        line = f"{left}+{right}: {x}+{y}" + (f"+{carry}" if carry else "") + f"={total}"
        if form == "addition-running":
            last = not (left // 10 or right // 10)
            written = str(total if last else total % 10) + written
            line += f" | {written}"
        elif form == "addition-labelled":
            line = f"{string.ascii_lowercase[len(lines)]} {line}"
        lines.append(line)
        carry, left, right = total // 10, left // 10, right // 10
    return {
        "question": PROMPT.format(a=a, b=b),
        "answer": str(a + b),
        "reasoning": "\n".join(lines),
        "solution": f"\\boxed{{{a + b}}}",
        "task": form,
    }


TASKS = [Task(form, verify_integer, partial(generate, form=form)) for form in get_args(AdditionForm)]
