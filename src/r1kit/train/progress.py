"""What a training stage shows on the console: one progress display per stage, in place of transformers' bar
and the raw log dictionaries (`{'loss': '0.8859', 'grad_norm': ...}`) it prints between steps.

On a terminal, a rich bar: the step (or the training seconds against `train.max_train_seconds`), loss,
tokens/s and the time left; for GRPO also the mean reward and accuracy. Elsewhere (a CI log, a file), one
plain line per logging step with the same figures. With `r1kit --quiet` (which sets R1KIT_QUIET=1, so that
the ranks a launch starts inherit it), only validations and the closing line. Every per-step record stays in
`metrics.jsonl` and TensorBoard whatever the console shows.
"""

from __future__ import annotations

import os
import time

from rich.console import Console
from transformers import PrinterCallback, ProgressCallback, TrainerCallback

from r1kit.dist import console as stderr_console
from r1kit.quiet import QUIET_ENV
from r1kit.train.callbacks import TrainClock

FIGURES = (
    ("loss", "loss", "{:.4g}"),
    ("reward", "reward", "{:.3f}"),
    ("rewards/accuracy/mean", "accuracy", "{:.1%}"),
    ("tokens_per_second", "tokens/s", "{:,.0f}"),
)
"""(log key, label, format) of the figures shown, in order, for the keys a stage logs."""
VALIDATION = (("loss", "{:.4g}"), ("perplexity", "{:.4g}"), ("accuracy", "{:.1%}"))


def console_mode(console: Console) -> str:
    """quiet (R1KIT_QUIET=1), live (a terminal) or lines (anything else: a CI log, a file)."""
    if os.environ.get(QUIET_ENV) == "1":
        return "quiet"
    return "live" if console.is_terminal else "lines"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class StageProgress(TrainerCallback):
    """The stage's progress display (see the module's docstring); only the main process shows one."""

    def __init__(self, stage: str, clock: TrainClock | None = None, console: Console | None = None):
        self.stage, self.clock = stage, clock
        self.console = console or stderr_console
        self.mode = console_mode(self.console)
        self.figures: dict[str, str] = {}
        self.live = None
        self.started = 0.0

    @classmethod
    def replace_in(cls, trainer, stage: str) -> StageProgress:
        """Put it in place of the trainer's own bar or printer; it counts seconds when the trainer has a clock
        with a budget."""
        for kind in (ProgressCallback, PrinterCallback):
            while trainer.pop_callback(kind) is not None:
                pass
        clock = next(
            (c for c in trainer.callback_handler.callbacks if isinstance(c, TrainClock) and c.limit), None
        )
        progress = cls(stage, clock)
        trainer.add_callback(progress)
        return progress

    # -- where the stage stands
    def _done_and_total(self, state) -> tuple[float, float]:
        if self.clock is not None:
            return min(self.clock.seconds, self.clock.limit), self.clock.limit
        return state.global_step, state.max_steps

    def _left(self, state) -> float | None:
        done, total = self._done_and_total(state)
        if not done:
            return None
        if self.clock is not None:
            return total - done
        return (time.perf_counter() - self.started) / done * (total - done)

    def _where(self, state) -> str:
        done, total = self._done_and_total(state)
        if self.clock is not None:
            return f"step {state.global_step}, {done:.0f}/{total:.0f} training s"
        return f"step {done}/{total}"

    def _figures(self, state) -> str:
        """The last logged figures and the time left."""
        left = self._left(state)
        return "  ".join([*self.figures.values(), *([f"{_duration(left)} left"] if left is not None else [])])

    def _line(self, state) -> str:
        return "  ".join([self.stage, self._where(state), self._figures(state)])

    # -- the trainer's events
    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.started = time.perf_counter()
        if self.mode == "live":
            from rich.progress import BarColumn, Progress, TextColumn

            self.live = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[where]}  {task.fields[figures]}"),
                console=self.console,
                auto_refresh=False,  # refreshed at each step: no thread to outlive a failed run
            )
            done, total = self._done_and_total(state)
            self.task = self.live.add_task(self.stage, total=total, completed=done, where="", figures="")
            self.live.start()

    def on_step_end(self, args, state, control, **kwargs):
        if self.live is not None:
            done, _ = self._done_and_total(state)
            self.live.update(
                self.task, completed=done, where=self._where(state), figures=self._figures(state)
            )
            self.live.refresh()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if any(k.startswith("eval_") for k in logs):
            shown = [
                f"{name} {fmt.format(logs[f'eval_{name}'])}"
                for name, fmt in VALIDATION
                if f"eval_{name}" in logs
            ]
            self._print(f"{self.stage}  validation at step {state.global_step}: {', '.join(shown)}")
            return
        if "train_loss" in logs:  # the trainer's closing record, shown at the end
            return
        self.figures = {
            label: f"{label} {fmt.format(logs[key])}"
            for key, label, fmt in FIGURES
            if logs.get(key) is not None
        }
        if self.mode == "lines":
            self._print(self._line(state))

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        if self.live is not None:
            self.live.stop()
            self.live = None
        took = _duration(time.perf_counter() - self.started)
        figures = "  ".join(self.figures.values())
        self._print(
            f"{self.stage}  done: {state.global_step} steps in {took}" + (f"  {figures}" if figures else "")
        )

    def _print(self, line: str) -> None:
        if self.live is not None:
            self.live.console.print(line, highlight=False)  # above the bar
        else:
            self.console.print(line, highlight=False, soft_wrap=True)
