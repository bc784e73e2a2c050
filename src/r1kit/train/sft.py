"""`r1kit train sft` / `r1kit train pretrain`: supervised fine-tuning (full, LoRA) and causal-LM pretraining
on TRL's SFTTrainer.

Reads top to bottom: run folder and resume point → precision → tokenizer and model → data (cleaned, then
tokenized here so truncation is counted) → trainer config → callbacks → train → final model.

Departures from TRL's defaults, and why:
- packing is on, into rows of `max_seq_length` with position ids restarting per example (padding-free);
  TRL's default pads every batch, which on our 2-core CPUs wasted ~3x the compute on padding;
- precision `auto` picks bf16 autocast on CPUs with native bf16 (TRL: bf16 everywhere, or fp32 with use_cpu);
- the loss is on assistant tokens only (the chat template marks them), TRL's default is the whole text;
- checkpoints are staged then renamed (never half-written), retention keeps the best k by metric plus the last,
  where `save_total_limit` keeps one best and writes in place.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from r1kit.config import Recipe
from r1kit.data.tokenize import TokenizeStats, load_split, tokenize_dataset
from r1kit.dist import is_main_process, print0
from r1kit.errors import UserError
from r1kit.hardware import choose_precision, cuda_available, package_version, require_cuda, require_module
from r1kit.models.load import load_tokenizer, resolve_model_dir
from r1kit.train import checkpoint
from r1kit.train.callbacks import CheckpointPublisher, MetricsLogger, NonFiniteGuard, StopOnSignal

Mode = Literal["sft", "pretrain"]
OOM_ADVICE = ("out of memory. Try, in order: a smaller train.per_device_batch_size (raise "
              "gradient_accumulation_steps to keep the batch), train.gradient_checkpointing: true, a shorter "
              "train.max_seq_length, train.method: lora (or qlora on a GPU), or train.strategy: zero3 with "
              "offload_optimizer/offload_parameters on several GPUs.")


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


def resolve_resume(run_dir: Path, resume: str | None) -> Path | None:
    """The checkpoint to resume from: `auto` is the newest complete one (or none yet), else a given folder.
    Starting afresh in a folder that holds checkpoints is refused, so no run's work is overwritten."""
    if resume is None:
        if checkpoint.complete_checkpoints(run_dir):
            raise UserError(f"{run_dir} already holds checkpoints: pass --resume auto to continue that run, "
                            "or --out a new folder")
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


def load_model(recipe: Recipe, tokenizer, precision: str):
    """The model to train: a local folder, or a new model of a preset sized to the tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from r1kit.models.create import build_config, r1_generation_config

    cfg = recipe.model
    if cfg.attn_implementation == "flash_attention_2":
        require_cuda("model.attn_implementation: flash_attention_2")
        require_module("flash_attn", "gpu", "model.attn_implementation: flash_attention_2")
    if cfg.preset is not None:
        config = build_config(cfg.preset, tokenizer)
    else:
        config = AutoConfig.from_pretrained(resolve_model_dir(cfg.path), trust_remote_code=cfg.trust_remote_code)
    if recipe.train.dropout is not None:
        for name in [n for n in config.to_dict() if n.endswith("dropout")]:
            setattr(config, name, recipe.train.dropout)
    kwargs = dict(attn_implementation=cfg.attn_implementation)
    if recipe.train.method == "qlora":
        require_cuda("train.method: qlora")
        require_module("bitsandbytes", "gpu", "train.method: qlora")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=recipe.train.lora.quant_type,
            bnb_4bit_use_double_quant=recipe.train.lora.double_quant,
            bnb_4bit_compute_dtype=torch.bfloat16 if precision == "bf16" else torch.float16,
        )
    if cfg.preset is not None:
        torch.manual_seed(recipe.seed)
        model = AutoModelForCausalLM.from_config(config, **kwargs)
        model.generation_config = r1_generation_config(tokenizer)
        return model
    dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.dtype]
    return AutoModelForCausalLM.from_pretrained(resolve_model_dir(cfg.path), config=config, dtype=dtype,
                                                trust_remote_code=cfg.trust_remote_code, **kwargs)


def configure_wandb(recipe: Recipe, run_dir: Path) -> None:
    """Transformers' W&B integration reads its settings from the environment."""
    import os

    require_module("wandb", "wandb", "train.wandb_project")
    (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
    os.environ.update(WANDB_PROJECT=recipe.train.wandb_project, WANDB_MODE=recipe.train.wandb_mode,
                      WANDB_DIR=str(run_dir), WANDB_NAME=recipe.name, WANDB_SILENT="true")


def lora_config(recipe: Recipe):
    from peft import LoraConfig

    lora = recipe.train.lora
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, task_type="CAUSAL_LM",
                      target_modules=lora.target_modules)


def prepare_data(recipe: Recipe, run_dir: Path, tokenizer, mode: Mode):
    """Tokenized train and validation sets (validation None when the split is empty), with counts."""
    train = recipe.train
    data_dir = Path(train.dataset) if train.dataset else run_dir / "data"
    if not train.dataset and not (data_dir / "report.json").is_file():
        if not recipe.data.inputs:
            raise UserError("no training data: set train.dataset (a `r1kit data clean` folder) or data.inputs")
        from r1kit.data.clean import clean

        print0(f"cleaning {', '.join(recipe.data.inputs)} into {data_dir}")
        clean(recipe.data.inputs, data_dir, recipe.data, seed=recipe.seed)
    assistant_only = train.assistant_only_loss and mode == "sft"
    kwargs = dict(max_seq_length=train.max_seq_length, assistant_only_loss=assistant_only,
                  truncation=train.truncation, num_proc=recipe.data.num_proc)
    train_ds, train_stats = tokenize_dataset(load_split(data_dir, "train"), tokenizer, **kwargs)
    if train_stats.num_kept == 0:
        raise UserError(f"{data_dir}: no training example is left after tokenization ({train_stats.to_dict()})")
    eval_ds, eval_stats = None, None
    if list((data_dir / "validation").glob("*.parquet")):
        eval_ds, eval_stats = tokenize_dataset(load_split(data_dir, "validation"), tokenizer, **kwargs)
    print0(f"train: {train_stats.num_kept} examples, {train_stats.num_tokens} tokens "
           f"({train_stats.num_truncated} truncated, {train_stats.num_dropped_too_long} dropped as too long, "
           f"{train_stats.num_dropped_no_trainable_tokens} without trainable tokens)")
    return train_ds, eval_ds, train_stats, eval_stats


def trainer_config(recipe: Recipe, run_dir: Path, precision: str, has_eval: bool):
    from trl import SFTConfig

    t = recipe.train
    greater_is_better = not t.metric_for_best_model.endswith(("loss", "perplexity"))
    return SFTConfig(
        output_dir=str(checkpoint.checkpoint_dir(run_dir) / checkpoint.STAGING),
        seed=recipe.seed,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # a value below 1 is a fraction of the steps
        weight_decay=t.weight_decay,
        adam_beta1=t.adam_beta1,
        adam_beta2=t.adam_beta2,
        adam_epsilon=t.adam_epsilon,
        per_device_train_batch_size=t.per_device_batch_size,
        per_device_eval_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        num_train_epochs=t.num_epochs,
        max_steps=t.max_steps or -1,
        max_length=t.max_seq_length,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not cuda_available(),
        activation_checkpointing=t.gradient_checkpointing,
        max_grad_norm=t.max_grad_norm if t.max_grad_norm > 0 else None,
        label_smoothing_factor=t.label_smoothing,
        torch_compile=t.torch_compile,
        packing=t.packing,
        packing_strategy="bfd",
        padding_free=t.packing,
        assistant_only_loss=False,  # the masks were made when tokenizing; TRL applies `assistant_masks` as given
        logging_steps=t.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=t.eval_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=None,  # retention is r1kit's (CheckpointPublisher)
        metric_for_best_model=t.metric_for_best_model if has_eval else None,
        greater_is_better=greater_is_better,
        load_best_model_at_end=False,
        include_num_input_tokens_seen="non_padding",
        report_to=["wandb"] if t.wandb_project else [],  # TensorBoard is a callback writing to <run>/tb
        dataloader_num_workers=0,
        **t.extra,
    )


def train_sft(recipe: Recipe, run_dir: str | Path | None = None, *, resume: str | None = None,
              mode: Mode = "sft") -> TrainResult:
    """Train per `recipe.train` into `run_dir` (default runs/<name>)."""
    import torch
    from transformers import set_seed
    from trl import SFTTrainer

    run_dir = Path(run_dir) if run_dir else recipe.run_dir
    resume_from = resolve_resume(run_dir, resume)
    precision = choose_precision(recipe.train.precision)
    recipe.save(run_dir)
    set_seed(recipe.seed)

    tokenizer_dir = recipe.model.tokenizer or recipe.model.path
    if tokenizer_dir is None:
        raise UserError("model.tokenizer is needed with model.preset (a folder from `r1kit tokenizer train`)")
    tokenizer = load_tokenizer(tokenizer_dir, trust_remote_code=recipe.model.trust_remote_code)
    train_ds, eval_ds, train_stats, eval_stats = prepare_data(recipe, run_dir, tokenizer, mode)
    model = load_model(recipe, tokenizer, precision)
    base_dir = Path(recipe.model.path) if recipe.model.path else None
    if recipe.train.method in ("lora", "qlora") and recipe.model.preset is not None:
        # The adapter is only usable with the exact base weights: a new preset model's live nowhere else.
        base_dir = run_dir / "base"
        if is_main_process() and not base_dir.exists():
            model.save_pretrained(base_dir)
            tokenizer.save_pretrained(base_dir)

    if recipe.train.wandb_project:
        configure_wandb(recipe, run_dir)
    args = trainer_config(recipe, run_dir, precision, has_eval=eval_ds is not None)
    versions = {name: package_version(name) for name in ("torch", "transformers", "trl", "peft", "r1kit")}
    metrics_logger = MetricsLogger(run_dir / "metrics.jsonl", {
        "mode": mode, "seed": recipe.seed, "precision": precision, "python": platform.python_version(),
        "versions": versions, "train_tokens": train_stats.to_dict(),
        "eval_tokens": eval_stats.to_dict() if eval_stats else None, "resumed_from": str(resume_from or ""),
    })
    publisher = CheckpointPublisher(run_dir, recipe.train.metric_for_best_model, args.greater_is_better,
                                    recipe.train.keep_best)
    stopper = StopOnSignal()
    callbacks = [publisher, stopper]
    if recipe.train.tensorboard:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(run_dir / "tb"))))
    if eval_ds is not None and recipe.train.early_stopping_patience:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(early_stopping_patience=recipe.train.early_stopping_patience,
                                               early_stopping_threshold=recipe.train.early_stopping_min_delta))
    exporter = None
    if recipe.train.metrics_port is not None:
        from r1kit.dist import world_size
        from r1kit.train.monitor import PrometheusExporter, device_peak_flops

        exporter = PrometheusExporter(
            recipe.train.metrics_host, recipe.train.metrics_port, sum(p.numel() for p in model.parameters()),
            device_peak_flops(recipe.train.peak_tflops),
            recipe.train.per_device_batch_size * recipe.train.gradient_accumulation_steps * world_size(),
        )
        metrics_logger.first_record["metrics_port"] = exporter.start()
        callbacks.append(exporter)
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
        peft_config=lora_config(recipe) if recipe.train.method in ("lora", "qlora") else None, callbacks=callbacks,
    )
    # First, so that perplexity and tokens/s are in the logs before TensorBoard's callback sees them.
    trainer.callback_handler.callbacks.insert(0, metrics_logger)
    guard = NonFiniteGuard(trainer, recipe.train.max_nonfinite_steps)
    try:
        output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except torch.OutOfMemoryError:
        raise UserError(OOM_ADVICE) from None
    finally:
        if exporter is not None:
            exporter.stop()
    if stopper.received:  # the checkpoint is saved; the run continues with --resume auto
        return TrainResult(run_dir, None, trainer.state.global_step, stopper.received, guard.skipped, train_stats,
                           eval_stats, output.metrics)
    final_dir = save_final(trainer, recipe, run_dir, tokenizer, base_dir)
    return TrainResult(run_dir, final_dir, trainer.state.global_step, None, guard.skipped, train_stats, eval_stats,
                       output.metrics)


def save_final(trainer, recipe: Recipe, run_dir: Path, tokenizer, base_dir: Path | None) -> Path:
    """`final/`: a Hugging Face model folder (the last or the best weights); for LoRA the adapter in
    `final/adapter` (its config names the base folder) and, with `train.save_merged`, the merged model in
    `final/`."""
    final_dir = run_dir / "final"
    model = trainer.model
    if recipe.train.final_model == "best":
        best = _best_checkpoint(run_dir, trainer.args.greater_is_better)
        if best is not None:
            print0(f"final model: the best checkpoint, {best}")
            # The trainer's own loader: it knows full, sharded, DeepSpeed and PEFT checkpoint layouts.
            trainer._load_from_checkpoint(str(best))
    if not is_main_process():
        return final_dir
    lora = recipe.train.method in ("lora", "qlora")
    if lora:
        if base_dir is not None:
            model.peft_config["default"].base_model_name_or_path = str(base_dir)
        model.save_pretrained(final_dir / "adapter")
        tokenizer.save_pretrained(final_dir / "adapter")
        if recipe.train.save_merged:
            model.merge_and_unload().save_pretrained(final_dir)
            tokenizer.save_pretrained(final_dir)
    else:
        model.save_pretrained(final_dir)
        tokenizer.save_pretrained(final_dir)
    if model.generation_config is not None and not lora:
        model.generation_config.save_pretrained(final_dir)
    return final_dir


def _best_checkpoint(run_dir: Path, greater_is_better: bool) -> Path | None:
    scored = {step: checkpoint.metric_of(path) for step, path in checkpoint.complete_checkpoints(run_dir).items()}
    scored = {step: m for step, m in scored.items() if m is not None}
    if not scored:
        return None
    pick = max if greater_is_better else min
    return checkpoint.complete_checkpoints(run_dir)[pick(scored, key=scored.get)]
