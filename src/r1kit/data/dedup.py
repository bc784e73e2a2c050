"""Exact and near-duplicate detection that scales past memory.

Hashing is per record (a pure batch function, run in worker processes): a 64-bit hash of the normalised text
for exact duplicates, and for near duplicates a MinHash signature of word shingles (datasketch) cut into LSH
bands, each band hashed to 64 bits. Finding duplicates is then a sort per hash column rather than an
in-memory LSH index: memory is 8 bytes per record per column, loaded one column at a time, instead of a
dictionary entry per record per band. LSH candidates are confirmed by the Jaccard similarity their MinHash
signatures estimate, so a band collision alone never removes a record.

A record is a duplicate of the earliest kept record it matches; the earliest copy is kept.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import xxhash

from r1kit.data.quality import words
from r1kit.data.records import full_text

_PUNCT_SPACE = re.compile(r"[\W_]+", re.UNICODE)


def exact_key(text: str) -> str:
    """Text with case, punctuation and whitespace folded: copies differing only in those collide."""
    return _PUNCT_SPACE.sub(" ", text.casefold()).strip()


def shingles(text: str, size: int) -> list[bytes]:
    tokens = words(text.casefold())
    if len(tokens) <= size:
        return [" ".join(tokens).encode()]
    return [" ".join(tokens[i : i + size]).encode() for i in range(len(tokens) - size + 1)]


@functools.cache
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) minimising false positives + negatives at `threshold` (datasketch's choice)."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r


@functools.cache
def _permutations(num_perm: int):
    from datasketch import MinHash

    return MinHash(num_perm=num_perm, seed=1, scheme="affine32").permutations


def _hash32(data: bytes) -> int:
    return xxhash.xxh32_intdigest(data)


def hash63(data: bytes) -> int:
    """A 63-bit hash: fits Arrow's int64 columns (Python ints past 2**63 overflow them)."""
    return xxhash.xxh3_64_intdigest(data) >> 1


def signature(text: str, num_perm: int, shingle_size: int) -> np.ndarray:
    """MinHash signature (num_perm uint32 values) of the text's word shingles."""
    from datasketch import MinHash

    minhash = MinHash(num_perm=num_perm, hashfunc=_hash32, permutations=_permutations(num_perm), scheme="affine32")
    minhash.update_batch(shingles(text, shingle_size))
    return minhash.hashvalues.astype(np.uint32)


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> list[int]:
    return [hash63(sig[b * rows : (b + 1) * rows].tobytes()) for b in range(bands)]


def hash_columns(batch: dict[str, list], *, near: bool, num_perm: int, shingle_size: int, bands: int,
                 rows: int) -> dict[str, list]:
    """Batch function: `exact_hash`, and with `near` the `signature` and `band_<i>` hash columns."""
    out: dict[str, list] = {"exact_hash": []}
    if near:
        out["signature"] = []
        for b in range(bands):
            out[f"band_{b}"] = []
    empty = np.zeros(num_perm, dtype=np.uint32)
    for i in range(len(batch["kind"])):
        if batch["reject_reason"][i] is not None:  # rejected rows take no part; keep the columns aligned
            out["exact_hash"].append(0)
            if near:
                out["signature"].append(empty)
                for b in range(bands):
                    out[f"band_{b}"].append(0)
            continue
        row = {k: batch[k][i] for k in ("kind", "text", "messages")}
        text = full_text(row)
        out["exact_hash"].append(hash63(exact_key(text).encode()))
        if near:
            sig = signature(text, num_perm, shingle_size)
            out["signature"].append(sig)
            for b, h in enumerate(band_hashes(sig, bands, rows)):
                out[f"band_{b}"].append(h)
    return out


def first_of_equal(keys: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Among rows `candidates` (ascending indices), pair each row whose key equals an earlier row's key with
    the earliest such row: returns (later rows, their earliest match)."""
    order = np.argsort(keys[candidates], kind="stable")
    sorted_rows = candidates[order]
    sorted_keys = keys[sorted_rows]
    starts = np.ones(len(sorted_rows), dtype=bool)
    starts[1:] = sorted_keys[1:] != sorted_keys[:-1]
    group_first = sorted_rows[starts][np.cumsum(starts) - 1]
    return sorted_rows[~starts], group_first[~starts]


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    return float(np.mean(sig_a == sig_b))
