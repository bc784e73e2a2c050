"""What every task shares: the `Task` record (generator, prompt, verifier), difficulty levels, the problem a
verifier checks against, and the count of gold answers that cannot be checked.

A verifier takes a model output (or a reference solution) and the problem, and returns True (solved), False
(not solved) or None (the problem's gold cannot be checked: a broken data set). None scores 0 like False and is
counted, so a broken data set shows up as a count rather than as free points.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from r1kit.r1format import clean_number, extract_answer


@dataclass(frozen=True)
class Difficulty:
    name: str
    digits: int
    ops: str
    numbers: int
    max_number: int


DIFFICULTIES = {
    "easy": Difficulty("easy", digits=2, ops="+-", numbers=3, max_number=20),
    "medium": Difficulty("medium", digits=3, ops="+-*", numbers=4, max_number=50),
    "hard": Difficulty("hard", digits=5, ops="+-*", numbers=5, max_number=100),
}


@dataclass
class Problem:
    """A problem to answer: the chat up to the question, its gold answer, and what its task's verifier needs."""

    id: str
    messages: list[dict]
    gold: str
    reference: str | None = None
    """A reference solution (for BLEU-4/ROUGE-L), when the suite has one."""
    tags: dict[str, str] = field(default_factory=dict)
    """Groups to break accuracy down by (MATH-500: subject, level)."""
    task: str | None = None
    """The task whose verifier checks answers (None: a math answer, checked by math-verify)."""
    meta: Mapping[str, Any] = field(default_factory=dict)
    """The record's other fields (countdown: `numbers`, `target`)."""


Verifier = Callable[[str, Problem], "bool | None"]
"""`(model output or reference solution, problem) -> solved, or None when the gold cannot be checked`."""
Generator = Callable[[random.Random, Difficulty], dict]
"""`(random generator, difficulty) -> a record: question, answer, reasoning, solution, task, extra fields`."""


@dataclass(frozen=True)
class Task:
    name: str
    verify: Verifier
    generate: Generator | None = None
    """None for tasks whose problems come from files (GSM8K, MATH)."""


@dataclass
class GoldProblems:
    """Gold answers that could not be checked, counted (and a few kept to show)."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, gold: str) -> None:
        self.count += 1
        if len(self.examples) < 5:
            self.examples.append(gold)


def integer_answer(output: str) -> int | None:
    """The final answer as an integer when it is written as one (`\\boxed{1,234}`, `#### -5`), else None: an
    expression such as `12+8` is not an answer to "What is 12 + 8?"."""
    answer = extract_answer(output)
    if answer is None:
        return None
    text = clean_number(answer.replace("\\!", "").replace("\\,", ""))
    try:
        return int(text)
    except ValueError:
        return None


def verify_integer(output: str, problem: Problem) -> bool | None:
    """Solved when the final answer is the gold integer, written as an integer."""
    try:
        gold = int(problem.gold)
    except ValueError:
        return None
    return integer_answer(output) == gold


def meta_of(value: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """A record's `meta` (a JSON object, as `data clean` stores it) as a dict; {} when absent or unreadable."""
    if not value:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    try:
        parsed = json.loads(value)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}
