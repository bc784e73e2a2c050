"""Decontamination: reject training records that share a long word n-gram with an evaluation set.

One shared 13-gram (lower-cased words, punctuation ignored) is the usual test-leakage criterion. N-grams are
kept as strings in a set: hashing strings is what Python's sets do fastest.
"""

from __future__ import annotations

import json
from pathlib import Path

from r1kit.data.dedup import exact_key
from r1kit.data.records import full_text, reject
from r1kit.errors import UserError
from r1kit.paths import open_text


def _ngrams(text: str, n: int) -> set[str]:
    tokens = exact_key(text).split()
    return {" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def load_eval_ngrams(paths: list[Path], n: int) -> set[str]:
    """N-grams of every string field of every record in the evaluation JSONL files (plain or gzipped)."""
    ngrams: set[str] = set()
    for path in paths:
        if not path.is_file():
            raise UserError(f"data.decontam.eval_sets: file not found: {path}")
        with open_text(path) as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
                for value in record.values():
                    if isinstance(value, str):
                        ngrams |= _ngrams(value, n)
    return ngrams


def check_contamination(row: dict, ngrams: set[str], n: int) -> dict:
    shared = _ngrams(full_text(row), n) & ngrams
    if shared:
        return reject(
            row, "decontam", "eval_overlap", f"{len(shared)} {n}-grams shared with an evaluation set"
        )
    return row
