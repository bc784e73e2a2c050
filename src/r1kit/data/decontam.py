"""Decontamination: reject training records that share a long word n-gram with an evaluation set.

One shared 13-gram (lower-cased words, punctuation ignored) is the usual test-leakage criterion; evaluation
texts shorter than n words are matched whole. N-grams are kept as 64-bit hashes in a set.
"""

from __future__ import annotations

import json
from pathlib import Path

import xxhash

from r1kit.data.dedup import exact_key
from r1kit.data.records import full_text, reject
from r1kit.errors import UserError


def _ngram_hashes(text: str, n: int) -> set[int]:
    tokens = exact_key(text).split()
    if len(tokens) < n:
        return set()
    return {xxhash.xxh3_64_intdigest(" ".join(tokens[i : i + n]).encode()) for i in range(len(tokens) - n + 1)}


def load_eval_ngrams(paths: list[Path], n: int) -> set[int]:
    """N-gram hashes of every string field of every record in the evaluation JSONL files."""
    ngrams: set[int] = set()
    for path in paths:
        if not path.is_file():
            raise UserError(f"data.decontam.eval_sets: file not found: {path}")
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
                for value in record.values():
                    if isinstance(value, str):
                        ngrams |= _ngram_hashes(value, n)
    return ngrams


def check_contamination(row: dict, ngrams: set[int], n: int) -> dict:
    shared = _ngram_hashes(full_text(row), n) & ngrams
    if shared:
        return reject(row, "decontam", "eval_overlap", f"{len(shared)} {n}-grams shared with an evaluation set")
    return row
