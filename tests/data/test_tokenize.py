import json

import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from r1kit.config import DataConfig
from r1kit.data.clean import clean
from r1kit.data.records import message, new_record
from r1kit.data.stats import data_stats, histogram
from r1kit.data.tokenize import load_split, pack, position_ids, tokenize_dataset
from r1kit.errors import UserError


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def records():
    return [
        new_record(
            "a:1",
            "problem",
            answer="5",
            messages=[message("user", "What is 2 + 3?"), message("assistant", "\\boxed{5}", "2 + 3 = 5")],
        ),
        new_record(
            "a:2",
            "chat",
            messages=[message("system", "Be brief."), message("user", "Hi"), message("assistant", "Hello.")],
        ),
        new_record("a:3", "text", text="Natalia sold clips to 48 of her friends in April."),
    ]


def test_masks_cover_only_assistant_tokens(tokenizer):
    ds, stats = tokenize_dataset(Dataset.from_list(records()), tokenizer, max_seq_length=None)
    assert stats.num_examples == stats.num_kept == 3 and stats.num_truncated == 0
    problem, chat, text = ds
    trained = tokenizer.decode([i for i, m in zip(problem["input_ids"], problem["assistant_masks"]) if m])
    assert trained == "<think>\n2 + 3 = 5\n</think>\n\n\\boxed{5}<｜end▁of▁sentence｜>"
    assert (
        tokenizer.decode([i for i, m in zip(chat["input_ids"], chat["assistant_masks"]) if m])
        == "Hello.<｜end▁of▁sentence｜>"
    )
    # Plain text: BOS + text + EOS, all trained.
    assert text["input_ids"][0] == tokenizer.bos_token_id and text["input_ids"][-1] == tokenizer.eos_token_id
    assert all(text["assistant_masks"])
    assert stats.num_tokens == sum(len(r["input_ids"]) for r in ds)
    assert stats.num_trainable_tokens == sum(sum(r["assistant_masks"]) for r in ds)


def test_loss_on_everything_when_asked(tokenizer):
    ds, _ = tokenize_dataset(
        Dataset.from_list(records()), tokenizer, max_seq_length=None, assistant_only_loss=False
    )
    assert all(all(r["assistant_masks"]) for r in ds)


def test_truncation_policies_are_counted(tokenizer):
    lengths = [
        len(r["input_ids"])
        for r in tokenize_dataset(Dataset.from_list(records()), tokenizer, max_seq_length=None)[0]
    ]
    limit = sorted(lengths)[1]  # the longest record (or two) exceed it
    ds, stats = tokenize_dataset(Dataset.from_list(records()), tokenizer, max_seq_length=limit)
    over = sum(n > limit for n in lengths)
    assert stats.num_truncated + stats.num_dropped_no_trainable_tokens == over
    assert all(len(r["input_ids"]) <= limit for r in ds)
    ds, stats = tokenize_dataset(
        Dataset.from_list(records()), tokenizer, max_seq_length=limit, truncation="drop"
    )
    assert stats.num_dropped_too_long == over and len(ds) == 3 - over


def test_truncating_away_the_answer_drops_the_example(tokenizer):
    long_prompt = new_record(
        "b:1", "chat", messages=[message("user", "word " * 200), message("assistant", "ok")]
    )
    ds, stats = tokenize_dataset(Dataset.from_list([long_prompt]), tokenizer, max_seq_length=32)
    assert stats.num_dropped_no_trainable_tokens == 1 and len(ds) == 0


def test_packing_keeps_examples_apart(tokenizer):
    rows = [new_record(f"c:{i}", "text", text=" ".join(["apples"] * (i + 3))) for i in range(12)]
    ds, _ = tokenize_dataset(Dataset.from_list(rows), tokenizer, max_seq_length=None)
    lengths = sorted(len(r["input_ids"]) for r in ds)
    packed = pack(ds, 32)
    assert len(packed) < len(ds)
    assert sorted(n for r in packed for n in r["seq_lengths"]) == lengths  # every example whole, once
    for row in packed:
        assert len(row["input_ids"]) == sum(row["seq_lengths"]) <= 32
        positions = position_ids(row["seq_lengths"])
        starts = [i for i, p in enumerate(positions) if p == 0]
        # Each example starts at position 0 and with BOS: attention restarts at every boundary.
        assert [row["input_ids"][i] for i in starts] == [tokenizer.bos_token_id] * len(row["seq_lengths"])


def test_stats_and_load_split(tmp_path, tokenizer):
    path = tmp_path / "in.jsonl"
    path.write_text(
        "".join(
            json.dumps({"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"}) + "\n"
            for i in range(40)
        )
    )
    clean(
        [path],
        tmp_path / "out",
        DataConfig(
            semantic={"enabled": False},
            decontam={"enabled": False},
            validation_fraction=0.2,
            quality={"enabled": False},
        ),
    )
    assert len(load_split(tmp_path / "out", "train")) + len(load_split(tmp_path / "out", "validation")) == 40
    report = data_stats(tmp_path / "out", tokenizer, max_seq_length=64)
    train = report["train"]
    assert train["examples"] == len(load_split(tmp_path / "out", "train"))
    assert sum(count for _, count in train["histogram"]) == train["examples"]
    assert train["percentiles"]["p50"] <= train["percentiles"]["max"] <= 64
    assert train["packed_rows"] < train["examples"] and 0 < train["packing_fill"] <= 1
    with pytest.raises(UserError, match="no train data"):
        load_split(tmp_path, "train")


def test_histogram_buckets():
    import numpy as np

    assert histogram(np.array([10, 64, 65, 300])) == [
        ("1-64", 2),
        ("65-128", 1),
        ("129-256", 0),
        ("257-512", 1),
    ]


def test_cli_stats(cli, tmp_path, tokenizer_dir):
    from r1kit.data.synth import synthesize

    path = synthesize("arithmetic", 30, tmp_path / "a.jsonl")
    clean([path], tmp_path / "out", DataConfig(semantic={"enabled": False}, validation_fraction=0.0))
    done = cli(
        "data",
        "stats",
        str(tmp_path / "out"),
        "--tokenizer",
        str(tokenizer_dir),
        "--set",
        "train.max_seq_length=64",
        check=True,
    )
    assert "train: 30 examples" in done.stdout and "truncated" in done.stdout and "packed into" in done.stdout
    done = cli("data", "stats", str(tmp_path / "out"))
    assert done.returncode == 2 and "no tokenizer" in done.stderr
