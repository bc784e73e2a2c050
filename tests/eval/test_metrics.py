"""Every metric on hand-made cases with known values."""

import math

import pytest
import torch

from r1kit.eval import metrics


@pytest.mark.parametrize(
    "n, c, k, expected",
    [(5, 2, 1, 0.4), (5, 2, 2, 1 - 3 / 10), (5, 0, 3, 0.0), (5, 4, 2, 1.0), (10, 3, 5, 1 - 21 / 252)],
)
def test_pass_at_k(n, c, k, expected):
    assert metrics.pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_needs_enough_samples():
    with pytest.raises(ValueError, match="at least 4 samples"):
        metrics.pass_at_k(3, 1, 4)


def test_mean_with_standard_error():
    result = metrics.mean_with_error([0.0, 1.0, 0.0, 1.0])
    assert result.mean == 0.5 and result.stderr == pytest.approx(math.sqrt(1 / 3) / 2) and result.count == 4
    assert metrics.mean_with_error([0.7]).stderr == 0.0


def test_rouge_l_english_and_chinese():
    assert metrics.rouge_l(["a c d e"], ["a b c d"]) == pytest.approx(0.75)  # LCS "a c d": P = R = 3/4
    assert metrics.rouge_l(["今天天气不好"], ["今天天气很好"]) == pytest.approx(5 / 6)  # LCS of characters
    assert metrics.rouge_l(["The Cat"], ["the cat"]) == 1.0


def test_bleu4_tokenises_chinese_by_character():
    score, signature = metrics.bleu4(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert score == pytest.approx(100.0) and "tok:13a" in signature
    score, signature = metrics.bleu4(["今天天气很好啊"], ["今天天气很好啊"])
    assert score == pytest.approx(100.0) and "tok:zh" in signature
    partial, _ = metrics.bleu4(["今天天气很不好"], ["今天天气很好啊"])
    assert 0 < partial < 100
    assert metrics.bleu4(["completely different words here"], ["the cat sat on the mat"])[0] < 1


def test_exact_match():
    assert metrics.exact_match(["18", " 7 ", None], ["18", "7", "3"]) == pytest.approx(2 / 3)


def test_perplexity_of_a_uniform_model_is_its_vocabulary_size(tmp_path, tokenizer_dir):
    from r1kit.models.create import init_model
    from r1kit.models.load import load_model, load_tokenizer

    init_model("tiny-qwen2", tokenizer_dir, tmp_path / "m", seed=0)
    model, tokenizer = load_model(tmp_path / "m", dtype="float32").eval(), load_tokenizer(tmp_path / "m")
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(torch.zeros_like(model.lm_head.weight))  # every logit 0
    texts = ["Janet has 16 eggs.", "A robe takes 2 bolts of blue fiber and half that much white fiber."]
    assert metrics.perplexity(model, tokenizer, texts, batch_size=1) == pytest.approx(
        len(tokenizer), rel=1e-4
    )
    assert metrics.perplexity(model, tokenizer, texts, batch_size=2) == pytest.approx(
        len(tokenizer), rel=1e-4
    )
