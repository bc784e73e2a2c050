"""Metrics with known definitions: perplexity, BLEU-4, ROUGE-L, exact match, pass@k, and a mean with its
standard error.

- BLEU-4 is sacrebleu's corpus BLEU. Its tokenisation is `zh` when the references contain CJK characters
  (each character a token, the rest as `13a`), else `13a`; the signature says which.
- ROUGE-L is rouge-score's LCS F-measure with a tokeniser that splits CJK text into characters and other
  text into lower-cased words and digits (rouge-score's own tokeniser drops non-Latin text, which would score
  Chinese as empty).
- pass@k is the unbiased estimator of Chen et al. (2021): 1 - C(n-c, k) / C(n, k) for n samples with c correct.
- `bootstrap_ci` is the percentile bootstrap over seeds and problems together (each resample draws seeds, then
  problems, with replacement), so a confidence interval covers both the test set's size and the spread across
  training seeds; a difference of two arms is bootstrapped on the paired per-problem differences.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
_TOKEN = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]|[^\W_]+", re.UNICODE
)


def has_cjk(texts: list[str]) -> bool:
    return any(_CJK.search(t) for t in texts)


class MixedTokenizer:
    """CJK characters one by one, other words whole, lower-cased (rouge-score's tokenizer interface)."""

    def tokenize(self, text: str) -> list[str]:
        return [t.lower() for t in _TOKEN.findall(text)]


def bleu4(hypotheses: list[str], references: list[str]) -> tuple[float, str]:
    """(corpus BLEU-4 on 0-100, sacrebleu's signature)."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU(tokenize="zh" if has_cjk(references) else "13a")
    score = bleu.corpus_score(hypotheses, [references])
    return score.score, str(bleu.get_signature())


def rouge_l(hypotheses: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F-measure on 0-1."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rougeL"], tokenizer=MixedTokenizer())
    scores = [scorer.score(ref, hyp)["rougeL"].fmeasure for hyp, ref in zip(hypotheses, references)]
    return sum(scores) / len(scores) if scores else 0.0


def exact_match(predictions: list[str | None], golds: list[str]) -> float:
    """Share of predictions equal to their gold after trimming whitespace."""
    hits = [p is not None and p.strip() == g.strip() for p, g in zip(predictions, golds)]
    return sum(hits) / len(hits) if hits else 0.0


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (k <= n)."""
    if k > num_samples:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {num_samples}")
    if num_samples - num_correct < k:
        return 1.0
    return 1.0 - math.comb(num_samples - num_correct, k) / math.comb(num_samples, k)


@dataclass
class MeanWithError:
    mean: float
    stderr: float
    count: int


def mean_with_error(values: list[float]) -> MeanWithError:
    """Mean and its standard error (sample standard deviation / sqrt(n)); 0 error for fewer than 2 values."""
    n = len(values)
    if n == 0:
        return MeanWithError(0.0, 0.0, 0)
    mean = sum(values) / n
    if n < 2:
        return MeanWithError(mean, 0.0, n)
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return MeanWithError(mean, math.sqrt(variance / n), n)


@dataclass
class Interval:
    mean: float
    low: float
    high: float
    level: float

    def to_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "level": self.level}


def bootstrap_ci(values, *, level: float = 0.95, resamples: int = 4000, seed: int = 0) -> Interval:
    """Mean and percentile-bootstrap interval of `values`, an array of shape (seeds, problems) (a 1-D array is
    one seed): each resample draws the seeds with replacement, then the problems with replacement."""
    import numpy as np

    data = np.asarray(values, dtype=float)
    if data.ndim == 1:
        data = data[None, :]
    if data.ndim != 2 or data.size == 0:
        raise ValueError(f"bootstrap_ci wants a (seeds, problems) array, got shape {data.shape}")
    num_seeds, num_problems = data.shape
    rng = np.random.default_rng(seed)
    seed_picks = rng.integers(0, num_seeds, size=(resamples, num_seeds))
    problem_picks = rng.integers(0, num_problems, size=(resamples, num_problems))
    # the mean over the drawn seeds of each drawn problem's value, per resample
    means = data[seed_picks].mean(axis=1)[np.arange(resamples)[:, None], problem_picks].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(data.mean()), float(low), float(high), level)


def perplexity(model, tokenizer, texts: list[str], *, max_length: int = 1024, batch_size: int = 8) -> float:
    """exp of the mean negative log-likelihood per predicted token over `texts` (each cut at `max_length`
    tokens; every token but the first of a text is predicted)."""
    import torch

    total_nll, total_tokens = 0.0, 0
    encoded = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
    encoded = [ids for ids in encoded if len(ids) > 1]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start : start + batch_size]
        length = max(len(ids) for ids in batch)
        input_ids = torch.tensor([ids + [pad] * (length - len(ids)) for ids in batch], device=device)
        mask = torch.tensor([[1] * len(ids) + [0] * (length - len(ids)) for ids in batch], device=device)
        with torch.inference_mode():
            logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1].float()  # (B, T-1, V)
        targets, target_mask = input_ids[:, 1:], mask[:, 1:].bool()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T-1)
        total_nll += float(nll[target_mask].sum())
        total_tokens += int(target_mask.sum())
    if total_tokens == 0:
        raise ValueError("perplexity needs at least one text of two or more tokens")
    return math.exp(total_nll / total_tokens)
