import pytest

from r1kit.serve.reasoning import split_reasoning


@pytest.mark.parametrize(
    "text, reasoning, answer",
    [
        ("<think>\n16 - 3 - 4 = 9, 9 * 2 = 18\n</think>\n\nShe makes $18.", "16 - 3 - 4 = 9, 9 * 2 = 18", "She makes $18."),
        ("Just an answer.", None, "Just an answer."),
        # Prompt ended in "<think>\n": the model writes only the closing tag.
        ("9 eggs left\n</think>\n\n\\boxed{18}", "9 eggs left", "\\boxed{18}"),
        # Cut off mid-thought: everything is reasoning, no answer yet.
        ("<think>\nLet me count the eggs", "Let me count the eggs", ""),
        ("<think></think>42", "", "42"),
    ],
)
def test_split_reasoning(text, reasoning, answer):
    assert split_reasoning(text) == (reasoning, answer)
