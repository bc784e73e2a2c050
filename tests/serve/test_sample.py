"""Rejection sampling keeps only verified-correct completions and writes data `train sft` takes."""

import json

import pytest
from scripted import REASONING


@pytest.mark.slow
def test_only_correct_samples_are_kept(scripted_model_dir, tmp_path, cli):
    problems = tmp_path / "problems.jsonl"
    problems.write_text(
        "".join(
            json.dumps(p) + "\n"
            for p in [
                {"question": "Janet sells 9 eggs at $2 each. How much does she make?", "answer": "18"},
                {
                    "question": "Tom has 2 apples and buys 3 more. How many apples does he have?",
                    "answer": "5",
                },
                {"question": "A box holds 6 eggs. How many eggs are in 3 boxes?", "answer": "18"},
            ]
        )
    )
    off = [
        "--set",
        "data.semantic.enabled=false",
        "--set",
        "data.quality.enabled=false",
        "--set",
        "data.validation_fraction=0",
    ]
    cli("data", "clean", str(problems), "--out", str(tmp_path / "data"), *off, check=True)
    done = cli(
        "sample",
        "--model",
        str(scripted_model_dir),
        "--out",
        str(tmp_path / "samples"),
        "--set",
        f"sample.dataset={tmp_path / 'data'}",
        "--set",
        "sample.num_samples=3",
        "--set",
        "sample.keep=all",
        "--set",
        "sample.max_new_tokens=40",
        *off,
        check=True,
    )
    report = json.loads((tmp_path / "samples" / "report.json").read_text())
    # The scripted model answers \\boxed{18} to everything: right for two problems of three, every time.
    assert report == {
        "problems": 3,
        "samples": 9,
        "correct_samples": 6,
        "solved_problems": 2,
        "kept": 6,
        "truncated": 0,
        "keep": "all",
    }
    kept = [json.loads(line) for line in (tmp_path / "samples" / "samples.jsonl").read_text().splitlines()]
    assert {k["answer"] for k in kept} == {"18"}
    assert all(k["messages"][-1]["reasoning_content"] == REASONING for k in kept)
    assert "kept 6" in done.stdout
    assert list((tmp_path / "samples" / "data" / "train").glob("*.parquet"))


@pytest.mark.slow
def test_best_of_n_keeps_one_per_solved_problem(scripted_model_dir, tmp_path, cli):
    problems = tmp_path / "problems.jsonl"
    problems.write_text(json.dumps({"question": "What is 9 * 2?", "answer": "18"}) + "\n")
    off = ["--set", "data.semantic.enabled=false", "--set", "data.validation_fraction=0"]
    cli("data", "clean", str(problems), "--out", str(tmp_path / "data"), *off, check=True)
    cli(
        "sample",
        "--model",
        str(scripted_model_dir),
        "--out",
        str(tmp_path / "s"),
        "--set",
        f"sample.dataset={tmp_path / 'data'}",
        "--set",
        "sample.num_samples=4",
        "--set",
        "sample.keep=best",
        *off,
        check=True,
    )
    assert json.loads((tmp_path / "s" / "report.json").read_text())["kept"] == 1
