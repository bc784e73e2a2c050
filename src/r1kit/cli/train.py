"""`r1kit train sft|pretrain|grpo`, `r1kit sample` (rejection sampling) and `r1kit pipeline`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from r1kit.cli.common import (
    OutOption,
    RecipeArgument,
    ResumeOption,
    SetOption,
    app,
    err,
    load_recipe_for,
    out,
    train_app,
)


def _train(recipe: Path, out_dir: Path | None, resume: str | None, overrides, mode: str) -> None:
    if mode == "grpo":
        from r1kit.train.grpo import train_grpo

        result = train_grpo(load_recipe_for(recipe, overrides), out_dir, resume=resume)
    else:
        from r1kit.train.sft import train_sft

        result = train_sft(load_recipe_for(recipe, overrides), out_dir, resume=resume, mode=mode)
    if result.skipped_nonfinite_steps:
        err.print(f"[yellow]{result.skipped_nonfinite_steps} steps skipped for a non-finite loss[/yellow]")
    if result.stopped_by:
        out.print(
            f"stopped by {result.stopped_by} at step {result.global_step}; checkpoint saved in "
            f"{escape(str(result.run_dir / 'checkpoints' / str(result.global_step)))}. "
            f"Continue with: r1kit train {mode} {escape(str(recipe))} --resume auto"
            + (f" --out {escape(str(out_dir))}" if out_dir else "")
        )
        import signal

        raise typer.Exit(128 + signal.Signals[result.stopped_by].value)
    from r1kit.dist import is_main_process

    if not is_main_process():  # one report per run, not one per process
        return
    out.print(
        f"trained {result.global_step} steps; final model: {escape(str(result.final_dir))}; "
        f"metrics: {escape(str(result.run_dir / 'metrics.jsonl'))}"
    )


@train_app.command("sft")
def train_sft_cmd(
    recipe: RecipeArgument,
    out_dir: OutOption = None,
    resume: ResumeOption = None,
    overrides: SetOption = None,
) -> None:
    """Supervised fine-tuning (full, LoRA or QLoRA) on chat/problem data, loss on assistant tokens."""
    _train(recipe, out_dir, resume, overrides, "sft")


@train_app.command("pretrain")
def train_pretrain_cmd(
    recipe: RecipeArgument,
    out_dir: OutOption = None,
    resume: ResumeOption = None,
    overrides: SetOption = None,
) -> None:
    """Causal-LM training on every token (plain text from `r1kit data clean`)."""
    _train(recipe, out_dir, resume, overrides, "pretrain")


@train_app.command("grpo")
def train_grpo_cmd(
    recipe: RecipeArgument,
    out_dir: OutOption = None,
    resume: ResumeOption = None,
    overrides: SetOption = None,
) -> None:
    """GRPO reinforcement learning with verifiable rewards on problems with gold answers (the R1 recipe)."""
    _train(recipe, out_dir, resume, overrides, "grpo")


@app.command("sample")
def sample_cmd(
    recipe: Annotated[Path | None, typer.Argument(help="Recipe YAML (its `sample` section).")] = None,
    model: Annotated[Path, typer.Option(help="Model folder to sample from.")] = ...,
    out_dir: Annotated[
        Path, typer.Option("--out", help="New folder for samples.jsonl, data/ and report.json.")
    ] = ...,
    overrides: SetOption = None,
) -> None:
    """Rejection sampling: keep verified-correct completions as a new SFT dataset (recipe section `sample`)."""
    from r1kit.train.sample import rejection_sample

    report = rejection_sample(load_recipe_for(recipe, overrides), model, out_dir)
    out.print(
        f"{report.problems} problems x {report.samples // max(1, report.problems)} samples: "
        f"{report.correct_samples} correct, {report.solved_problems} problems solved, {report.truncated} cut "
        f"at the length limit; kept {report.kept} ({report.keep})"
    )
    if report.kept:
        out.print(f"SFT data: {escape(str(out_dir / 'data'))} (train.dataset)")
    else:
        err.print("[yellow]no correct sample: nothing to train on[/yellow]")


@app.command("pipeline")
def pipeline_cmd(recipe: RecipeArgument, out_dir: OutOption = None, overrides: SetOption = None) -> None:
    """Run the recipe's stages in order (pipeline.stages), skipping finished ones and resuming unfinished ones."""
    from r1kit.pipeline import run_pipeline

    for record in run_pipeline(load_recipe_for(recipe, overrides), out_dir):
        state = "skipped (finished earlier)" if record.skipped else f"done in {record.seconds:.0f} s"
        out.print(
            f"{escape(Path(record.dir).name):12} {state}; model {escape(str(record.current.model))}",
            soft_wrap=True,
        )
