"""Rule-based text quality: a few cheap signals, each a rule that passes or fails, and a level 1-5.

Level = 5 minus the number of failed rules (at least 1), except that a turn made mostly of repeats of itself
(an advert pasted ten times, a reasoning trace caught in a loop) is level 1 on its own: no other signal makes
such a text worth training on. Word counts work for Chinese and Japanese too: each CJK character counts as a
word, since those scripts do not separate words with spaces.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_WORD = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")
_CJK_CHAR = re.compile(rf"[{_CJK}]")


_category = functools.lru_cache(maxsize=65536)(unicodedata.category)


def words(text: str) -> list[str]:
    """Whitespace-separated words, with every CJK character a word of its own."""
    return _WORD.findall(text)


@dataclass
class QualityScore:
    level: int
    failed: list[str]


REPEAT_NGRAM = 5
"""Repeated text is measured in word 5-grams: short enough to catch a repeated sentence, long enough that the
set phrases of worked solutions ("so the answer is") do not count."""


def repeated_share(text: str) -> float:
    """The share of words that lie in a later occurrence of a word 5-gram seen earlier in the text."""
    tokens = [t.lower() for t in words(text)]
    seen: set[tuple[str, ...]] = set()
    covered_until = 0  # words before this index are already counted
    covered = 0
    for i in range(len(tokens) - REPEAT_NGRAM + 1):
        gram = tuple(tokens[i : i + REPEAT_NGRAM])
        if gram in seen:
            end = i + REPEAT_NGRAM
            covered += end - max(i, covered_until)
            covered_until = end
        else:
            seen.add(gram)
    return covered / len(tokens) if tokens else 0.0


def score(text: str, cfg, turns: list[str] | None = None) -> QualityScore:
    """Apply the quality rules of `cfg` (a QualityConfig) to `text`, and the repetition rule to each of `turns`
    (the record's messages; the whole text when not given), so that a question cannot dilute a spam answer."""
    failed = []
    degenerate = False
    for turn in turns if turns is not None else [text]:
        if len(words(turn)) >= 20:
            share = repeated_share(turn)
            if share > cfg.max_repeated_share:
                failed.append(f"repeated_text={share:.2f}>{cfg.max_repeated_share}")
                degenerate = True
                break
    tokens = words(text)
    if len(tokens) < cfg.min_words:
        failed.append(f"words<{cfg.min_words}")
    # Count by distinct character: a text has few, so categories are looked up tens of times, not thousands.
    counts = Counter(text)
    num_visible = num_symbols = num_digits = 0
    for char, count in counts.items():
        category = _category(char)
        if category[0] == "Z" or char.isspace():
            continue
        num_visible += count
        if category[0] == "S" or category in ("Co", "Cn"):
            num_symbols += count
        elif category == "Nd":
            num_digits += count
    if num_visible:
        if num_symbols / num_visible > cfg.max_symbol_ratio:
            failed.append(f"symbol_ratio>{cfg.max_symbol_ratio}")
        if num_digits / num_visible > cfg.max_digit_ratio:
            failed.append(f"digit_ratio>{cfg.max_digit_ratio}")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) >= 3 and (len(lines) - len(set(lines))) / len(lines) > cfg.max_duplicate_line_ratio:
        failed.append(f"duplicate_lines>{cfg.max_duplicate_line_ratio}")
    if len(tokens) >= 30:  # in short texts a repeated phrase is normal
        trigrams = Counter(zip(tokens, tokens[1:], tokens[2:]))
        top_count = trigrams.most_common(1)[0][1]
        if top_count > 1 and 3 * top_count / len(tokens) > cfg.max_top_ngram_ratio:
            failed.append(f"repeated_3gram>{cfg.max_top_ngram_ratio}")
    cjk_share = len(_CJK_CHAR.findall(text)) / max(num_visible, 1)
    if tokens and cjk_share < 0.3:
        mean_length = sum(len(t) for t in tokens) / len(tokens)
        if not cfg.min_mean_word_length <= mean_length <= cfg.max_mean_word_length:
            failed.append(f"mean_word_length={mean_length:.1f}")
    return QualityScore(1 if degenerate else max(1, 5 - len(failed)), failed)
