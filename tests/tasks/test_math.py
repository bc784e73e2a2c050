"""Answer extraction and the math task's verifier, anchored on the gold solutions of GSM8K and MATH-500."""

import json

import pytest

from r1kit.r1format import extract_answer
from r1kit.tasks import GoldProblems, Problem, check
from r1kit.tasks.math import answers_match


def is_correct(output, gold, problems=None):
    return check(output, Problem("p", [], gold, task="math"), problems)


@pytest.mark.parametrize(
    "text, answer",
    [
        ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72"),
        ("so the total is\n#### 1,234", "1234"),
        ("#### -5", "-5"),
        ("The area is $\\boxed{\\frac{14}{3}}$.", "\\frac{14}{3}"),
        (
            "first \\boxed{1} then \\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}",
            "\\left( 3, \\frac{\\pi}{2} \\right)",
        ),
        ("The answer is $1,234.50.", "1234.50"),
        ("Therefore, the answer is: 3/4", "3/4"),
        ("She has 3 apples, then 5 more, so 8", "8"),
        ("<think>Maybe 12? Or 13.</think>The answer is 14.", "14"),
        ("No number here at all", None),
    ],
)
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize(
    "predicted, gold, expected",
    [
        ("1,234", "1234", True),
        ("0.5", "\\frac{1}{2}", True),
        ("-3/4", "-\\frac{3}{4}", True),
        ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True),
        ("\\$18.90", "18.9", True),
        ("32,\\!348", "\\$32,\\!348", True),
        ("7", "8", False),
        (None, "8", False),
    ],
)
def test_answers_match(predicted, gold, expected):
    assert answers_match(predicted, gold) is expected


def test_an_unparseable_gold_scores_zero_and_is_counted():
    problems = GoldProblems()
    assert not is_correct("\\boxed{}", "\\frac{", problems)
    assert not is_correct("anything", "", problems)
    assert problems.count == 2 and problems.examples == ["\\frac{", ""]


def test_gsm8k_gold_solutions_score_100_percent(reference_data):
    rows = [json.loads(line) for line in (reference_data / "gsm8k" / "test.jsonl").read_text().splitlines()]
    problems = GoldProblems()
    correct = [is_correct(r["answer"], r["answer"].rsplit("####", 1)[1].strip(), problems) for r in rows]
    assert len(rows) == 1319 and sum(correct) == len(rows) and problems.count == 0


def test_math500_gold_solutions_score_at_least_99_percent(reference_data):
    rows = [json.loads(line) for line in (reference_data / "math500" / "test.jsonl").read_text().splitlines()]
    correct = [is_correct(r["solution"], r["answer"]) for r in rows]
    assert len(rows) == 500 and sum(correct) / len(rows) >= 0.99
    wrong = ["9", "\\frac{1}{3}"]  # and a wrong answer is not accepted for a few of them
    assert not any(
        is_correct(f"\\boxed{{{w}}}", r["answer"]) for r in rows[:20] for w in wrong if w != r["answer"]
    )
