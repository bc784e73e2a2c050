"""`r1kit train sft` / `r1kit train pretrain`: supervised fine-tuning (full, LoRA) and causal-LM pretraining
on TRL's SFTTrainer.

`train_sft` reads top to bottom: run folder and resume point → precision → tokenizer and model → for each
curriculum stage (one, without a curriculum): data (cleaned, then tokenized here so truncation is counted) →
trainer config → trainer with r1kit's callbacks → train → final model.

Departures from TRL's defaults, and why:
- packing is on, into rows of `max_seq_length` with position ids restarting per example (padding-free);
  TRL's default pads every batch;
- on CPUs, TRL's fused LM head runs r1kit's CPU function and scores only the labelled positions
  (train/lm_head.py: ~2x faster head), and with bf16 autocast freed heap pages go back to the system after
  each micro-step (callbacks.ReleaseFreedMemory: a lower peak);
- precision `auto` picks bf16 autocast on CPUs with native bf16 (TRL: bf16 everywhere, or fp32 with use_cpu);
- the loss is on assistant tokens only (the chat template marks them), TRL's default is the whole text;
- checkpoints are staged then renamed (never half-written), retention keeps the best k by metric plus the last,
  where `save_total_limit` keeps one best and writes in place.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Literal

from r1kit.config import Recipe
from r1kit.config import greater_is_better as metric_direction
from r1kit.data.tokenize import load_split, tokenize_dataset
from r1kit.dist import is_main_process, print0, wait_for
from r1kit.errors import UserError
from r1kit.models.load import weights_only_loads
from r1kit.train import checkpoint
from r1kit.train.callbacks import (
    MetricsLogger,
    NonFiniteGuard,
    NothingLeftToTrain,
    StopAtStep,
    StopBeforeTraining,
)
from r1kit.train.progress import StageProgress
from r1kit.train.run import (
    OOM_ADVICE,
    TrainResult,
    build_callbacks,
    complete_error,
    configure_wandb,
    data_dir_of,
    final_dir_of,
    load_model,
    lora_config,
    report_failed_saves,
    run_record,
    save_final,
    shared_trainer_args,
    start_run,
    step_of,
)
from r1kit.train.utilisation import Utilisation, passes_per_token

Mode = Literal["sft", "pretrain"]


def prepare_data(recipe: Recipe, run_dir: Path, tokenizer, mode: Mode, max_seq_length: int):
    """Tokenized train and validation sets (validation None when the split is empty), with counts."""
    train = recipe.train
    data_dir = data_dir_of(recipe, run_dir)
    if not train.dataset and not (data_dir / "report.json").is_file():
        if not recipe.data.inputs:
            raise UserError(
                "no training data: set train.dataset (a `r1kit data clean` folder) or data.inputs"
            )
        from r1kit.data.clean import clean

        if is_main_process():  # once, published whole; the other processes wait for it
            print0(f"cleaning {', '.join(recipe.data.inputs)} into {data_dir}")
            clean(recipe.data.inputs, data_dir, recipe.data, seed=recipe.seed)
        else:
            wait_for(data_dir / "report.json", 60 * train.collective_timeout_minutes, "the cleaned data")
    assistant_only = train.assistant_only_loss and mode == "sft"
    kwargs = dict(
        max_seq_length=max_seq_length,
        assistant_only_loss=assistant_only,
        truncation=train.truncation,
        num_proc=recipe.data.num_proc,
    )
    train_ds, train_stats = tokenize_dataset(load_split(data_dir, "train"), tokenizer, **kwargs)
    if train_stats.num_kept == 0:
        raise UserError(
            f"{data_dir}: no training example is left after tokenization ({train_stats.to_dict()})"
        )
    eval_ds, eval_stats = None, None
    if list((data_dir / "validation").glob("*.parquet")):
        eval_ds, eval_stats = tokenize_dataset(load_split(data_dir, "validation"), tokenizer, **kwargs)
    print0(
        f"train: {train_stats.num_kept} examples, {train_stats.num_tokens} tokens "
        f"({train_stats.num_truncated} truncated, {train_stats.num_dropped_too_long} dropped as too long, "
        f"{train_stats.num_dropped_no_trainable_tokens} without trainable tokens)"
    )
    return train_ds, eval_ds, train_stats, eval_stats


def trainer_config(
    recipe: Recipe,
    run_dir: Path,
    precision: str,
    max_seq_length: int,
    *,
    has_eval: bool,
    ignore_data_skip: bool,
):
    """TRL's config from the recipe. `ignore_data_skip`: a stage that starts on new data (the first, or the next
    of a curriculum) must not skip the batches an earlier stage consumed."""
    from trl import SFTConfig

    t = recipe.train
    greater_is_better = metric_direction(t.metric_for_best_model)
    return SFTConfig(
        **shared_trainer_args(recipe, run_dir, precision),
        learning_rate=t.learning_rate,
        per_device_eval_batch_size=t.per_device_batch_size,
        max_length=max_seq_length,
        ignore_data_skip=ignore_data_skip,
        label_smoothing_factor=t.label_smoothing,
        torch_compile=t.torch_compile,
        packing=t.packing,
        packing_strategy="bfd",
        padding_free=t.packing,
        assistant_only_loss=False,  # the masks were made when tokenizing; TRL applies `assistant_masks` as given
        eval_strategy="steps" if has_eval else "no",
        eval_steps=t.eval_steps,
        eval_delay=t.eval_delay,
        metric_for_best_model=t.metric_for_best_model if has_eval else None,
        greater_is_better=greater_is_better,
        load_best_model_at_end=False,
        include_num_input_tokens_seen="non_padding",
        **t.extra,
    )


def phases(train) -> list[tuple[int, int | None]]:
    """(max_seq_length, last step) of each stage of the run: the curriculum's, then `max_seq_length` to the end
    (None: until the epochs are done)."""
    return [(stage.max_seq_length, stage.until_step) for stage in train.curriculum] + [
        (train.max_seq_length, train.max_steps)
    ]


def train_sft(
    recipe: Recipe, run_dir: str | Path | None = None, *, resume: str | None = None, mode: Mode = "sft"
) -> TrainResult:
    """Train per `recipe.train` into `run_dir` (default runs/<name>), stage by stage of the curriculum."""
    import torch
    from trl import SFTTrainer

    run_dir = Path(run_dir) if run_dir else recipe.run_dir
    resume_from, precision, tokenizer = start_run(recipe, run_dir, resume)
    model, base_dir = load_model(recipe, tokenizer, precision, run_dir)
    if recipe.train.wandb_project:
        configure_wandb(recipe, run_dir)
    metrics_logger = MetricsLogger(run_dir / "metrics.jsonl", run_record(mode, recipe, precision))
    callbacks = exporter = None
    trainer = output = None
    start_step, stage_start = step_of(resume_from), 0
    try:
        stages = phases(recipe.train)
        for index, (seq_length, last_step) in enumerate(stages):
            done = last_step is not None and last_step <= start_step
            # The last stage's checkpoint without a final model: the run stopped while saving it. The trainer
            # loads the checkpoint, stops before a step, and the final model is saved again.
            if done and (index < len(stages) - 1 or final_dir_of(run_dir).is_dir()):
                stage_start = last_step
                continue
            train_ds, eval_ds, train_stats, eval_stats = prepare_data(
                recipe, run_dir, tokenizer, mode, seq_length
            )
            # Resuming mid-stage skips the batches already seen, as the trainer counts them from step 0: exact in
            # the first stage; a later stage's data starts over (its order is not recorded per stage).
            args = trainer_config(
                recipe,
                run_dir,
                precision,
                seq_length,
                has_eval=eval_ds is not None,
                ignore_data_skip=start_step == stage_start or stage_start > 0,
            )
            if eval_ds is None and recipe.train.stop_at_metric is not None:
                raise UserError("train.stop_at_metric: the dataset has no validation split to measure it on")
            if callbacks is None:
                callbacks, stopper, exporter = build_callbacks(
                    recipe, run_dir, args.greater_is_better, eval_ds is not None, model, precision
                )
            metrics_logger.utilisation = Utilisation.of(
                model,
                passes_per_token(recipe.train.method),
                train_stats.num_tokens / max(train_stats.num_kept, 1),
                precision=precision,
                peak_tflops=recipe.train.peak_tflops,
                peak=metrics_logger.utilisation.peak if metrics_logger.utilisation else None,  # measured once
            )
            metrics_logger.first_record.update(
                max_seq_length=seq_length,
                train_tokens=train_stats.to_dict(),
                eval_tokens=eval_stats.to_dict() if eval_stats else None,
                resumed_from=str(resume_from or ""),
                metrics_port=exporter.port if exporter else None,
            )
            stage_end = [StopAtStep(last_step)] if last_step != recipe.train.max_steps else []
            from peft import PeftModel

            trainer = SFTTrainer(
                model=model,
                args=args,
                train_dataset=train_ds,
                eval_dataset=eval_ds,
                processing_class=tokenizer,
                peft_config=lora_config(recipe)
                if recipe.train.method != "full" and not isinstance(model, PeftModel)
                else None,
                callbacks=[*callbacks, *stage_end, *([StopBeforeTraining()] if done else [])],
            )
            # First, so that perplexity and tokens/s are in the logs before TensorBoard's callback sees them.
            trainer.callback_handler.callbacks.insert(0, metrics_logger)
            guard = NonFiniteGuard(trainer, recipe.train.max_nonfinite_steps)
            report_failed_saves(trainer, run_dir)
            StageProgress.replace_in(trainer, "sft")
            if recipe.eval.during_training and eval_ds is not None:
                from r1kit.eval.during_training import AccuracyAtValidation
                from r1kit.eval.suites import heldout

                AccuracyAtValidation.from_recipe(
                    trainer,
                    tokenizer,
                    recipe,
                    heldout(data_dir_of(recipe, run_dir), recipe.eval.during_training_problems),
                )
            try:
                with weights_only_loads() if trainer.is_deepspeed_enabled else nullcontext():  # ZeRO states
                    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
            except torch.OutOfMemoryError:
                raise UserError(OOM_ADVICE) from None
            except NothingLeftToTrain:
                print0(f"{run_dir}: step {start_step} has no final model yet; saving it")
                break
            model, step = trainer.model, trainer.state.global_step
            if stopper.received:  # the checkpoint is saved; the run continues with --resume auto
                return TrainResult(
                    run_dir,
                    None,
                    step,
                    stopper.received,
                    guard.skipped,
                    train_stats,
                    eval_stats,
                    output.metrics,
                )
            if last_step is None or step < last_step:  # early stopping, or the epochs ran out
                break
            resume_from, start_step, stage_start = checkpoint.latest_checkpoint(run_dir), step, step
    finally:
        if exporter is not None:
            exporter.stop()
    if trainer is None:
        raise complete_error(run_dir, start_step)
    final_dir = save_final(trainer, recipe, run_dir, tokenizer, base_dir)
    return TrainResult(
        run_dir,
        final_dir,
        trainer.state.global_step,
        None,
        guard.skipped,
        train_stats,
        eval_stats,
        output.metrics if output else {},
    )
