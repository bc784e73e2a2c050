"""Rule-based text quality: a few cheap signals, each a rule that passes or fails, and a level 1-5.

Level = 5 minus the number of failed rules (at least 1). Word counts work for Chinese and Japanese too: each
CJK character counts as a word, since those scripts do not separate words with spaces.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_WORD = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")
_CJK_CHAR = re.compile(rf"[{_CJK}]")


def words(text: str) -> list[str]:
    """Whitespace-separated words, with every CJK character a word of its own."""
    return _WORD.findall(text)


@dataclass
class QualityScore:
    level: int
    failed: list[str]


def score(text: str, cfg) -> QualityScore:
    """Apply the quality rules of `cfg` (a QualityConfig) to `text`."""
    failed = []
    tokens = words(text)
    if len(tokens) < cfg.min_words:
        failed.append(f"words<{cfg.min_words}")
    visible = [c for c in text if not c.isspace()]
    if visible:
        categories = [unicodedata.category(c) for c in visible]
        symbols = sum(cat.startswith("S") or cat in ("Co", "Cn") for cat in categories)
        digits = sum(cat == "Nd" for cat in categories)
        if symbols / len(visible) > cfg.max_symbol_ratio:
            failed.append(f"symbol_ratio>{cfg.max_symbol_ratio}")
        if digits / len(visible) > cfg.max_digit_ratio:
            failed.append(f"digit_ratio>{cfg.max_digit_ratio}")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) >= 3 and (len(lines) - len(set(lines))) / len(lines) > cfg.max_duplicate_line_ratio:
        failed.append(f"duplicate_lines>{cfg.max_duplicate_line_ratio}")
    if len(tokens) >= 30:  # in short texts a repeated phrase is normal
        trigrams = Counter(zip(tokens, tokens[1:], tokens[2:]))
        top_count = trigrams.most_common(1)[0][1]
        if top_count > 1 and 3 * top_count / len(tokens) > cfg.max_top_ngram_ratio:
            failed.append(f"repeated_3gram>{cfg.max_top_ngram_ratio}")
    cjk_share = len(_CJK_CHAR.findall(text)) / max(len(visible), 1)
    if tokens and cjk_share < 0.3:
        mean_length = sum(len(t) for t in tokens) / len(tokens)
        if not cfg.min_mean_word_length <= mean_length <= cfg.max_mean_word_length:
            failed.append(f"mean_word_length={mean_length:.1f}")
    return QualityScore(max(1, 5 - len(failed)), failed)
