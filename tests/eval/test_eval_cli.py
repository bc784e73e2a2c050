"""`r1kit eval` on a local tiny model from the command line: every report file, the settings and seeds in
it, reproducible samples, and `eval compare`."""

import json

import pytest


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tokenizer_dir):
    from r1kit.models.create import init_model

    out_dir = tmp_path_factory.mktemp("eval") / "tiny"
    init_model("tiny-deepseek-v3", tokenizer_dir, out_dir, seed=0)
    return out_dir


def run_eval(cli, model, out_dir, *extra):
    return cli(
        "eval",
        "--model",
        str(model),
        "--suite",
        "gsm8k",
        "--suite",
        "math500",
        "--suite",
        "perplexity",
        "--suite",
        "speed",
        "--limit",
        "6",
        "--num-samples",
        "2",
        "--set",
        "eval.pass_k=[1,2]",
        "--set",
        "eval.max_new_tokens=16",
        "--set",
        "eval.speed_requests=3",
        "--out",
        str(out_dir),
        *extra,
        check=True,
    )


@pytest.mark.slow
def test_local_eval_writes_the_report(tiny_model, tmp_path, cli):
    done = run_eval(cli, tiny_model, tmp_path / "a")
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert set(report["suites"]) == {"gsm8k", "math500", "perplexity", "speed"}
    math500 = report["suites"]["math500"]
    assert math500["problems"] == 6 and math500["samples_per_problem"] == 2 and 0 <= math500["accuracy"] <= 1
    assert set(math500["by_tag"]) == {"subject", "level"} and "bleu4" in math500 and "rouge_l" in math500
    assert report["suites"]["perplexity"]["perplexity"] > 1
    assert report["suites"]["speed"]["requests"] == 3 and report["suites"]["speed"]["tokens_per_second"] > 0
    assert report["settings"]["seed"] == 42 and report["settings"]["top_p"] == 0.95
    assert report["versions"]["transformers"]
    plots = {p.name for p in (tmp_path / "a" / "plots").iterdir()}
    assert {"latency.png", "math500_accuracy_by_subject.png", "math500_accuracy_by_level.png"} <= plots
    assert all((tmp_path / "a" / "plots" / p).stat().st_size > 1000 for p in plots)
    markdown = (tmp_path / "a" / "report.md").read_text()
    assert "| gsm8k | 6 |" in markdown and "Perplexity" in markdown and "plots/latency.png" in markdown
    assert "perplexity" in done.stdout

    run_eval(cli, tiny_model, tmp_path / "b")  # the same recipe and seed give the same samples
    again = json.loads((tmp_path / "b" / "report.json").read_text())
    assert [e["answer"] for e in again["suites"]["gsm8k"]["examples"]] == [
        e["answer"] for e in report["suites"]["gsm8k"]["examples"]
    ]

    compared = cli("eval", "compare", str(tmp_path / "a"), str(tmp_path / "b"), check=True).stdout
    assert "gsm8k accuracy" in compared and "+0.0 pts" in compared


def test_training_curves_are_plotted_from_a_run(tiny_model, tmp_path, cli):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    events = [{"step": s, "split": "train", "loss": 3.0 / s} for s in range(1, 6)] + [
        {"step": 5, "split": "eval", "loss": 0.9, "accuracy": 0.25}
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    cli(
        "eval",
        "--model",
        str(tiny_model),
        "--suite",
        "perplexity",
        "--limit",
        "3",
        "--curves-from",
        str(run_dir),
        "--out",
        str(tmp_path / "e"),
        check=True,
    )
    assert (tmp_path / "e" / "plots" / "training_curves.png").stat().st_size > 1000


def test_bad_invocations(tiny_model, tmp_path, cli):
    done = cli("eval", "--suite", "gsm8k", "--out", str(tmp_path / "x"))
    assert done.returncode == 2 and "--model" in done.stderr
    done = cli("eval", "--model", str(tiny_model), "--suite", "mmlu")
    assert done.returncode == 2 and "eval.suites" in done.stderr
    done = cli("eval", "compare", str(tmp_path))
    assert done.returncode == 2 and "usage" in done.stderr
    done = cli("eval", "compare", str(tmp_path), str(tmp_path))
    assert done.returncode == 2 and "no report.json" in done.stderr


@pytest.mark.slow
def test_a_lora_adapter_is_evaluated_on_its_base(tiny_model, tmp_path, cli):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model),
        LoraConfig(r=2, target_modules=["q_a_proj", "kv_a_proj_with_mqa"]),
    )
    model.save_pretrained(tmp_path / "adapter")  # no tokenizer here: the base's is used
    cli(
        "eval",
        "--model",
        str(tmp_path / "adapter"),
        "--suite",
        "gsm8k",
        "--limit",
        "2",
        "--set",
        "eval.max_new_tokens=8",
        "--out",
        str(tmp_path / "e"),
        check=True,
    )
    assert json.loads((tmp_path / "e" / "report.json").read_text())["suites"]["gsm8k"]["problems"] == 2
