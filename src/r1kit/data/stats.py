"""`r1kit data stats`: token lengths of a cleaned data folder, what truncation would cut, how well it packs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from r1kit.data.tokenize import load_split, pack, tokenize_dataset

BUCKET_EDGES = [64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768]


def histogram(lengths: np.ndarray) -> list[tuple[str, int]]:
    """(label, count) per power-of-two bucket, empty buckets past the longest example left out."""
    rows, low = [], 0
    for edge in BUCKET_EDGES:
        rows.append((f"{low + 1}-{edge}", int(((lengths > low) & (lengths <= edge)).sum())))
        low = edge
        if edge >= lengths.max(initial=0):
            break
    if lengths.max(initial=0) > BUCKET_EDGES[-1]:
        rows.append((f">{BUCKET_EDGES[-1]}", int((lengths > BUCKET_EDGES[-1]).sum())))
    return rows


def _lengths(ds) -> np.ndarray:
    """Token count of each example, computed in Arrow."""
    import pyarrow.compute as pc

    return pc.list_value_length(ds.with_format("arrow")["input_ids"]).to_numpy()


def data_stats(
    data_dir: str | Path, tokenizer, *, max_seq_length: int, assistant_only_loss: bool = True
) -> dict:
    """Per split: example count, token-length percentiles and histogram, truncation at `max_seq_length`, and
    the packed row count and fill at that length."""
    report = {}
    for split in ("train", "validation"):
        if not list((Path(data_dir) / split).glob("*.parquet")):
            continue
        ds = load_split(data_dir, split)
        full, _ = tokenize_dataset(
            ds, tokenizer, max_seq_length=None, assistant_only_loss=assistant_only_loss
        )
        lengths = _lengths(full)
        fitted, stats = tokenize_dataset(
            ds, tokenizer, max_seq_length=max_seq_length, assistant_only_loss=assistant_only_loss
        )
        packed = pack(fitted, max_seq_length)
        packed_tokens = int(_lengths(packed).sum())
        report[split] = {
            "examples": len(ds),
            "tokens": int(lengths.sum()),
            "percentiles": {f"p{q}": int(np.percentile(lengths, q)) for q in (50, 90, 99)}
            | {"max": int(lengths.max())},
            "histogram": histogram(lengths),
            "at_max_seq_length": stats.to_dict(),
            "packed_rows": len(packed),
            "packing_fill": round(packed_tokens / (len(packed) * max_seq_length), 3) if len(packed) else 0.0,
        }
    return report
