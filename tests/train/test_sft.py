"""Training on CPU with the tiny presets: real trainers, real files, real subprocesses and signals."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from r1kit.errors import UserError
from r1kit.train.sft import train_sft


def records(run_dir, split):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == split]


def test_loss_decreases_and_the_run_folder_is_complete(recipe_for, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = tmp_path / "run"
    result = train_sft(
        recipe_for("train.max_steps=30", "train.eval_steps=10", "train.save_steps=10"), run_dir
    )
    assert result.global_step == 30 and result.stopped_by is None

    train = records(run_dir, "train")
    assert [r["step"] for r in train] == list(range(1, 31))
    first, last = sum(r["loss"] for r in train[:3]) / 3, sum(r["loss"] for r in train[-3:]) / 3
    assert last < first - 1.0, (first, last)
    assert all(r["tokens_per_second"] > 0 for r in train[1:])
    evals = records(run_dir, "eval")
    assert [r["step"] for r in evals] == [10, 20, 30]
    assert all(math.isclose(r["perplexity"], math.exp(r["loss"]), rel_tol=1e-6) for r in evals)
    assert evals[-1]["loss"] < evals[0]["loss"]
    (run_record,) = records(run_dir, "run")
    assert run_record["versions"]["torch"] and run_record["seed"] == 42
    assert run_record["train_tokens"]["num_kept"] > 200
    # MFU: the FLOPs of the tokens trained per second over the peak measured when training began
    assert run_record["peak_tflops"] > 0
    assert all(0 < r["mfu"] < 1 for r in train[1:])
    assert (run_dir / "config.yaml").read_text().count("tiny-qwen2") == 1

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    assert len(events.Scalars("train/loss")) == 30
    assert [e.step for e in events.Scalars("eval/perplexity")] == [10, 20, 30]
    assert events.Scalars("train/tokens_per_second")[-1].value > 0
    assert events.Scalars("train/mfu")[-1].value > 0

    # final/ is a Hugging Face folder plain transformers loads, and it is the trained model.
    model = AutoModelForCausalLM.from_pretrained(result.final_dir)
    tokenizer = AutoTokenizer.from_pretrained(result.final_dir)
    ids = tokenizer("What is 12 + 34?", return_tensors="pt")["input_ids"]
    assert torch.isfinite(model(ids).logits).all()
    assert model.generation_config.temperature == 0.6
    # keep_best 1: the latest checkpoint and the best of the others by eval loss.
    best = min(evals[:-1], key=lambda r: r["loss"])["step"]
    assert {int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()} == {30, best}


def test_top_k_retention_keeps_k_plus_one(recipe_for, tmp_path):
    run_dir = tmp_path / "run"
    train_sft(
        recipe_for(
            "train.max_steps=24",
            "train.eval_steps=4",
            "train.save_steps=4",
            "train.keep_best=2",
            "train.early_stopping_patience=null",
        ),
        run_dir,
    )
    kept = {int(p.name): p for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()}
    assert len(kept) == 3
    assert 24 in kept
    scores = {r["step"]: r["loss"] for r in records(run_dir, "eval") if r["step"] != 24}
    best_two = sorted(scores, key=scores.get)[:2]
    assert set(kept) == {24, *best_two}


def test_early_stopping_on_a_plateau(recipe_for, tmp_path):
    plateau = [
        "train.learning_rate=1e-9",
        "train.max_steps=60",
        "train.eval_steps=2",
        "train.save_steps=2",
        "train.early_stopping_patience=2",
        "train.early_stopping_min_delta=0.01",
    ]
    run_dir = tmp_path / "run"
    result = train_sft(recipe_for(*plateau), run_dir)
    # Evaluations at 2, 4, 6: the first sets the best, the next two do not improve on it by 0.01.
    assert result.global_step == 6
    assert [r["step"] for r in records(run_dir, "eval")] == [2, 4, 6]
    # With a delay, the first evaluation (and the best to beat) comes at the first multiple of 2 from step 3.
    delayed = train_sft(recipe_for(*plateau, "train.eval_delay=3"), tmp_path / "delayed")
    assert delayed.global_step == 8
    assert [r["step"] for r in records(tmp_path / "delayed", "eval")] == [4, 6, 8]


def test_stop_at_metric_ends_the_run_when_good_enough(recipe_for, tmp_path):
    from r1kit.errors import UserError

    quick = [
        "train.max_steps=40",
        "train.eval_steps=2",
        "train.save_steps=100",
        "train.early_stopping_patience=null",
    ]
    # eval_loss starts near ln(vocabulary) and falls: a target just under the first value is reached soon after
    first = train_sft(recipe_for(*quick, "train.max_steps=2"), tmp_path / "probe")
    start = records(tmp_path / "probe", "eval")[0]["loss"]
    run_dir = tmp_path / "run"
    result = train_sft(recipe_for(*quick, f"train.stop_at_metric={start - 0.3}"), run_dir)
    losses = [r["loss"] for r in records(run_dir, "eval")]
    assert first.global_step == 2 and 2 < result.global_step < 40
    assert losses[-1] <= start - 0.3 < min(losses[:-1])  # stopped at the first evaluation that got there
    assert result.global_step == records(run_dir, "eval")[-1]["step"]
    assert (run_dir / "checkpoints" / str(result.global_step)).is_dir()
    # a run with no validation split cannot measure it
    no_validation = tmp_path / "data"
    shutil.copytree(recipe_for().train.dataset, no_validation, ignore=shutil.ignore_patterns("validation"))
    with pytest.raises(UserError, match="no validation split"):
        train_sft(
            recipe_for(*quick, "train.stop_at_metric=0.5", f"train.dataset={no_validation}"), tmp_path / "x"
        )


def test_lora_adapter_trains_and_loads_in_peft(recipe_for, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run_dir = tmp_path / "run"
    result = train_sft(
        recipe_for(
            "train.method=lora",
            "train.lora.r=4",
            "train.max_steps=6",
            "train.learning_rate=1e-2",
            "train.save_merged=true",
        ),
        run_dir,
    )
    adapter_dir = result.final_dir / "adapter"
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(run_dir / "base")  # a preset's base is saved with the run
    base = AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"])
    model = PeftModel.from_pretrained(base, adapter_dir)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: nonzero means it trained
    merged = AutoModelForCausalLM.from_pretrained(result.final_dir)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, merged(ids).logits, atol=1e-4)


def test_refuses_to_start_over_existing_checkpoints(recipe_for, tmp_path):
    run_dir = tmp_path / "run"
    train_sft(recipe_for("train.max_steps=6"), run_dir)
    with pytest.raises(UserError, match="already holds checkpoints"):
        train_sft(recipe_for("train.max_steps=6"), run_dir)


KILL_AFTER_SAVE = """
import os, signal, sys
from r1kit.train import callbacks
publish = callbacks.CheckpointPublisher.on_save
def on_save(self, args, state, control, **kwargs):
    publish(self, args, state, control, **kwargs)
    if state.global_step == int(os.environ["KILL_AT_STEP"]):
        os.kill(os.getpid(), signal.SIGKILL)
callbacks.CheckpointPublisher.on_save = on_save
from r1kit.cli import main
sys.argv = ["r1kit", *sys.argv[1:]]
main()
"""


def run_cli_subprocess(args, env=None, code=None):
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "r1kit", *args]
    return subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600
    )


@pytest.mark.slow
def test_killed_and_resumed_run_matches_an_uninterrupted_one(recipe_for, tmp_path):
    recipe = recipe_for("train.max_steps=12", "train.save_steps=6", "train.eval_steps=6")
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(recipe.to_yaml())

    reference = tmp_path / "reference"
    run_cli_subprocess(["train", "sft", str(recipe_path), "--out", str(reference)])
    expected = {r["step"]: r["loss"] for r in records(reference, "train")}
    assert sorted(expected) == list(range(1, 13))

    interrupted = tmp_path / "interrupted"
    done = run_cli_subprocess(
        ["train", "sft", str(recipe_path), "--out", str(interrupted)],
        env={"KILL_AT_STEP": "6"},
        code=KILL_AFTER_SAVE,
    )
    assert done.returncode == -signal.SIGKILL
    assert sorted(p.name for p in (interrupted / "checkpoints").iterdir() if p.name.isdigit()) == ["6"]
    assert not (interrupted / "final").exists()

    done = run_cli_subprocess(
        ["train", "sft", str(recipe_path), "--out", str(interrupted), "--resume", "auto"]
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = {r["step"]: r["loss"] for r in records(interrupted, "train")}  # steps 1-6, then 7-12 after resuming
    assert sorted(got) == list(range(1, 13))
    for step in range(1, 13):
        assert got[step] == pytest.approx(expected[step], abs=1e-5), step
    assert (interrupted / "final" / "model.safetensors").is_file()


def test_a_crash_while_saving_the_final_model_is_redone_by_a_rerun(recipe_for, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    import r1kit.train.run

    recipe = recipe_for("train.max_steps=4", "train.save_steps=4", "train.eval_steps=4")
    run_dir = tmp_path / "run"

    def disk_full(model, tokenizer, out_dir, *args, **kwargs):
        model.config.save_pretrained(out_dir)  # part of the folder is written, then the save fails
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(r1kit.train.run, "_write_final", disk_full)
    with pytest.raises(OSError, match="No space left"):
        train_sft(recipe, run_dir)
    assert not (run_dir / "final").exists()  # no half-written model that looks finished
    assert (run_dir / "checkpoints" / "4").is_dir()

    monkeypatch.undo()
    result = train_sft(recipe, run_dir, resume="auto")
    assert result.final_dir == run_dir / "final" and result.global_step == 4
    AutoModelForCausalLM.from_pretrained(result.final_dir)
    assert not (run_dir / ".final.partial").exists()
    assert [r["step"] for r in records(run_dir, "train")] == [1, 2, 3, 4]  # nothing trained twice
    with pytest.raises(UserError, match="is complete.*final model is saved"):
        train_sft(recipe, run_dir, resume="auto")


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(recipe_for, tmp_path):
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(
        recipe_for("train.max_steps=100000", "train.save_steps=50000", "train.eval_steps=50000").to_yaml()
    )
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "r1kit", "train", "sft", str(recipe_path), "--out", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while (time.time() < deadline and not (run_dir / "metrics.jsonl").exists()) or len(
        records(run_dir, "train")
    ) < 3:
        time.sleep(0.2)
        assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "--resume auto" in stdout and "Traceback" not in stderr
    (saved,) = [p for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()]
    assert 3 <= int(saved.name) < 100000
    assert (saved / "trainer_state.json").is_file() and (saved / "optimizer.pt").is_file()


def test_weights_and_biases_offline(recipe_for, tmp_path, monkeypatch):
    for name in ("WANDB_PROJECT", "WANDB_MODE", "WANDB_DIR", "WANDB_NAME", "WANDB_SILENT"):
        monkeypatch.setenv(name, "")  # restored after the test: configure_wandb sets them for the run
    run_dir = tmp_path / "run"
    train_sft(recipe_for("train.max_steps=4", "train.wandb_project=r1kit-test"), run_dir)
    (offline_run,) = (run_dir / "wandb").glob("offline-run-*")
    assert list(offline_run.glob("*.wandb"))  # the run's event log, ready for `wandb sync`


def test_qlora_on_cpu(recipe_for, tmp_path):
    pytest.importorskip("bitsandbytes", reason="the `qlora` extra (installed by make test)")
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    run_dir = tmp_path / "run"
    result = train_sft(
        recipe_for("train.method=qlora", "train.lora.r=4", "train.max_steps=4", "train.learning_rate=1e-2"),
        run_dir,
    )
    adapter = load_file(result.final_dir / "adapter" / "adapter_model.safetensors")
    assert any("lora_B" in name and tensor.abs().sum() > 0 for name, tensor in adapter.items())
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(run_dir / "base"), result.final_dir / "adapter"
    )
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


def test_curriculum_raises_the_sequence_length_by_stages(recipe_for, tmp_path):
    run_dir = tmp_path / "run"
    result = train_sft(
        recipe_for(
            "train.curriculum=[{max_seq_length: 64, until_step: 6}]",
            "train.max_seq_length=256",
            "train.max_steps=12",
            "train.warmup_ratio=0",
        ),
        run_dir,
    )
    assert result.global_step == 12
    assert [r["max_seq_length"] for r in records(run_dir, "run")] == [64, 256]
    train = records(run_dir, "train")
    assert [r["step"] for r in train] == list(range(1, 13))
    tokens = [train[0]["num_input_tokens_seen"]] + [
        b["num_input_tokens_seen"] - a["num_input_tokens_seen"] for a, b in zip(train, train[1:])
    ]
    assert max(tokens[:6]) <= 64 < max(tokens[6:]) <= 256  # one packed row per step
    rates = [r["learning_rate"] for r in train]
    assert rates == sorted(rates, reverse=True)  # one cosine schedule over both stages, no restart


def test_curriculum_needs_rising_stages_below_max_steps():
    from r1kit.config import load_recipe

    with pytest.raises(UserError, match="curriculum needs max_steps"):
        load_recipe(None, ["train.curriculum=[{max_seq_length: 64, until_step: 10}]"])
    with pytest.raises(UserError, match="curriculum needs max_steps"):
        load_recipe(
            None,
            [
                "train.max_steps=20",
                "train.curriculum=[{max_seq_length: 64, until_step: 10}, "
                "{max_seq_length: 128, until_step: 5}]",
            ],
        )


def test_out_of_memory_ends_with_advice(recipe_for, tmp_path, monkeypatch):
    import trl

    def out_of_memory(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trl.SFTTrainer, "train", out_of_memory)
    with pytest.raises(
        UserError, match="out of memory. Try, in order: a smaller train.per_device_batch_size"
    ):
        train_sft(recipe_for(), tmp_path / "run")


def test_pretrain_trains_on_every_token(recipe_for, tmp_path):
    run_dir = tmp_path / "run"
    train_sft(recipe_for("train.max_steps=3"), run_dir, mode="pretrain")
    (run_record,) = records(run_dir, "run")
    assert run_record["mode"] == "pretrain"
    tokens = run_record["train_tokens"]
    assert tokens["num_trainable_tokens"] == tokens["num_tokens"] > 0

    sft_dir = tmp_path / "sft"
    train_sft(recipe_for("train.max_steps=3"), sft_dir)
    sft_tokens = records(sft_dir, "run")[0]["train_tokens"]
    assert sft_tokens["num_tokens"] == tokens["num_tokens"]
    assert sft_tokens["num_trainable_tokens"] < sft_tokens["num_tokens"]  # prompts are not trained on


def test_accuracy_at_each_validation_drives_the_best_checkpoint(recipe_for, tmp_path):
    run_dir = tmp_path / "run"
    train_sft(
        recipe_for(
            "train.max_steps=12",
            "eval.during_training=true",
            "eval.during_training_problems=6",
            "eval.max_new_tokens=24",
            "train.metric_for_best_model=eval_accuracy",
            "train.keep_best=1",
            "train.final_model=best",
        ),
        run_dir,
    )
    evals = records(run_dir, "eval")
    assert [r["step"] for r in evals] == [6, 12]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in evals)
    state = json.loads((run_dir / "checkpoints" / "12" / "trainer_state.json").read_text())
    assert state["best_metric"] == max(r["accuracy"] for r in evals)


def test_sampled_validation_measures_grpo_groups_without_moving_the_training_randomness(recipe_for, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from r1kit.eval.during_training import Sampling, answers
    from r1kit.eval.suites import heldout

    run_dir = tmp_path / "run"
    recipe = recipe_for(
        "train.max_steps=6",
        "eval.during_training=true",
        "eval.during_training_problems=6",
        "eval.during_training_samples=4",
        "eval.max_new_tokens=24",
    )
    train_sft(recipe, run_dir)
    (evaluation,) = records(run_dir, "eval")
    assert 0.0 <= evaluation["sampled_accuracy"] <= 1.0
    assert 0.0 <= evaluation["mixed_groups"] <= 1.0

    final = run_dir / "final"
    model, tokenizer = (
        AutoModelForCausalLM.from_pretrained(final).eval(),
        AutoTokenizer.from_pretrained(final),
    )
    problems = heldout(recipe.train.dataset, 3)
    state = torch.get_rng_state()
    drawn = [
        [
            [s.text for s in group]
            for group in answers(model, tokenizer, problems, 12, 8, Sampling(4, 1.0, 1.0, seed))
        ]
        for seed in (7, 7, 8)
    ]
    assert torch.equal(torch.get_rng_state(), state)
    assert [len(c) for c in drawn[0]] == [4, 4, 4]  # each problem's own samples
    assert drawn[0] == drawn[1] != drawn[2]
