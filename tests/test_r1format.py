import random

import pytest

from r1kit.r1format import CONTENT, REASONING, THINK_OPEN, ReasoningStream, split_reasoning


@pytest.mark.parametrize(
    "text, reasoning, answer",
    [
        (
            "<think>\n16 - 3 - 4 = 9, 9 * 2 = 18\n</think>\n\nShe makes $18.",
            "16 - 3 - 4 = 9, 9 * 2 = 18",
            "She makes $18.",
        ),
        ("Just an answer.", None, "Just an answer."),
        # Prompt ended in "<think>\n": the model writes only the closing tag.
        ("9 eggs left\n</think>\n\n\\boxed{18}", "9 eggs left", "\\boxed{18}"),
        # Cut off mid-thought: everything is reasoning, no answer yet.
        ("<think>\nLet me count the eggs", "Let me count the eggs", ""),
        ("<think></think>42", "", "42"),
        # R1-Distill: reasoning closed without an opening tag; a later tag in the answer is answer text
        ("count\n</think>\n\n12 <think> is a tag", "count", "12 <think> is a tag"),
        ("Sure. <think>r</think> 42", "r", "Sure.  42"),
    ],
)
def test_split_reasoning(text, reasoning, answer):
    assert split_reasoning(text) == (reasoning, answer)


STREAMED = [
    "<think>\n16 - 3 - 4 = 9, 9 * 2 = 18\n</think>\n\nShe makes $18.",
    "Just an answer.  ",
    "<think>\nLet me count the eggs\n",
    "<think></think>42",
    "  <think> a < b and b </ c, so </thinking is not the tag </think>\n\\boxed{x < y}\n",
    "<think>\n多少 个 鸡蛋?\n</think>\n\n答案是 18。",
]


@pytest.mark.parametrize("text", STREAMED)
@pytest.mark.parametrize("seed", range(5))
def test_streamed_deltas_join_to_the_whole_split(text, seed):
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(1, 12))))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    stream, deltas = ReasoningStream(), []
    for piece in pieces:
        deltas += stream.feed(piece)
    deltas += stream.finish()
    reasoning = "".join(t for field, t in deltas if field == REASONING)
    answer = "".join(t for field, t in deltas if field == CONTENT)
    expected_reasoning, expected_answer = split_reasoning(text)
    assert (reasoning if stream.saw_think else None, answer) == (expected_reasoning, expected_answer)
    fields = [field for field, _ in deltas]
    assert fields == sorted(fields, key=lambda f: f != REASONING)  # all reasoning comes before any answer


PIECES = ["<think>", "</think>", "<think", "</thi", "nk>", ">", "<", "a", "b c", " ", "\n", "18"]


def streamed(text: str, rng: random.Random, opened: bool = False) -> tuple[str | None, str, list[str]]:
    cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(0, 12)))) if text else []
    stream, deltas = ReasoningStream(opened), []
    for a, b in zip([0, *cuts], [*cuts, len(text)]):
        deltas += stream.feed(text[a:b])
    deltas += stream.finish()
    reasoning = "".join(t for field, t in deltas if field == REASONING)
    answer = "".join(t for field, t in deltas if field == CONTENT)
    return (reasoning if stream.saw_think else None), answer, [field for field, _ in deltas]


@pytest.mark.parametrize("seed", range(300))
def test_any_text_streams_to_its_whole_split(seed):
    """Random texts of tags, tag fragments, text and whitespace, cut at random: the stream's joined deltas are
    the whole-text split, with or without a prompt that opened the block, and reasoning comes first."""
    rng = random.Random(seed)
    text = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 14)))
    opened = seed % 3 == 0
    reasoning, answer, fields = streamed(text, rng, opened)
    assert (reasoning, answer) == split_reasoning(THINK_OPEN + text if opened else text), repr(text)
    assert fields == sorted(fields, key=lambda f: f != REASONING)


def test_distill_output_without_an_opening_tag_streams_as_reasoning():
    """R1-Distill models write their reasoning and `</think>` with no `<think>`: the stream must not send it as
    content (it held it back until the closing tag decided)."""
    stream = ReasoningStream()
    deltas = stream.feed("9 eggs ") + stream.feed("left\n</think>") + stream.feed("\n\n18") + stream.finish()
    assert deltas == [(REASONING, "9 eggs left"), (CONTENT, "18")]


def test_stream_of_a_prompt_that_opened_the_think_block():
    stream = ReasoningStream(opened=True)
    deltas = stream.feed("9 eggs left\n</thi") + stream.feed("nk>\n\n\\boxed{18}") + stream.finish()
    assert deltas == [(REASONING, "9 eggs left"), (CONTENT, "\\boxed{18}")]
