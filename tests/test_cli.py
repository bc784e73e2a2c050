"""The `r1kit` command as a user runs it: real subprocesses, exit codes, and messages instead of tracebacks."""

import json
import re

import pytest


def assert_user_error(done, *fragments):
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error:")
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr


def test_unknown_recipe_key(cli, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  learning_rat: 1.0e-4\n")
    assert_user_error(cli("recipe", "show", str(recipe)), "train.learning_rat: unknown key", "learning_rate")


def test_bad_override_value(cli):
    assert_user_error(cli("recipe", "show", "--set", "train.precision=fp8"), "train.precision", "'bf16'")


def test_missing_recipe_file(cli, tmp_path):
    assert_user_error(cli("recipe", "show", str(tmp_path / "nope.yaml")), "recipe not found")


def test_recipe_show_prints_the_resolved_recipe(cli):
    done = cli("recipe", "show", "--set", "train.learning_rate=3e-5", check=True)
    assert "learning_rate: 3.0e-05" in done.stdout
    assert "host: 127.0.0.1" in done.stdout


def test_recipe_fields(cli):
    done = cli("recipe", "fields", "serve", check=True)
    assert "serve.api_key" in done.stdout and "Authorization" in done.stdout
    assert_user_error(cli("recipe", "fields", "nonsense"), "no recipe section 'nonsense'")


def test_bad_preset_name(cli, tokenizer_dir, tmp_path):
    done = cli("model", "init", "gpt-5", "--tokenizer", str(tokenizer_dir), "--out", str(tmp_path / "m"))
    assert_user_error(done, "unknown preset 'gpt-5'", "tiny-deepseek-v3")


def test_missing_tokenizer_folder(cli, tmp_path):
    done = cli(
        "model", "init", "tiny-qwen2", "--tokenizer", str(tmp_path / "none"), "--out", str(tmp_path / "m")
    )
    assert_user_error(done, "tokenizer folder not found")


@pytest.mark.parametrize(
    "content, fragment",
    [(b"", "is empty"), (b"\xff\xfe\x00h\x00i", "not UTF-8")],
    ids=["empty", "utf16"],
)
def test_bad_tokenizer_input(cli, tmp_path, content, fragment):
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    assert_user_error(
        cli("tokenizer", "train", "--input", str(path), "--out", str(tmp_path / "tok")), fragment
    )


def test_missing_tokenizer_input(cli, tmp_path):
    done = cli("tokenizer", "train", "--input", str(tmp_path / "none.txt"), "--out", str(tmp_path / "tok"))
    assert_user_error(done, "tokenizer input not found")


def test_tokenizer_flags_are_validated_like_recipe_fields(cli, tmp_path, reference_data):
    done = cli(
        "tokenizer",
        "train",
        "--input",
        str(reference_data / "gsm8k" / "test.jsonl"),
        "--out",
        str(tmp_path / "tok"),
        "--vocab-size",
        "12",
    )
    assert_user_error(done, "tokenizer.vocab_size", "greater than or equal to 300")


@pytest.mark.slow
def test_tokenizer_model_generate_chain(cli, tmp_path, reference_data):
    gsm8k, math500 = reference_data / "gsm8k" / "test.jsonl", reference_data / "math500" / "test.jsonl"
    done = cli(
        "tokenizer",
        "train",
        "--input",
        str(gsm8k),
        str(math500),
        "--vocab-size",
        "700",
        "--out",
        str(tmp_path / "tok"),
        check=True,
    )
    assert "vocabulary of 700 tokens" in done.stdout
    assert (tmp_path / "tok" / "config.yaml").is_file()  # the resolved settings travel with the output

    done = cli(
        "model",
        "init",
        "tiny-deepseek-v3",
        "--tokenizer",
        str(tmp_path / "tok"),
        "--out",
        str(tmp_path / "model"),
        check=True,
    )
    assert "tiny-deepseek-v3" in done.stdout

    done = cli(
        "generate",
        "--model",
        str(tmp_path / "model"),
        "--prompt",
        "What is 6 * 7?",
        "--max-new-tokens",
        "5",
        "--temperature",
        "0",
        check=True,
    )
    generated = int(re.search(r"(\d+) tokens in [\d.]+ s", done.stdout).group(1))
    assert 1 <= generated <= 5
    assert "What is 6 * 7?" in done.stdout


def test_generate_rejects_bad_values(cli, tmp_path):
    assert_user_error(
        cli("generate", "--model", str(tmp_path / "none"), "--prompt", "hi"), "model folder not found"
    )


@pytest.mark.slow
def test_demo_runs_end_to_end(cli, tmp_path):
    # The shipped demo recipe at a few training steps each; `make demo` runs the same code with its own.
    out_dir = tmp_path / "demo"
    (out_dir / "04-sft").mkdir(parents=True)  # an earlier demo's stage: the demo runs afresh
    (out_dir / "04-sft" / "stage.json").write_text("{}")
    overrides = [
        "train.max_steps=10",
        "train.eval_steps=5",
        "train.eval_delay=0",
        "train.save_steps=10",
        "eval.during_training_problems=8",
        "eval.max_new_tokens=8",
        "eval.limit=16",
        "grpo.max_completion_length=8",
        "experiment.budget=steps",
        "experiment.amount=2",
        "experiment.sft_set=[train.eval_steps=1, train.eval_delay=0]",
        "experiment.grpo_set=[train.per_device_batch_size=16, train.gradient_accumulation_steps=1, "
        "train.eval_steps=1, train.eval_delay=0]",
    ]
    done = cli("demo", "--out", str(out_dir), *[a for o in overrides for a in ("--set", o)], check=True)
    assert "doctor:" in done.stdout and "0 fail" in done.stdout
    assert "data: 4000 records in" in done.stdout
    assert "SFT: 10 steps; then 2 steps each from there: more SFT 2 steps, GRPO 2 steps" in done.stdout
    compared = json.loads((out_dir / "05-experiment" / "report.json").read_text())
    after = json.loads((out_dir / "06-eval" / "eval" / "report.json").read_text())
    # the evaluation's first three held-out answers, each with its verdict
    heldout = after["suites"]["heldout"]["examples"]
    verdicts = re.findall(r"gold +(\d+): (correct|not correct)", done.stdout)
    assert verdicts == [(e["gold"], "correct" if e["correct"] else "not correct") for e in heldout]
    assert len(verdicts) == 3
    # the comparison printed is the experiment's: the same start, budget and test problems for each arm
    arms = compared["arms"]
    assert list(arms) == ["sft", "sft-more", "grpo"]
    assert (
        f"test accuracy ({compared['test_problems']} problems, greedy): "
        f"{100 * arms['sft']['greedy']['mean']:.1f}% after SFT, "
        f"{100 * arms['sft-more']['greedy']['mean']:.1f}% with more SFT, "
        f"{100 * arms['grpo']['greedy']['mean']:.1f}% after GRPO"
    ) in done.stdout
    assert compared["verdict"] in done.stdout.replace("\n", " ")
    # the pipeline ran every stage, each from what the one before made; the GRPO arm's model goes on
    assert sorted(p.name for p in out_dir.glob("[0-9][0-9]-*")) == [
        "01-synth", "02-data", "03-tokenizer", "04-sft", "05-experiment", "06-eval", "07-export"
    ]  # fmt: skip
    assert (out_dir / "04-sft" / "final" / "model.safetensors").is_file()
    grpo_run = next(r for r in compared["runs"] if r["arm"] == "grpo")
    assert grpo_run["model_dir"].startswith(str(out_dir / "05-experiment" / "grpo"))
    assert f"path: {grpo_run['model_dir']}" in (out_dir / "06-eval" / "config.yaml").read_text()
    assert compared["start"] == str(out_dir / "04-sft" / "final")
    assert (
        f"tokenizer: {out_dir / '03-tokenizer' / 'tokenizer'}"
        in (out_dir / "04-sft" / "config.yaml").read_text()
    )
    assert "preset: mini-qwen2" in (out_dir / "config.yaml").read_text()
    # the export keeps whichever of the original and the quantised models measured fastest here, and says so
    exported = json.loads((out_dir / "07-export" / "model" / "export.json").read_text())
    speeds = {method: m["tokens_per_second"] for method, m in exported["measured"].items()}
    assert set(speeds) == {"none", "int8-dynamic", "int8", "gguf-f16", "gguf-q8_0", "gguf-q4_k_m"}
    assert exported["quantize"] == max(speeds, key=speeds.get)
    assert re.search(
        rf"export {exported['quantize']}: [\d.]+ -> [\d.]+ MiB, \d+ -> \d+ tokens/s", done.stdout
    )
    # a quantised export is evaluated again on the held-out problems the eval stage scored its source on
    stage = json.loads((out_dir / "07-export" / "stage.json").read_text())["summary"]
    if exported["quantize"] != "none":
        kept = stage["accuracy"]["heldout"]
        assert kept["before"] == after["suites"]["heldout"]["accuracy"] and 0 <= kept["after"] <= 1
        assert f"heldout accuracy {100 * kept['before']:.1f}% -> {100 * kept['after']:.1f}%" in done.stdout
    assert "served at http://127.0.0.1:" in done.stdout and "content" in done.stdout
    # the report: the figures of this run, the served answer, and the plots it links to exist
    report = (out_dir / "report.md").read_text()
    assert f"report: {out_dir / 'report.md'}" in done.stdout.replace("\n", "")
    assert f"**{compared['verdict']}**" in report
    for arm, name in (("sft", "cold-start SFT"), ("sft-more", "more SFT"), ("grpo", "GRPO")):
        assert f"| {name} | " in report and f"{100 * arms[arm]['greedy']['mean']:.1f}% (" in report
    assert f"{100 * after['suites']['heldout']['accuracy']:.1f}% greedy on all" in report
    assert "`reasoning_content`" in report and "mean reward" in report and "| total |" in report
    assert f"int8-dynamic {exported['measured']['int8-dynamic']['size_mib']:.1f} MiB at" in report
    precision = json.loads((out_dir / "04-sft" / "metrics.jsonl").read_text().splitlines()[0])["precision"]
    assert f"training in {precision}" in report
    assert "stopped at its step limit before reaching 25.0%" in report  # 10 steps: the cold start is short
    for link in re.findall(r"!?\[[^]]*\]\(([^)]+)\)", report):
        assert (out_dir / link).is_file(), link
