"""`r1kit pipeline`: stages chained end to end, finished ones skipped on a re-run, changed ones refused."""

import json
import os
import re
import signal
import threading
import time

import pytest

from r1kit.errors import UserError
from r1kit.pipeline import run_pipeline

GRPO = (
    "{stage: grpo, set: [train.per_device_batch_size=8, grpo.num_generations=4, grpo.max_completion_length=16,"
    " train.max_steps=2, train.save_steps=2, train.eval_steps=2]}"
)


def test_sft_then_grpo_then_a_rerun_skips_both(recipe_for, tmp_path, capfd, recwarn):
    from transformers import AutoModelForCausalLM

    recipe = recipe_for(
        "train.max_steps=4", "train.save_steps=2", "train.eval_steps=2", f"pipeline.stages=[sft, {GRPO}]"
    )
    records = run_pipeline(recipe, tmp_path / "run")
    # Each stage's console, not a terminal here: plain lines with its figures, never the logs' raw dictionaries
    console = capfd.readouterr().err
    assert re.search(r"^sft  step \d/4  loss [\d.]+  tokens/s [\d,]+", console, re.M), console[-2000:]
    assert re.search(r"^sft  validation at step 2: loss [\d.]+, perplexity", console, re.M)
    assert re.search(r"^grpo  step \d/2  loss \S+  reward [\d.]+  accuracy [\d.]+%", console, re.M)
    assert re.search(r"^sft  done: 4 steps in \dm\d\ds", console, re.M) and "grpo  done: 2 steps" in console
    assert "{'loss'" not in console and "'grad_norm'" not in console
    assert not [w for w in recwarn if "is_gradient_checkpointing" in str(w.message)]  # TRL's, at each rollout
    assert [r.stage for r in records] == ["sft", "grpo"] and not any(r.skipped for r in records)
    assert records[0].summary == {"steps": 4, "run_dir": str(tmp_path / "run" / "01-sft")}
    assert records[0].seconds > 0
    sft_dir, grpo_dir = tmp_path / "run" / "01-sft", tmp_path / "run" / "02-grpo"
    assert records[0].current.model == str(sft_dir / "final")
    assert records[1].current.model == str(grpo_dir / "final")
    grpo_config = (grpo_dir / "config.yaml").read_text()
    assert f"path: {sft_dir / 'final'}" in grpo_config  # GRPO started from the SFT model
    assert AutoModelForCausalLM.from_pretrained(grpo_dir / "final") is not None
    before = (grpo_dir / "final" / "model.safetensors").stat().st_mtime_ns

    again = run_pipeline(recipe, tmp_path / "run")
    assert all(r.skipped for r in again) and again[1].current.model == records[1].current.model
    assert (grpo_dir / "final" / "model.safetensors").stat().st_mtime_ns == before

    changed = recipe_for(
        "train.max_steps=6", "train.save_steps=2", "train.eval_steps=2", f"pipeline.stages=[sft, {GRPO}]"
    )
    with pytest.raises(UserError, match="different recipe"):
        run_pipeline(changed, tmp_path / "run")
    assert json.loads((sft_dir / "stage.json").read_text())["stage"] == "sft"


def test_an_empty_pipeline_is_refused(recipe_for, tmp_path):
    with pytest.raises(UserError, match="pipeline.stages is empty"):
        run_pipeline(recipe_for(), tmp_path / "run")


def test_a_grpo_stage_that_cannot_rank_its_validations_is_refused_before_any_stage_runs(recipe_for, tmp_path):
    # SFT validates by loss and accuracy; GRPO only by accuracy, so ranking by eval_loss would fail it later
    recipe = recipe_for("eval.during_training=true", f"pipeline.stages=[sft, {GRPO}]")
    with pytest.raises(UserError, match="eval_loss is not logged by GRPO"):
        run_pipeline(recipe, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_an_interrupted_training_stage_resumes(recipe_for, tmp_path):
    from r1kit.train.sft import train_sft

    stage_dir = tmp_path / "run" / "01-sft"
    train_sft(recipe_for("train.max_steps=2", "train.save_steps=2", "train.eval_steps=2"), stage_dir)
    (stage_dir / "final").rename(stage_dir / "interrupted-final")  # as if killed after its checkpoint
    records = run_pipeline(
        recipe_for("train.max_steps=4", "train.save_steps=2", "train.eval_steps=2", "pipeline.stages=[sft]"),
        tmp_path / "run",
    )
    steps = [
        json.loads(line)["step"]
        for line in (stage_dir / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["split"] == "train" and "loss" in json.loads(line)
    ]
    assert steps == [1, 2, 3, 4]  # steps 1-2 from the first run, 3-4 resumed, none repeated
    assert records[0].current.model == str(stage_dir / "final")


def test_a_training_stage_stopped_by_a_signal_says_where_its_checkpoint_is(recipe_for, tmp_path):
    stage_dir = tmp_path / "run" / "01-sft"
    recipe = recipe_for(
        "train.max_steps=100000", "train.save_steps=50000", "train.eval_steps=50000", "pipeline.stages=[sft]"
    )
    done = threading.Event()

    def terminate_once_training():  # as a spot instance's pre-emption would, from outside the training loop
        deadline = time.time() + 120
        while not done.is_set() and time.time() < deadline:
            metrics = stage_dir / "metrics.jsonl"
            if metrics.exists() and metrics.read_text().count('"train"') >= 2:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.1)

    # a signal that comes after the run, should the run end early, reaches this no-op, not pytest's default
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    thread = threading.Thread(target=terminate_once_training)
    thread.start()
    try:
        with pytest.raises(UserError) as raised:
            run_pipeline(recipe, tmp_path / "run")
    finally:
        done.set()
        thread.join()
        signal.signal(signal.SIGTERM, previous)
    (saved,) = [p for p in (stage_dir / "checkpoints").iterdir() if p.name.isdigit()]
    assert str(raised.value) == (
        f"01-sft stopped by SIGTERM at step {saved.name}; its checkpoint is in {stage_dir}; "
        "run the pipeline again to resume"
    )
    assert (saved / "trainer_state.json").is_file() and not (stage_dir / "final").exists()
