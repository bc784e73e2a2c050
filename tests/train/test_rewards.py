"""The reward library on real model-style outputs (R1 format with think blocks, GSM8K and boxed answers)."""

import pytest

from r1kit.errors import UserError
from r1kit.train import rewards

GOOD = "<think>\n16 - 3 - 4 = 9 eggs, 9 * 2 = 18\n</think>\n\nShe makes \\boxed{18} dollars."
GSM8K_STYLE = "<think>\n48 / 2 = 24, 48 + 24 = 72\n</think>\n\nNatalia sold 72 clips.\n#### 72"
NO_THINK = "She makes 18 dollars."
UNCLOSED = "<think>\n16 - 3 - 4 = 9 eggs, so 9 * 2 is"
TWO_BLOCKS = "<think>a</think><think>b</think> 18"
EMPTY_ANSWER = "<think>\n9 * 2 = 18\n</think>\n\n"
LOOP = "the answer is the answer is the answer is the answer is the answer is the answer is"


def chat(text):
    return [{"role": "assistant", "content": text}]


def test_accuracy_checks_the_final_answer():
    completions = [GOOD, chat(GOOD), GSM8K_STYLE, NO_THINK, UNCLOSED, "<think>18</think> The answer is 17."]
    golds = ["18", "18", "72", "18", "18", "18"]
    assert rewards.accuracy(None, completions, golds) == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert rewards.accuracy(None, ["\\boxed{\\frac{1}{2}}"], ["0.5"]) == [1.0]


def test_accuracy_never_pays_for_an_unparseable_gold():
    logged = {}
    with pytest.warns(UserWarning, match="could not be parsed"):
        scores = rewards.accuracy(
            None,
            ["\\boxed{}", "anything"],
            ["\\frac{", "???"],
            log_metric=lambda name, value: logged.update({name: value}),
        )
    assert scores == [0.0, 0.0] and logged == {"rewards/unparseable_golds": 2.0}


def test_format():
    assert rewards.format(None, [GOOD, chat(GSM8K_STYLE), NO_THINK, UNCLOSED, TWO_BLOCKS, EMPTY_ANSWER]) == [
        1.0,
        1.0,
        0.0,
        0.0,
        0.0,
        0.0,
    ]


def test_tag_count_gives_partial_credit():
    assert rewards.tag_count(None, [GOOD, UNCLOSED, NO_THINK, TWO_BLOCKS]) == [1.0, 0.5, 0.0, 0.0]


def test_length_punishes_only_near_and_past_the_limit():
    ids = [[0] * n for n in (10, 96, 112, 128)]
    assert rewards.length(None, [""] * 4, ids, max_length=128, buffer=32) == [0.0, 0.0, -0.5, -1.0]
    length = rewards.resolve("length", max_completion_length=128)
    assert length.__name__ == "length" and length(None, [""], [[0] * 128]) == [-1.0]


def test_repetition():
    scores = rewards.repetition(None, [GOOD, LOOP, "short"])
    assert scores[0] == 0.0 and scores[1] < -0.6 and scores[2] == 0.0


def test_steps_credits_each_reproduced_line_of_the_worked_solution():
    reference = "1597+806: 7+6=13\n159+80: 9+0+1=10\n15+8: 5+8+1=14\n1+0: 1+0+1=2"
    right = f"<think>\n{reference}\n</think>\n\n\\boxed{{2403}}"
    one_fact_wrong = right.replace("5+8+1=14", "5+8+1=13")
    line_skipped = "<think>\n1597+806: 7+6=13\n15+8: 5+8+1=14\n1+0: 1+0+1=2\n</think>\n\n\\boxed{2403}"
    padded = right.replace("</think>", "1+0: 1+0+1=2\n</think>")
    no_think = "\\boxed{2403}"
    scores = rewards.steps(
        None, [right, chat(one_fact_wrong), line_skipped, padded, no_think], [reference] * 5
    )
    assert scores == [1.0, 0.75, 0.25, 0.8, 0.0]
    assert rewards.steps(None, [right, right], reasoning=["", None]) == [0.0, 0.0]  # no reference: no credit
    assert rewards.steps(None, [right]) == [0.0]


def test_resolve_by_name_or_import_path():
    assert rewards.resolve("accuracy", max_completion_length=8) is rewards.accuracy
    digit_share = rewards.resolve("reward_fixtures:digit_share", max_completion_length=8)
    assert digit_share(None, ["a1", "22"]) == [0.5, 1.0]
    with pytest.raises(UserError, match="unknown reward 'acurracy'"):
        rewards.resolve("acurracy", max_completion_length=8)
    with pytest.raises(UserError, match="cannot import"):
        rewards.resolve("no_such_module:f", max_completion_length=8)
