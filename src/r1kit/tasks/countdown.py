"""countdown: reach a target with some of the given numbers and + - × ÷, each number at most once (the task of
the R1-Zero reproductions).

Verified by the expression itself, never by comparing values with the reference answer: the final `\\boxed{}`
must hold an expression of + - * / and parentheses over the given numbers, each used at most once, that equals
the target (`\\boxed{(3+7)*2 = 20}` is read as its left side). The bare target, a number that was not given, a
number used twice or any other name scores 0 (unless the target is itself one of the given numbers).
"""

from __future__ import annotations

import ast
import random
from collections.abc import Sequence
from fractions import Fraction

from r1kit.r1format import THINK_CLOSE, last_boxed
from r1kit.tasks.task import Difficulty, Problem, Task

PROMPT = (
    "Using the numbers [{numbers}], create an equation that equals {target}. You can use +, -, * and /, and "
    "each number at most once. Give the equation as your final answer."
)
MAX_EXPRESSION_CHARS = 200
"""Longer answers are not parsed (a countdown expression over a handful of numbers is far shorter)."""
_OPERATORS = {"×": "*", "÷": "/", "\\times": "*", "\\cdot": "*", "\\div": "/", "\\left": "", "\\right": ""}


def _build_expression(rng: random.Random, values: list[int]) -> tuple[str, Fraction, list[str]] | None:
    """Combine `values` in a random order with random operations; None when a step is not a positive
    integer. Returns (expression, value, steps)."""
    items = [(str(v), Fraction(v)) for v in values]
    steps = []
    while len(items) > 1:
        (ea, va), (eb, vb) = items.pop(rng.randrange(len(items))), items.pop(rng.randrange(len(items)))
        if va < vb:
            (ea, va), (eb, vb) = (eb, vb), (ea, va)
        op = rng.choice("+-*/")
        if op == "/" and (vb == 0 or va % vb != 0 or vb == 1):
            op = "+"
        if op == "*" and (va == 1 or vb == 1):
            op = "+"
        value = {"+": va + vb, "-": va - vb, "*": va * vb, "/": va / vb}[op]
        if value <= 0 or value.denominator != 1:
            return None
        steps.append(f"{va} {op} {vb} = {value}")
        items.append((f"({ea} {op} {eb})", value))
    expression, value = items[0]
    return expression[1:-1] if expression.startswith("(") else expression, value, steps


def generate(rng: random.Random, level: Difficulty) -> dict:
    while True:
        numbers = [rng.randint(1, level.max_number) for _ in range(level.numbers)]
        used = rng.sample(numbers, k=rng.randint(2, len(numbers)))
        built = _build_expression(rng, used)
        if built is not None and 10 <= built[1] <= 1000:
            break
    expression, target, steps = built
    listed = ", ".join(map(str, numbers))
    return {
        "question": PROMPT.format(numbers=listed, target=int(target)),
        "answer": expression,
        "reasoning": f"I need to reach {int(target)} from {listed}.\n"
        + "\n".join(steps)
        + f"\nThat gives {int(target)}: {expression}.",
        "solution": f"\\boxed{{{expression}}}",
        "task": "countdown",
        "numbers": numbers,
        "target": int(target),
    }


def check_expression(expression: str, numbers: Sequence[int], target: int) -> bool:
    """True when `expression` uses only + - * / ( ) and each given number at most once, and equals target."""
    for symbol, replacement in _OPERATORS.items():
        expression = expression.replace(symbol, replacement)
    if len(expression) > MAX_EXPRESSION_CHARS:
        return False
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    available = list(numbers)

    def value(node: ast.AST) -> Fraction:
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Div):
                if right == 0:
                    raise ValueError("division by zero")
                return left / right
            return {ast.Add: left + right, ast.Sub: left - right, ast.Mult: left * right}[type(node.op)]
        if isinstance(node, ast.Constant) and type(node.value) is int and node.value in available:
            available.remove(node.value)
            return Fraction(node.value)
        raise ValueError("not allowed")

    try:
        return value(tree.body) == target
    except (ValueError, RecursionError):
        return False


def verify(output: str, problem: Problem) -> bool | None:
    numbers, target = problem.meta.get("numbers"), problem.meta.get("target")
    if not isinstance(numbers, list) or not all(type(n) is int for n in numbers) or type(target) is not int:
        return None  # the record lost the numbers or the target: nothing to check against
    answer = last_boxed(output.rsplit(THINK_CLOSE, 1)[-1])
    if answer is None:
        return False
    expression, *results = answer.split("=")
    if any(not _equals(side, target) for side in results):
        return False
    return check_expression(expression, numbers, target)


def _equals(text: str, target: int) -> bool:
    try:
        return int(text.strip()) == target
    except ValueError:
        return False


TASK = Task("countdown", verify, generate)
