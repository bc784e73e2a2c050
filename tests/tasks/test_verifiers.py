"""Each built-in task's verifier: reference solutions pass, and the answers that game a looser check score 0."""

import json

import pytest

from r1kit.data.synth import SYNTHETIC, synthesize
from r1kit.tasks import GoldProblems, Problem, check
from r1kit.train.rewards import accuracy


def problems_of(path):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [
        (row, Problem(str(i), [], row["answer"], task=row["task"], meta=row)) for i, row in enumerate(rows)
    ]


@pytest.mark.parametrize("task", SYNTHETIC)
def test_reference_solutions_verify(tmp_path, task):
    for row, problem in problems_of(synthesize(task, 100, tmp_path / "p.jsonl", seed=4)):
        assert check(row["solution"], problem), row


def countdown(numbers, target, gold):
    return Problem(
        "c", [], gold, task="countdown", meta={"task": "countdown", "numbers": numbers, "target": target}
    )


@pytest.mark.parametrize(
    "answer",
    [
        "\\boxed{20}",  # the bare target
        "\\boxed{4*5}",  # numbers that were not given
        "\\boxed{(3+7)+10}",  # 10 was not given
        "\\boxed{(3+7)+(3+7)}",  # each number used twice
        "\\boxed{7*3-1}",  # 1 was not given
        "\\boxed{(3+7)*2 = 21}",  # right expression, wrong result claimed
        "\\boxed{(3+7)*3}",  # 30, not the target
        "\\boxed{__import__('os').getpid()}",
        "The answer is (3+7)*2",  # no boxed expression to check
        "<think>\\boxed{(3+7)*2}</think>no answer",  # the right expression, inside the reasoning only
    ],
)
def test_countdown_rewards_only_a_real_solution(answer):
    problem = countdown([3, 7, 2, 9], 20, "(3 + 7) * 2")
    assert check(answer, problem) is False
    assert check("<think>3+7=10, 10*2=20</think>\\boxed{(3+7)*2}", problem)
    assert check("\\boxed{2 \\times (7 + 3) = 20}", problem)
    assert check("\\boxed{9+7+2+3-1*1}", problem) is False


def test_countdown_without_its_numbers_is_counted_not_paid():
    problems = GoldProblems()
    assert not check("\\boxed{(3+7)*2}", Problem("c", [], "(3 + 7) * 2", task="countdown"), problems)
    assert problems.count == 1


@pytest.mark.parametrize("task", ["arithmetic", "addition"])
@pytest.mark.parametrize(
    "answer",
    [
        "\\boxed{12+8}",  # the question restated
        "\\boxed{21}",  # a made-up number
        "\\boxed{2*10}",  # an expression of the right value
        "12 + 8 = 20, so \\boxed{}",
    ],
)
def test_arithmetic_wants_the_integer(task, answer):
    problem = Problem("a", [], "20", task=task)
    assert check(answer, problem) is False
    assert check("\\boxed{20}", problem) and check("#### 20", problem)


def test_the_accuracy_reward_verifies_by_task():
    meta = json.dumps({"task": "countdown", "numbers": [3, 7, 2, 9], "target": 20})
    completions = ["\\boxed{20}", "\\boxed{(3+7)*2}", "\\boxed{4*5}"]
    rewards = accuracy(
        [None] * 3, completions, answer=["(3 + 7) * 2"] * 3, task=["countdown"] * 3, meta=[meta] * 3
    )
    assert rewards == [0.0, 1.0, 0.0]
    # a record that names no task is a math answer: value equality by math-verify
    assert accuracy([None], ["\\boxed{4*5}"], answer=["20"]) == [1.0]
