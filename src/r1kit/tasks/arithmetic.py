"""arithmetic: multi-digit addition, subtraction and multiplication, solved the way a person does it on paper
(column addition with carries, place-value subtraction, partial products). Verified by the integer answer: the
final answer must be the result written as an integer (restating the sum, `\\boxed{12+8}`, does not count)."""

from __future__ import annotations

import random

from r1kit.tasks.task import Difficulty, Task, verify_integer

PROMPT = "What is {a} {symbol} {b}?"
SYMBOLS = {"+": "+", "-": "-", "*": "×"}


def _column_addition(a: int, b: int) -> list[str]:
    steps, carry = [], 0
    da, db = str(a)[::-1], str(b)[::-1]
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        total = x + y + carry
        carry_note = f" + {carry} (carry)" if carry else ""
        steps.append(f"{x} + {y}{carry_note} = {total}: write {total % 10}, carry {total // 10}")
        carry = total // 10
    if carry:
        steps.append(f"write the final carry {carry}")
    return steps


def _place_value_subtraction(a: int, b: int) -> list[str]:
    steps, current = [], a
    digits = str(b)
    for i, d in enumerate(digits):
        part = int(d) * 10 ** (len(digits) - 1 - i)
        if part:
            steps.append(f"{current} - {part} = {current - part}")
            current -= part
    return steps


def _partial_products(a: int, b: int) -> list[str]:
    steps, parts = [], []
    digits = str(b)
    for i, d in enumerate(reversed(digits)):
        part = a * int(d) * 10**i
        parts.append(part)
        steps.append(f"{a} × {int(d) * 10**i} = {part}")
    if len(parts) > 1:
        steps.append(" + ".join(map(str, parts)) + f" = {sum(parts)}")
    return steps


def generate(rng: random.Random, level: Difficulty) -> dict:
    op = rng.choice(level.ops)
    low, high = 10 ** (level.digits - 1), 10**level.digits - 1
    a = rng.randint(low, high)
    b = rng.randint(low, high) if op != "*" else rng.randint(2, 10 ** max(1, level.digits - 1) - 1)
    if op == "+":
        result, steps = a + b, _column_addition(a, b)
    elif op == "-":
        result = a - b
        steps = (
            _place_value_subtraction(a, b)
            if a >= b
            else [
                f"{b} > {a}, so the result is negative: {a} - {b} = -({b} - {a})",
                *_place_value_subtraction(b, a),
            ]
        )
    else:
        result, steps = a * b, _partial_products(a, b)
    symbol = SYMBOLS[op]
    return {
        "question": PROMPT.format(a=a, symbol=symbol, b=b),
        "answer": str(result),
        "reasoning": f"Compute {a} {symbol} {b} step by step.\n"
        + "\n".join(steps)
        + f"\nSo the result is {result}.",
        "solution": f"{a} {symbol} {b} = \\boxed{{{result}}}",
        "task": "arithmetic",
    }


TASK = Task("arithmetic", verify_integer, generate)
