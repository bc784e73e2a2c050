"""The life of a training run, shared by every training stage (train/sft.py, train/grpo.py): the run folder and
its resume point, precision, tokenizer and model (full, LoRA, QLoRA), the trainer settings both stages take
from `train`, r1kit's callbacks (checkpoint publishing and retention, signals, TensorBoard, early stopping,
Prometheus), the first record of metrics.jsonl, and the final model.

A stage calls `start_run`, `load_model`, builds its own TRL config on `shared_trainer_args`, adds
`build_callbacks`, trains, and ends with `save_final` and a `TrainResult`.
"""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from r1kit.config import Recipe
from r1kit.data.tokenize import TokenizeStats
from r1kit.dist import is_main_process, print0, wait_for
from r1kit.errors import UserError
from r1kit.hardware import choose_precision, cuda_available, package_version, require_module
from r1kit.models.load import check_attn_implementation, load_tokenizer, resolve_model_dir, weights_only_loads
from r1kit.publish import fresh_staging_dir, publish_dir, staging_dir
from r1kit.train import checkpoint
from r1kit.train.callbacks import (
    CheckpointPublisher,
    ReleaseFreedMemory,
    StopAtMetric,
    StopOnSignal,
    TrainClock,
)
from r1kit.train.lm_head import use_for_cpu
from r1kit.train.strategies import check_strategy, nodes, strategy_settings

OOM_ADVICE = (
    "out of memory. Try, in order: a smaller train.per_device_batch_size (raise "
    "gradient_accumulation_steps to keep the batch), train.gradient_checkpointing: true, a shorter "
    "train.max_seq_length, train.method: lora or qlora, or train.strategy: zero3 with "
    "offload_optimizer/offload_parameters on several GPUs."
)


@dataclass
class TrainResult:
    run_dir: Path
    final_dir: Path | None
    """The final model folder; None when a signal stopped the run (its checkpoint is resumable)."""
    global_step: int
    stopped_by: str | None
    """The signal that stopped the run early, if any."""
    skipped_nonfinite_steps: int
    train_tokens: TokenizeStats
    eval_tokens: TokenizeStats | None
    metrics: dict = field(default_factory=dict)

    def final(self, then: str = "") -> Path:
        """The final model folder. A run a signal stopped has none: that raises a UserError naming the stage,
        the signal, the step and the checkpoint kept, followed by `then` (what to do next)."""
        if self.final_dir is None:
            raise UserError(
                f"{self.run_dir.name} stopped by {self.stopped_by} at step {self.global_step}; its checkpoint is "
                f"in {self.run_dir}" + (f"; {then}" if then else "")
            )
        return self.final_dir


def resolve_resume(run_dir: Path, resume: str | None) -> Path | None:
    """The checkpoint to resume from: `auto` is the newest complete one (or none yet), else a given folder.
    Starting afresh in a folder that holds checkpoints is refused, so no run's work is overwritten."""
    if resume is None:
        if checkpoint.complete_checkpoints(run_dir):
            raise UserError(
                f"{run_dir} already holds checkpoints: pass --resume auto to continue that run, "
                "or --out a new folder"
            )
        return None
    if resume == "auto":
        latest = checkpoint.latest_checkpoint(run_dir)
        if latest is not None:
            print0(f"resuming from {latest}")
        return latest
    path = Path(resume)
    if not (path / "trainer_state.json").is_file():
        raise UserError(f"--resume {path}: not a checkpoint folder (no trainer_state.json)")
    return path


def load_model(recipe: Recipe, tokenizer, precision: str, run_dir: Path):
    """The model to train and, for adapters, the folder of its base weights.

    A local folder loads as it is (4-bit for QLoRA). A preset builds a new model sized to the tokenizer; an
    adapter is only usable with the exact base weights, so for LoRA/QLoRA those are saved to <run>/base first
    (and QLoRA loads them back quantised: a model built in memory cannot be quantised on construction)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from r1kit.models.create import build_config, r1_generation_config

    cfg, method = recipe.model, recipe.train.method
    check_attn_implementation(cfg.attn_implementation)
    if cfg.preset is not None:
        config = build_config(cfg.preset, tokenizer)
    else:
        config = AutoConfig.from_pretrained(
            resolve_model_dir(cfg.path), trust_remote_code=cfg.trust_remote_code
        )
    if recipe.train.dropout is not None:
        for name in [n for n in config.to_dict() if n.endswith("dropout")]:
            setattr(config, name, recipe.train.dropout)
    kwargs = dict(attn_implementation=cfg.attn_implementation)
    base_dir = Path(cfg.path) if cfg.path else None
    if cfg.preset is not None:
        torch.manual_seed(recipe.seed)
        model = AutoModelForCausalLM.from_config(config, **kwargs)
        model.generation_config = r1_generation_config(tokenizer)
        if method == "full":
            return model, None
        base_dir = run_dir / "base"
        if is_main_process() and not base_dir.exists():  # published whole: the other processes read it
            staged = fresh_staging_dir(base_dir)
            model.save_pretrained(staged)
            tokenizer.save_pretrained(staged)
            publish_dir(staged, base_dir)
        elif not is_main_process():
            wait_for(base_dir, 60 * recipe.train.collective_timeout_minutes, "the base model")
        if method == "lora":
            return model, base_dir
        config = AutoConfig.from_pretrained(base_dir)
    if method == "qlora":
        require_qlora_backend()
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=recipe.train.lora.quant_type,
            bnb_4bit_use_double_quant=recipe.train.lora.double_quant,
            bnb_4bit_compute_dtype={"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
                precision
            ],
        )
    dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
        cfg.dtype
    ]
    model = AutoModelForCausalLM.from_pretrained(
        base_dir, config=config, dtype=dtype, trust_remote_code=cfg.trust_remote_code, **kwargs
    )
    return model, base_dir if method != "full" else None


def configure_wandb(recipe: Recipe, run_dir: Path) -> None:
    """Transformers' W&B integration reads its settings from the environment."""
    import os

    require_module("wandb", "wandb", "train.wandb_project")
    (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
    os.environ.update(
        WANDB_PROJECT=recipe.train.wandb_project,
        WANDB_MODE=recipe.train.wandb_mode,
        WANDB_DIR=str(run_dir),
        WANDB_NAME=recipe.name,
        WANDB_SILENT="true",
    )


def require_qlora_backend() -> None:
    """QLoRA needs bitsandbytes; on a CPU, a release with its CPU backend (0.48 and later)."""
    require_module("bitsandbytes", "gpu", "train.method: qlora")
    if not cuda_available():
        version = package_version("bitsandbytes") or "0"
        if tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) < (0, 48):
            raise UserError(
                f"train.method: qlora on a CPU needs bitsandbytes 0.48 or later (installed: {version}); "
                "use method: lora, or a CUDA GPU"
            )


def lora_config(recipe: Recipe):
    from peft import LoraConfig

    lora = recipe.train.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        task_type="CAUSAL_LM",
        target_modules=lora.target_modules,
    )


def data_dir_of(recipe: Recipe, run_dir: Path) -> Path:
    """The `data clean` folder the run trains on: `train.dataset`, else <run>/data (cleaned from data.inputs)."""
    return Path(recipe.train.dataset) if recipe.train.dataset else run_dir / "data"


def checkpoint_staging(run_dir: Path) -> Path:
    """Where the trainer writes checkpoints; CheckpointPublisher moves each, once complete, into checkpoints/."""
    return checkpoint.checkpoint_dir(run_dir) / checkpoint.STAGING


def shared_trainer_args(recipe: Recipe, run_dir: Path, precision: str) -> dict:
    """The trainer settings SFT and GRPO take alike from `train`: optimizer, schedule, batch, precision,
    logging and checkpoints (retention is r1kit's: CheckpointPublisher; TensorBoard is a callback)."""
    t = recipe.train
    return dict(
        output_dir=str(checkpoint_staging(run_dir)),
        seed=recipe.seed,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # a value below 1 is a fraction of the steps
        weight_decay=t.weight_decay,
        adam_beta1=t.adam_beta1,
        adam_beta2=t.adam_beta2,
        adam_epsilon=t.adam_epsilon,
        max_grad_norm=t.max_grad_norm if t.max_grad_norm > 0 else None,
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        num_train_epochs=t.num_epochs,
        max_steps=t.max_steps or -1,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not cuda_available(),
        activation_checkpointing=t.gradient_checkpointing,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=None,
        report_to=["wandb"] if t.wandb_project else [],
        dataloader_num_workers=0,
        **strategy_settings(recipe, precision, cuda=cuda_available()),
    )


def build_callbacks(
    recipe: Recipe, run_dir: Path, greater_is_better: bool, has_eval: bool, model, precision: str
):
    """The callbacks every stage of the run shares: (list, signal stopper, Prometheus exporter or None)."""
    t = recipe.train
    stopper = StopOnSignal()
    callbacks = [
        CheckpointPublisher(run_dir, t.metric_for_best_model, greater_is_better, t.keep_best),
        stopper,
        TrainClock(run_dir / "train_clock.json", t.max_train_seconds),
    ]
    if t.tensorboard:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(run_dir / "tb"))))
    if has_eval and t.early_stopping_patience:
        from transformers import EarlyStoppingCallback

        callbacks.append(
            EarlyStoppingCallback(
                early_stopping_patience=t.early_stopping_patience,
                early_stopping_threshold=t.early_stopping_min_delta,
            )
        )
    if has_eval and t.stop_at_metric is not None:
        callbacks.append(StopAtMetric(t.metric_for_best_model, t.stop_at_metric, greater_is_better))
    if ReleaseFreedMemory.wanted(precision, cuda_available()):
        callbacks.append(ReleaseFreedMemory())
    exporter = None
    if t.metrics_port is not None:
        from r1kit.dist import world_size
        from r1kit.train.monitor import PrometheusExporter

        exporter = PrometheusExporter(
            t.metrics_host,
            t.metrics_port,
            t.per_device_batch_size * t.gradient_accumulation_steps * world_size(),
        )
        exporter.start()
        callbacks.append(exporter)
    return callbacks, stopper, exporter


def report_failed_saves(trainer, run_dir: Path) -> None:
    """A checkpoint save that fails (a full disk, a quota, a lost mount) ends the run with what happened and
    what is safe: the half-written checkpoint stays in the staging area, never published, and the newest
    complete one is named. (Wraps the trainer's own save, which every engine goes through.)"""
    save = trainer._save_checkpoint

    def saving(*args, **kwargs):
        try:
            return save(*args, **kwargs)
        except Exception as error:
            latest = checkpoint.latest_checkpoint(run_dir)
            safe = (
                f"the newest complete checkpoint, {latest}, is intact" if latest else "no earlier checkpoint"
            )
            raise UserError(
                f"saving the checkpoint of step {trainer.state.global_step} failed ({type(error).__name__}: "
                f"{error}); nothing was published and {safe}. Free some space (or fix the cause), then "
                "continue with --resume auto"
            ) from error

    trainer._save_checkpoint = saving


def start_run(recipe: Recipe, run_dir: Path, resume: str | None):
    """What every training stage does first: (checkpoint to resume from, precision, tokenizer), with r1kit's
    LM head in TRL's on CPUs, the resolved recipe saved into the run folder and the seeds set."""
    from transformers import set_seed

    resume_from = resolve_resume(run_dir, resume)
    precision = choose_precision(recipe.train.precision)
    check_strategy(recipe, cuda=cuda_available(), nodes=nodes())  # before any model is loaded
    if not cuda_available():
        use_for_cpu()
    recipe.save(run_dir)
    set_seed(recipe.seed)
    tokenizer_dir = recipe.model.tokenizer or recipe.model.path
    if tokenizer_dir is None:
        raise UserError("model.tokenizer is needed with model.preset (a folder from `r1kit tokenizer train`)")
    return (
        resume_from,
        precision,
        load_tokenizer(tokenizer_dir, trust_remote_code=recipe.model.trust_remote_code),
    )


def run_record(mode: str, recipe: Recipe, precision: str, **extra) -> dict:
    """The first line of metrics.jsonl: what ran, with which seed, precision and library versions."""
    from r1kit.dist import world_size
    from r1kit.train.strategies import effective_strategy

    versions = {
        name: package_version(name) for name in ("torch", "transformers", "trl", "peft", "deepspeed", "r1kit")
    }
    return {
        "mode": mode,
        "seed": recipe.seed,
        "precision": precision,
        "python": platform.python_version(),
        "processes": world_size(),
        "strategy": effective_strategy(recipe.train),
        "versions": versions,
        **extra,
    }


def step_of(checkpoint_path: Path | None) -> int:
    """The step a checkpoint was saved at (0 for none)."""
    import json

    if checkpoint_path is None:
        return 0
    return json.loads((checkpoint_path / "trainer_state.json").read_text())["global_step"]


def complete_error(run_dir: Path, step: int) -> UserError:
    return UserError(
        f"{run_dir} is complete: its newest checkpoint is at step {step}, the run's last step, "
        f"and its final model is saved in {final_dir_of(run_dir)}"
    )


def final_dir_of(run_dir: Path) -> Path:
    """The run's final model folder. It is published whole (written beside it, then renamed), so it exists only
    once complete."""
    return run_dir / "final"


def save_final(trainer, recipe: Recipe, run_dir: Path, tokenizer, base_dir: Path | None) -> Path:
    """`final/`: a Hugging Face model folder (the last or the best weights); for LoRA the adapter in
    `final/adapter` (its config names the base folder) and, with `train.save_merged`, the merged model in
    `final/`. Written into a staging folder and renamed into place, so a crash while saving leaves no `final/`
    (a re-run with `--resume auto` saves it again) rather than a half-written one. Every process calls it."""
    final_dir = final_dir_of(run_dir)
    staged = staging_dir(final_dir)
    wait_for_everyone = trainer.accelerator.wait_for_everyone
    if is_main_process():
        shutil.rmtree(staged, ignore_errors=True)  # what a crashed save left
    wait_for_everyone()
    model = trainer.model
    if recipe.train.final_model == "best":
        best = checkpoint.best_checkpoint(run_dir, trainer.args.greater_is_better)
        if best is not None:
            print0(f"final model: the best checkpoint, {best}")
            # The trainer's own loader: it knows full, sharded, DeepSpeed and PEFT checkpoint layouts.
            with weights_only_loads():
                trainer._load_from_checkpoint(str(best))
    lora = recipe.train.method in ("lora", "qlora")
    sharded = trainer.is_fsdp_enabled or (trainer.is_deepspeed_enabled and recipe.train.strategy == "zero3")
    if sharded and not lora:
        # Every process holds a shard: the trainer gathers them (a collective, so all processes call it) and the
        # main process writes one plain state dict.
        if trainer.is_fsdp_enabled:
            trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
        trainer.save_model(str(staged))
    if is_main_process():
        _write_final(model, tokenizer, staged, recipe, base_dir, lora=lora, sharded=sharded)
        publish_dir(staged, final_dir)
    wait_for_everyone()  # no process reads final/ before it is in place
    return final_dir


def _write_final(model, tokenizer, out_dir: Path, recipe: Recipe, base_dir, *, lora: bool, sharded: bool):
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "training_args.bin").unlink(missing_ok=True)  # the trainer's pickle; the run has config.yaml
    if lora:
        if base_dir is not None:
            model.peft_config["default"].base_model_name_or_path = str(base_dir)
        model.save_pretrained(out_dir / "adapter")
        tokenizer.save_pretrained(out_dir / "adapter")
        if recipe.train.save_merged:
            model.merge_and_unload().save_pretrained(out_dir)
            tokenizer.save_pretrained(out_dir)
    else:
        if not sharded:
            model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    if model.generation_config is not None and not lora:
        model.generation_config.save_pretrained(out_dir)
