"""The training console (train/progress.py), driven by the trainer's own state objects: a live bar on a
terminal, plain lines elsewhere, validations and the closing line only when quiet; never raw log dictionaries."""

import io
import re

import pytest
from rich.console import Console
from transformers import TrainerControl, TrainerState, TrainingArguments

from r1kit.train.callbacks import TrainClock
from r1kit.train.progress import StageProgress

SFT_LOGS = {
    "loss": 0.8859,
    "grad_norm": 1.599,
    "learning_rate": 2e-5,
    "tokens_per_second": 1020.4,
    "epoch": 0.1,
}
GRPO_LOGS = {
    "loss": 0.01,
    "reward": 0.4375,
    "reward_std": 0.2,
    "rewards/accuracy/mean": 0.25,
    "tokens_per_second": 88.0,
}


def run_stage(tmp_path, *, terminal: bool, stage="sft", logs=SFT_LOGS, clock=None) -> str:
    out = io.StringIO()
    progress = StageProgress(stage, clock, Console(file=out, force_terminal=terminal, width=120))
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    state, control = TrainerState(), TrainerControl()
    state.max_steps = 4
    progress.on_train_begin(args, state, control)
    for step in range(1, 5):
        state.global_step = step
        if clock is not None:
            clock.seconds = step * 0.6
        progress.on_step_end(args, state, control)
        progress.on_log(args, state, control, logs=dict(logs))
        if step == 2:
            progress.on_log(
                args, state, control, logs={"eval_loss": 0.75, "eval_perplexity": 2.117, "epoch": 1}
            )
    progress.on_log(args, state, control, logs={"train_loss": 0.9, "train_runtime": 3.0})
    progress.on_train_end(args, state, control)
    text = out.getvalue()
    assert "{'" not in text and "grad_norm" not in text and "learning_rate" not in text  # no raw dictionaries
    return text


def test_lines_off_a_terminal(tmp_path, monkeypatch):
    monkeypatch.delenv("R1KIT_QUIET", raising=False)
    lines = run_stage(tmp_path, terminal=False).splitlines()
    assert lines[0].startswith("sft  step 1/4  loss 0.8859  tokens/s 1,020  ") and lines[0].endswith(" left")
    assert "sft  validation at step 2: loss 0.75, perplexity 2.117" in lines
    assert lines[-1].startswith("sft  done: 4 steps in 0m0") and lines[-1].endswith(
        "loss 0.8859  tokens/s 1,020"
    )
    assert len(lines) == 6  # four steps, one validation, the end
    grpo = run_stage(tmp_path, terminal=False, stage="grpo", logs=GRPO_LOGS)
    assert "grpo  step 3/4  loss 0.01  reward 0.438  accuracy 25.0%  tokens/s 88  " in grpo


def test_a_seconds_budget_counts_training_seconds(tmp_path, monkeypatch):
    monkeypatch.delenv("R1KIT_QUIET", raising=False)
    text = run_stage(tmp_path, terminal=False, clock=TrainClock(tmp_path / "clock.json", limit=2.0))
    assert "sft  step 2, 1/2 training s  loss" in text and "step 4, 2/2 training s" in text
    assert "0m01s left" in text  # 2 s of budget, 1.2 s spent (the clock's seconds, not the wall's)


def test_a_live_bar_on_a_terminal(tmp_path, monkeypatch):
    monkeypatch.delenv("R1KIT_QUIET", raising=False)
    text = run_stage(tmp_path, terminal=True)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    assert "step 4/4" in plain and "loss 0.8859" in plain and "━" in plain  # the bar, with its figures
    assert "sft  validation at step 2" in plain and "sft  done: 4 steps" in plain
    assert "sft  step 1/4  loss" not in plain  # no per-step lines: the bar holds them


@pytest.mark.parametrize("terminal", [True, False])
def test_quiet_shows_validations_and_the_end_only(tmp_path, monkeypatch, terminal):
    monkeypatch.setenv("R1KIT_QUIET", "1")
    lines = run_stage(tmp_path, terminal=terminal).splitlines()
    assert [line.split(":")[0] for line in lines] == ["sft  validation at step 2", "sft  done"]
