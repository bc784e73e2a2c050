"""What r1kit adds around TRL's trainer: metrics in the run folder, atomic checkpoints with best-k retention,
a clean stop on SIGTERM/SIGINT, and a guard against non-finite losses.

Transformers' own pieces are used where they do the job (TensorBoard, early stopping); these
callbacks fill what they lack: `save_total_limit` keeps the best one checkpoint and writes in place, the logged
loss hides NaNs (`logging_nan_inf_filter`), and nothing reacts to a pre-emption signal.
"""

from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path

from transformers import TrainerCallback

from r1kit.config import logged_metric
from r1kit.dist import barrier, is_main_process, max_over_ranks, print0, world_size
from r1kit.errors import UserError
from r1kit.train import checkpoint


def _split_of(logs: dict) -> str:
    if "train_loss" in logs:  # the trainer's closing record (runtime, samples/s, mean loss)
        return "summary"
    return "eval" if any(k.startswith("eval_") for k in logs) else "train"


class MetricsLogger(TrainerCallback):
    """Adds perplexity, tokens/s and, given a `utilisation`, MFU (train/utilisation.py) to the logs (so TensorBoard
    and Prometheus get them too) and appends each log event to `metrics.jsonl`: {"step", "split", metric
    names...}. Put it first in the callback list."""

    def __init__(self, path: Path, first_record: dict):
        self.path = path
        self.first_record = first_record
        self.utilisation = None
        self._last_time: float | None = None
        self._last_tokens = 0

    def _write(self, record: dict) -> None:
        if is_main_process():
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step and is_main_process():
            self._forget_after(state.global_step)
        if self.utilisation is not None and self.utilisation.peak is None:
            barrier()  # the processes measure their devices' peak at once (processes on one CPU share it)
            self.utilisation.measure(str(args.device), world_size())
            self.first_record["peak_tflops"] = self.utilisation.peak / 1e12
        self._write({"step": state.global_step, "split": "run", **self.first_record})
        self._last_time, self._last_tokens = time.perf_counter(), state.num_input_tokens_seen

    def _forget_after(self, step: int) -> None:
        """A run resumed at `step`: the records of later steps are of work the crash lost and the run is about
        to redo; dropped, so each step is recorded once. (Rewritten whole and renamed into place.)"""
        if not self.path.is_file():
            return
        kept = [
            line
            for line in self.path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step
        ]
        partial = self.path.with_name(f".{self.path.name}.partial")
        partial.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        partial.replace(self.path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs if logs is not None else {}
        split = _split_of(logs)
        if "eval_loss" in logs:
            logs["eval_perplexity"] = math.exp(min(logs["eval_loss"], 50.0))
        if split == "train":
            now = time.perf_counter()
            tokens = state.num_input_tokens_seen
            if self._last_time is not None and now > self._last_time:
                logs["tokens_per_second"] = (tokens - self._last_tokens) / (now - self._last_time)
                mfu = self.utilisation.mfu(logs["tokens_per_second"], logs) if self.utilisation else None
                if mfu is not None:
                    logs["mfu"] = mfu
            self._last_time, self._last_tokens = now, tokens
        names = {k.removeprefix("eval_") if split == "eval" else k: v for k, v in logs.items()}
        self._write({"step": state.global_step, "split": split, **names})


class CheckpointPublisher(TrainerCallback):
    """Publishes each checkpoint the trainer has finished writing in the staging area as `checkpoints/<step>`,
    with the tracked metric of its step, then deletes all but the latest and the `keep_best` best."""

    def __init__(self, run_dir: Path, metric: str, greater_is_better: bool, keep_best: int):
        self.run_dir, self.metric, self.greater_is_better, self.keep_best = (
            run_dir,
            metric,
            greater_is_better,
            keep_best,
        )
        self.metrics: dict[int, float] = {}

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        key = logged_metric(self.metric)
        if metrics and key in metrics:
            self.metrics[state.global_step] = float(metrics[key])

    def on_save(self, args, state, control, **kwargs):
        barrier()  # every process has written its part of the checkpoint (its random state, its shards)
        if is_main_process():
            staged = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if staged.is_dir():
                checkpoint.publish(
                    staged,
                    self.run_dir,
                    state.global_step,
                    self.metrics.get(state.global_step),
                    metric_name=logged_metric(self.metric),
                    greater_is_better=self.greater_is_better,
                    processes=world_size(),
                )
                checkpoint.enforce_retention(self.run_dir, self.keep_best, self.greater_is_better)
        barrier()  # no process goes on (and may stop) before the checkpoint is published


class StopOnSignal(TrainerCallback):
    """On SIGTERM or SIGINT (a pre-empted spot instance, Ctrl-C): finish the current step, save a checkpoint
    and stop cleanly, instead of dying mid-step with the work since the last checkpoint lost.

    With several processes the decision is collective: at the end of every step they exchange what they have
    received (one all-reduce of one number), so a signal that reaches one process, or reaches them at
    different steps, stops all of them after the same step, with one checkpoint every process wrote."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name
        print0(
            f"[yellow]{self.received} received: saving a checkpoint after this step, then stopping[/yellow]"
        )

    def on_train_begin(self, args, state, control, **kwargs):
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def on_step_end(self, args, state, control, **kwargs):
        signum = int(max_over_ranks(signal.Signals[self.received].value if self.received else 0, args.device))
        if signum:
            self.received = signal.Signals(signum).name
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


class StopAtStep(TrainerCallback):
    """Ends a curriculum stage: save a checkpoint at its last step and stop, so the next stage resumes there."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_save = True
            control.should_training_stop = True


class TrainClock(TrainerCallback):
    """Times the training steps alone (a step's start to its end: generation in GRPO included, validations and
    checkpoint saves, which run after a step ends, not), writes `train_clock.json` ({"train_seconds", "steps",
    "at_step": {step: seconds so far}}), and with `limit` ends the run, with a checkpoint and a validation, at
    the first step that brings the total to `limit` seconds: a wall-clock budget that every arm of a
    comparison spends alike however often it validates."""

    def __init__(self, path: Path, limit: float | None = None):
        self.path, self.limit = path, limit
        self.seconds, self.at_step = 0.0, {}
        self._step_start: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._step_start is not None:
            self.seconds += time.perf_counter() - self._step_start
            self._step_start = None
        self.at_step[state.global_step] = round(self.seconds, 3)
        # decided together: each process keeps its own clock, and all must stop after the same step
        if self.limit is not None and max_over_ranks(float(self.seconds >= self.limit), args.device):
            control.should_training_stop = True
            control.should_save = True
            control.should_evaluate = args.eval_strategy != "no"

    def on_train_end(self, args, state, control, **kwargs):
        if is_main_process():
            record = {
                "train_seconds": round(self.seconds, 3),
                "steps": state.global_step,
                "at_step": self.at_step,
            }
            self.path.write_text(json.dumps(record) + "\n")


class NothingLeftToTrain(Exception):
    """Raised by `StopBeforeTraining` once `Trainer.train` has loaded the checkpoint."""


class StopBeforeTraining(TrainerCallback):
    """For a run whose newest checkpoint is its last step but whose final model was never saved: `train()` loads
    the checkpoint (with whatever engine the run uses: DDP, FSDP, DeepSpeed, PEFT) and this stops it before a
    step, which the trainer would otherwise take beyond the last one."""

    def on_step_begin(self, args, state, control, **kwargs):
        raise NothingLeftToTrain


class StopAtMetric(TrainerCallback):
    """Ends the run, with a checkpoint, at the first evaluation whose `metric` reaches `target`."""

    def __init__(self, metric: str, target: float, greater_is_better: bool):
        self.metric, self.target, self.greater_is_better = logged_metric(metric), target, greater_is_better

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(self.metric)
        if value is None:
            return
        if value >= self.target if self.greater_is_better else value <= self.target:
            print0(
                f"{self.metric} {value:.4g} reached train.stop_at_metric {self.target:g}: stopping at step "
                f"{state.global_step}"
            )
            control.should_save = True
            control.should_training_stop = True


class ReleaseFreedMemory(TrainerCallback):
    """Hands the C heap's freed pages back to the system after every micro-step (glibc `malloc_trim`).

    On CPUs, bf16 autocast frees and reallocates many mid-sized buffers of changing sizes each step (packed
    rows differ in length); glibc keeps the freed pages and the process's resident memory climbs step after
    step (on our machines, +1.4 GB over 40 micro-steps of a 32M-parameter model); trimming keeps it level.
    In fp32 the heap levels off by itself, and trimming only costs, as the next step faults the pages back in:
    the demo's 3.3M-parameter SFT ran 100 steps in 45.6 s without it against 56.8 s with it (medians of 3
    interleaved runs on a 2-core AVX2 CPU), at the same peak. GPU runs and other C libraries don't need it:
    `wanted()`."""

    def __init__(self):
        import ctypes

        self._trim = ctypes.CDLL("libc.so.6").malloc_trim

    @staticmethod
    def available() -> bool:
        import platform

        return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

    @classmethod
    def wanted(cls, precision: str, cuda: bool) -> bool:
        """Whether a run in `precision` trims: bf16 autocast on a CPU, with glibc."""
        return precision == "bf16" and not cuda and cls.available()

    def on_substep_end(self, args, state, control, **kwargs):
        self._trim(0)

    def on_step_end(self, args, state, control, **kwargs):
        self._trim(0)


class NonFiniteGuard:
    """Wraps `trainer.training_step`: a micro-step whose loss is NaN/inf has its gradients dropped (so the
    optimizer step skips the parameters) and is counted; after `max_in_a_row` such optimizer steps in a row
    the run stops with advice. The trainer's own logging would otherwise replace the NaN by an average.

    With several processes the decision is collective (an all-reduce of one flag per micro-step): a NaN on
    one rank makes every rank skip the same step, so replicas stay identical under DDP.

    Who skips depends on the engine. Plain training: this guard, by dropping the gradients. fp16 with a loss
    scaler: the scaler, which skips any step whose gradients are not finite (and would fail on dropped ones), so
    the guard only counts. DeepSpeed: its engine steps inside the backward pass and skips a step whose gradients
    overflow (bf16's `check_grad_overflow`, on by default; fp16's loss scaler; a non-finite gradient norm when
    clipping), agreed across ranks; the guard counts what it skipped, and stops the run at once if a non-finite
    step was applied after all (the weights are then no longer finite; the last checkpoint is intact)."""

    def __init__(self, trainer, max_in_a_row: int):
        self.deepspeed = bool(getattr(trainer, "is_deepspeed_enabled", False))
        accelerator = getattr(trainer, "accelerator", None)
        fp16 = bool(getattr(getattr(trainer, "args", None), "fp16", False))
        self.engine_skips = self.deepspeed or (fp16 and getattr(accelerator, "scaler", None) is not None)
        """The engine skips non-finite steps itself: count them, leave the gradients alone."""
        self.max_in_a_row = max_in_a_row
        self.skipped = 0
        self.in_a_row = 0
        self._step_of_last_skip = -1
        self._watching = False  # DeepSpeed: a non-finite micro-step whose optimizer step has not run yet
        self._trainer = trainer
        self._training_step = trainer.training_step
        trainer.training_step = self

    def __call__(self, model, inputs, *args, **kwargs):
        import torch

        engine = getattr(self._trainer, "model_wrapped", None) if self.deepspeed else None
        engine_steps = getattr(engine, "global_steps", 0)
        loss = self._training_step(model, inputs, *args, **kwargs)
        step = self._trainer.state.global_step
        if step >= self._step_of_last_skip + 2:  # the step after the last skipped one completed
            self.in_a_row = 0
        nonfinite = max_over_ranks(float(not torch.isfinite(loss).all()), loss.device) > 0
        if engine is not None:
            self._watching = self._watching or nonfinite
            if (
                self._watching and getattr(engine, "global_steps", 0) > engine_steps
            ):  # its step ran in this call
                self._watching = False
                if engine.was_step_applied():
                    raise UserError(
                        f"non-finite loss at step {step + 1}, and DeepSpeed applied the step: the weights are no "
                        "longer finite. Resume from the last checkpoint (--resume auto) with a lower "
                        "train.learning_rate or a longer warmup"
                    )
        if nonfinite and step != self._step_of_last_skip:
            self.skipped += 1
            self.in_a_row += 1
            self._step_of_last_skip = step
            print0(
                f"[yellow]non-finite loss at step {step + 1}: step skipped ({self.in_a_row} in a row)[/yellow]"
            )
            if self.in_a_row >= self.max_in_a_row:
                raise UserError(
                    f"training diverged: {self.in_a_row} optimizer steps in a row had a NaN/inf loss (up to step "
                    f"{step + 1}). Lower train.learning_rate, raise warmup, keep max_grad_norm on, or use bf16 "
                    "instead of fp16."
                )
        if step == self._step_of_last_skip and not self.engine_skips:
            # Every micro-step of a skipped optimizer step drops its gradients: parameters whose .grad is None
            # are left untouched by the optimizer.
            model.zero_grad(set_to_none=True)
            return torch.zeros_like(loss)
        return loss
