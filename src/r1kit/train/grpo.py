"""`r1kit train grpo`: reinforcement learning with verifiable rewards (GRPO, the R1 recipe) on TRL's GRPOTrainer.

recipe → tokenizer → model (usually an SFT checkpoint: `model.path`) → problems (records with a gold answer
from a `data clean` folder) → reward functions (train/rewards.py) → GRPO config → trainer with r1kit's
callbacks and RL health (train/rl_health.py) → train → final model.

What r1kit adds to TRL and why:
- the loss variant is chosen once by name (`grpo.loss_type`: grpo, dr_grpo, dapo); DAPO's per-token
  normalisation is the default, with clip-higher available through `grpo.epsilon_high`;
- prompts longer than `grpo.max_prompt_length` tokens are dropped and counted (TRL no longer truncates
  prompts, and a question cut in half has no right answer);
- `grpo.beta: 0` loads no reference model; rollouts are decoded by r1kit's batching engine (train/rollouts.py:
  faster than transformers' padded `generate`, which `grpo.rollout_engine: transformers` keeps) unless the
  recipe asks for vLLM, which is refused where it cannot run;
- the run folder, checkpoints, resume, signals, metrics.jsonl, TensorBoard and the Prometheus endpoint are every
  training stage's (train/run.py); RL health adds its figures and alerts to the same logs;
- validation answers problems instead of scoring a loss: with `eval.during_training`, every `train.eval_steps`
  steps the policy answers validation problems greedily (r1kit's evaluation replaces TRL's, which samples a
  group for each problem and logs its loss), so `eval_accuracy` picks the best checkpoints, stops the run
  early or at a target, and can be the final model (`train.final_model: best`): an RL run's accuracy can peak
  before its last step. Without it, retention keeps the latest checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

from r1kit.config import IN_TRAINING_METRICS, Recipe, logged_metric
from r1kit.dist import print0, world_size
from r1kit.errors import UserError
from r1kit.hardware import require_cuda, require_module
from r1kit.models.load import weights_only_loads
from r1kit.train.callbacks import (
    MetricsLogger,
    NonFiniteGuard,
    NothingLeftToTrain,
    StopBeforeTraining,
)
from r1kit.train.progress import StageProgress
from r1kit.train.rewards import resolve
from r1kit.train.rl_health import RLHealth
from r1kit.train.rollouts import EngineRollouts, check_supported
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


def problem_dataset(recipe: Recipe, run_dir: Path, tokenizer):
    """(dataset of {prompt: chat messages, answer, reasoning: the reference reply's worked steps or "", task, meta:
    the record's other fields as JSON}, number of problems dropped for a prompt over the limit, mean prompt
    length in tokens)."""
    from datasets import Dataset

    from r1kit.data.tokenize import chat_messages, load_split
    from r1kit.r1format import render_chat
    from r1kit.tasks import meta_of

    data_dir = data_dir_of(recipe, run_dir)
    if tokenizer.chat_template is None:
        raise UserError("GRPO asks its problems as chats: the tokenizer has no chat template")
    rows, too_long, prompt_tokens = [], 0, 0
    for record in load_split(data_dir, "train"):
        if not record["answer"] or not record["messages"]:
            continue
        messages = chat_messages(record["messages"])
        last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
        if last_user is None:
            continue
        prompt = messages[: last_user + 1]
        length = len(render_chat(tokenizer, prompt)[0])
        if length > recipe.grpo.max_prompt_length:
            too_long += 1
            continue
        prompt_tokens += length
        reply = messages[last_user + 1] if last_user + 1 < len(messages) else {}
        task = meta_of(record["meta"]).get("task")
        rows.append(
            {
                "prompt": prompt,
                "answer": record["answer"],
                "reasoning": reply.get("reasoning_content") or "",
                "task": str(task) if task is not None else "",  # names the verifier of the accuracy reward
                "meta": record["meta"] or "",
            }
        )
    if not rows:
        raise UserError(
            f"{data_dir}: no training problem with a gold answer (and a prompt within "
            f"grpo.max_prompt_length = {recipe.grpo.max_prompt_length} tokens; {too_long} were longer)"
        )
    if too_long:
        print0(
            f"[yellow]{too_long} problems dropped: prompt over grpo.max_prompt_length "
            f"({recipe.grpo.max_prompt_length} tokens)[/yellow]"
        )
    return Dataset.from_list(rows), too_long, prompt_tokens / len(rows)


def check_rollout_engine(engine: str) -> None:
    if engine.startswith("vllm"):
        require_cuda(f"grpo.rollout_engine: {engine}")
        require_module("vllm", "gpu", f"grpo.rollout_engine: {engine}")


def check_validation_metric(recipe: Recipe) -> None:
    """GRPO logs no validation loss: a run that validates (`eval.during_training`) must rank its checkpoints by
    what that validation logs. `r1kit pipeline` checks its GRPO stages with this before running any stage."""
    metric = recipe.train.metric_for_best_model
    if recipe.eval.during_training and logged_metric(metric) not in IN_TRAINING_METRICS:
        raise UserError(
            f"train.metric_for_best_model: {metric} is not logged by GRPO, whose validation answers problems "
            f"(eval.during_training): use one of {', '.join(IN_TRAINING_METRICS)}"
        )


def validation_problems(recipe: Recipe, run_dir: Path):
    """The problems answered at each validation (`eval.during_training`), or None."""
    if not recipe.eval.during_training:
        return None
    from r1kit.eval.suites import heldout

    check_validation_metric(recipe)
    return heldout(data_dir_of(recipe, run_dir), recipe.eval.during_training_problems)


def grpo_config(recipe: Recipe, run_dir: Path, precision: str, *, has_eval: bool = False):
    from trl import GRPOConfig

    t, g = recipe.train, recipe.grpo
    completions_per_step = t.per_device_batch_size * t.gradient_accumulation_steps * world_size()
    if completions_per_step % g.num_generations:
        raise UserError(
            f"train.per_device_batch_size x gradient_accumulation_steps x processes "
            f"({completions_per_step}) counts completions per step in GRPO and must be a multiple of "
            f"grpo.num_generations ({g.num_generations})"
        )
    vllm = g.rollout_engine.startswith("vllm")
    return GRPOConfig(
        **shared_trainer_args(recipe, run_dir, precision),
        learning_rate=g.learning_rate,
        num_generations=g.num_generations,
        temperature=g.temperature,
        top_p=g.top_p,
        max_completion_length=g.max_completion_length,
        beta=g.beta,
        epsilon=g.epsilon,
        epsilon_high=g.epsilon_high if g.epsilon_high is not None else g.epsilon,
        loss_type=g.loss_type,
        num_iterations=g.num_iterations,
        reward_weights=list(g.rewards.values()),
        use_vllm=vllm,
        vllm_mode=g.rollout_engine.removeprefix("vllm_") if vllm else "colocate",
        eval_strategy="steps" if has_eval else "no",
        eval_steps=t.eval_steps,
        eval_delay=t.eval_delay,
        metric_for_best_model=t.metric_for_best_model if has_eval else None,
        greater_is_better=True,  # every metric GRPO's validation logs is a share of right answers
        per_device_eval_batch_size=1,  # the validation answers its problems in batches of eval.concurrency
        num_generations_eval=1,
        **g.extra,
    )


def keep_reference(model, reference_dir: Path) -> None:
    """TRL loads the KL reference (the starting policy) from the path the policy came from; a model built from a
    preset came from none, so its starting weights are written to <run>/reference and named as its origin."""
    import shutil
    import time

    from r1kit.dist import is_main_process

    if is_main_process() and not reference_dir.is_dir():
        staging = reference_dir.with_name(reference_dir.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging)
        staging.rename(reference_dir)  # whole or absent: the other processes wait for it below
    deadline = time.monotonic() + 600
    while not reference_dir.is_dir():
        if time.monotonic() > deadline:
            raise UserError(
                f"{reference_dir} did not appear: the main process failed to write the reference model"
            )
        time.sleep(0.5)
    model.config._name_or_path = str(reference_dir)


def train_grpo(
    recipe: Recipe, run_dir: str | Path | None = None, *, resume: str | None = None, callbacks: Sequence = ()
) -> TrainResult:
    """GRPO per `recipe.grpo` into `run_dir` (default runs/<name>); `callbacks` are further transformers
    `TrainerCallback`s, called after r1kit's own (the learning benchmark evaluates held-out problems with one)."""
    import torch
    from trl import GRPOTrainer

    run_dir = Path(run_dir) if run_dir else recipe.run_dir
    check_rollout_engine(recipe.grpo.rollout_engine)
    resume_from, precision, tokenizer = start_run(recipe, run_dir, resume)
    resumed_step = step_of(resume_from)
    # The newest checkpoint is the last step: a complete run, or one that stopped while saving its final model
    # (then the trainer loads the checkpoint, stops before a step, and the final model is saved again).
    finishing = recipe.train.max_steps is not None and resumed_step >= recipe.train.max_steps
    if finishing and final_dir_of(run_dir).is_dir():
        raise complete_error(run_dir, resumed_step)
    rewards = [
        resolve(name, max_completion_length=recipe.grpo.max_completion_length) for name in recipe.grpo.rewards
    ]
    dataset, dropped, mean_prompt_length = problem_dataset(recipe, run_dir, tokenizer)
    validation = validation_problems(recipe, run_dir)
    model, base_dir = load_model(recipe, tokenizer, precision, run_dir)
    if recipe.grpo.beta > 0 and recipe.train.method == "full" and recipe.model.preset is not None:
        keep_reference(model, run_dir / "reference")
    if recipe.train.wandb_project:
        configure_wandb(recipe, run_dir)
    args = grpo_config(recipe, run_dir, precision, has_eval=validation is not None)
    rollouts = None
    if recipe.grpo.rollout_engine == "r1kit":
        check_supported(args)
        rollouts = EngineRollouts(recipe.seed)
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # `rollout_func` is experimental: TRL pinned
    metrics_logger = MetricsLogger(
        run_dir / "metrics.jsonl",
        run_record(
            "grpo",
            recipe,
            precision,
            problems=len(dataset),
            dropped_long_prompts=dropped,
            rewards=recipe.grpo.rewards,
        ),
    )
    metrics_logger.utilisation = Utilisation.of(
        model,
        passes_per_token(recipe.train.method, recipe.grpo),
        mean_prompt_length,
        precision=precision,
        peak_tflops=recipe.train.peak_tflops,
        completion_key="completions/mean_length",
    )
    own, stopper, exporter = build_callbacks(recipe, run_dir, True, validation is not None, model, precision)
    health = RLHealth(recipe.grpo.alerts, exporter.registry if exporter else None)
    try:
        trainer = GRPOTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            # what Trainer.evaluate asks for; r1kit's validation answers `validation` instead
            eval_dataset=dataset.select(range(1)) if validation is not None else None,
            processing_class=tokenizer,
            reward_funcs=rewards,
            callbacks=[*own, *callbacks, *([StopBeforeTraining()] if finishing else [])],
            peft_config=lora_config(recipe) if recipe.train.method != "full" else None,
            rollout_func=rollouts,
        )
        trainer.callback_handler.callbacks[0:0] = [
            health,
            metrics_logger,
        ]  # alerts in the logs before they are written
        health.time_rollouts(trainer)
        guard = NonFiniteGuard(trainer, recipe.train.max_nonfinite_steps)
        report_failed_saves(trainer, run_dir)
        StageProgress.replace_in(trainer, "grpo")
        if validation is not None:
            from r1kit.eval.during_training import AccuracyAtValidation

            AccuracyAtValidation.from_recipe(trainer, tokenizer, recipe, validation, replace_loop=True)
        metrics_logger.first_record["metrics_port"] = exporter.port if exporter else None
        output = None
        try:
            with weights_only_loads() if trainer.is_deepspeed_enabled else nullcontext():  # ZeRO states
                output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        except torch.OutOfMemoryError:
            raise UserError(OOM_ADVICE) from None
        except NothingLeftToTrain:
            print0(f"{run_dir}: step {resumed_step} has no final model yet; saving it")
    finally:
        if exporter is not None:
            exporter.stop()
    step = trainer.state.global_step
    metrics = output.metrics if output else {}
    if stopper.received:
        return TrainResult(run_dir, None, step, stopper.received, guard.skipped, None, None, metrics)
    final_dir = save_final(trainer, recipe, run_dir, tokenizer, base_dir)
    return TrainResult(run_dir, final_dir, step, None, guard.skipped, None, None, metrics)
