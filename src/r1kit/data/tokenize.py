"""Tokenize cleaned records for training, and pack them.

Conversations go through the tokenizer's chat template, which marks assistant tokens (`{% generation %}`),
so the loss can be restricted to what the model should learn to say; plain text (pretraining) is BOS + text
+ EOS with every token trained. Sequences longer than `max_seq_length` are truncated or dropped, and both are
counted: `TokenizeStats` is what the training stage reports.

Packing is TRL's best-fit-decreasing packer: whole examples are placed into rows of `seq_length` tokens and
each row records its examples' lengths (`seq_lengths`), from which the padding-free collator builds
`position_ids` that restart at every example, so attention never crosses from one example into the next.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from r1kit.errors import UserError
from r1kit.quiet import quiet_datasets

Truncation = Literal["truncate", "drop"]


@dataclass
class TokenizeStats:
    num_examples: int
    num_kept: int
    num_truncated: int
    """Examples cut to `max_seq_length` (kept, losing their tail)."""
    num_dropped_too_long: int
    """Examples over `max_seq_length` dropped (truncation: drop)."""
    num_dropped_no_trainable_tokens: int
    """Examples left with no assistant token to learn from after truncation."""
    num_tokens: int
    num_trainable_tokens: int

    def to_dict(self) -> dict:
        return asdict(self)


def chat_messages(messages: list[dict]) -> list[dict]:
    """r1kit record messages → the chat template's message dicts (`reasoning` as `reasoning_content`)."""
    out = []
    for m in messages:
        message = {"role": m["role"], "content": m["content"]}
        if m.get("reasoning") is not None:  # "" is an empty think block, not a missing one
            message["reasoning_content"] = m["reasoning"]
        out.append(message)
    return out


def encode(row: dict, tokenizer, assistant_only_loss: bool) -> tuple[list[int], list[int]]:
    """(input_ids, loss mask) of one record, untruncated."""
    if row["kind"] == "text":
        ids = tokenizer(row["text"])["input_ids"] + [tokenizer.eos_token_id]
        return ids, [1] * len(ids)
    encoded = tokenizer.apply_chat_template(
        chat_messages(row["messages"]), tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids = list(encoded["input_ids"])
    mask = list(encoded["assistant_masks"]) if assistant_only_loss else [1] * len(ids)
    return ids, mask


def _tokenize_batch(batch, *, tokenizer, max_seq_length, assistant_only_loss, truncation):
    out = {"input_ids": [], "assistant_masks": [], "status": [], "num_tokens": [], "num_trainable": []}
    for kind, messages, text in zip(batch["kind"], batch["messages"], batch["text"]):
        ids, mask = encode({"kind": kind, "messages": messages, "text": text}, tokenizer, assistant_only_loss)
        status = "ok"
        if max_seq_length is not None and len(ids) > max_seq_length:
            status = "too_long" if truncation == "drop" else "truncated"
            ids, mask = ids[:max_seq_length], mask[:max_seq_length]
        if status != "too_long" and not any(mask):
            status = "no_trainable_tokens"
        out["input_ids"].append(ids)
        out["assistant_masks"].append(mask)
        out["status"].append(status)
        out["num_tokens"].append(len(ids))
        out["num_trainable"].append(sum(mask))
    return out


def tokenize_dataset(
    ds,
    tokenizer,
    *,
    max_seq_length: int | None,
    assistant_only_loss: bool = True,
    truncation: Truncation = "truncate",
    num_proc: int | None = None,
):
    """Tokenize a dataset of records → (dataset with `input_ids` and `assistant_masks`, TokenizeStats)."""
    import pyarrow.compute as pc

    quiet_datasets()
    if tokenizer.chat_template is None and any(kind != "text" for kind in ds.unique("kind")):
        raise UserError("the tokenizer has no chat template, and the data holds conversations")
    tokenized = ds.map(
        _tokenize_batch,
        batched=True,
        batch_size=500,
        remove_columns=ds.column_names,
        desc="tokenize",
        num_proc=num_proc if num_proc and len(ds) >= 4000 else None,
        fn_kwargs=dict(
            tokenizer=tokenizer,
            max_seq_length=max_seq_length,
            assistant_only_loss=assistant_only_loss,
            truncation=truncation,
        ),
    )
    kept = tokenized.filter(lambda b: [s in ("ok", "truncated") for s in b["status"]], batched=True)
    statuses = tokenized.with_format("arrow")["status"]  # counted in Arrow: no Python list per example

    def count(status: str) -> int:
        return pc.sum(pc.equal(statuses, status)).as_py() or 0

    def total(column: str) -> int:
        return pc.sum(kept.with_format("arrow")[column]).as_py() or 0

    stats = TokenizeStats(
        num_examples=len(tokenized),
        num_kept=len(kept),
        num_truncated=count("truncated"),
        num_dropped_too_long=count("too_long"),
        num_dropped_no_trainable_tokens=count("no_trainable_tokens"),
        num_tokens=total("num_tokens"),
        num_trainable_tokens=total("num_trainable"),
    )
    return kept.remove_columns(["status", "num_tokens", "num_trainable"]), stats


def pack(ds, seq_length: int):
    """Pack tokenized examples into rows of at most `seq_length` tokens (TRL's best-fit decreasing), keeping
    each example whole; rows carry `seq_lengths` for padding-free attention."""
    from trl import pack_dataset

    return pack_dataset(ds, seq_length, strategy="bfd")


def position_ids(seq_lengths: list[int]) -> list[int]:
    """Position ids of a packed row: counting restarts at each example (what padding-free attention uses to
    keep examples apart)."""
    return [i for length in seq_lengths for i in range(length)]


def load_split(data_dir: str | Path, split: str):
    """The `split` (train or validation) of a `data clean` output folder as a datasets.Dataset."""
    from datasets import Dataset

    quiet_datasets()
    shards = sorted((Path(data_dir) / split).glob("*.parquet"))
    if not shards:
        raise UserError(f"{data_dir} has no {split} data ({split}/*.parquet): run `r1kit data clean` first")
    return Dataset.from_parquet([str(s) for s in shards])
