"""How training spreads over processes: the trainer settings for DDP, DeepSpeed ZeRO and FSDP2 from the recipe.

r1kit writes the DeepSpeed and FSDP configs itself (or takes the user's DeepSpeed JSON from
`train.deepspeed_config`) and hands them to the Hugging Face Trainer, which runs them through accelerate. What
it refuses instead of letting the stack downgrade silently:
- FSDP without CUDA GPUs: accelerate turns it into plain DDP on CPU, every process holding the whole model;
- ZeRO without the deepspeed package, QLoRA under ZeRO-3 (its 4-bit weights cannot be partitioned);
- FSDP hybrid shard on one node (it is full shard there).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from r1kit.config import Recipe, TrainConfig
from r1kit.errors import UserError
from r1kit.hardware import require_module
from r1kit.train.op_builds import clear_stale_build_locks

ZERO_STAGES = {"zero1": 1, "zero2": 2, "zero3": 3}


def nodes() -> int:
    """Nodes of the current torchrun launch (1 outside one)."""
    return max(
        int(os.environ.get("WORLD_SIZE", "1")) // max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1), 1
    )


def effective_strategy(t: TrainConfig) -> str:
    """`auto` is DDP (one process is DDP of one)."""
    return "ddp" if t.strategy == "auto" else t.strategy


def check_strategy(recipe: Recipe, *, cuda: bool, nodes: int = 1) -> None:
    t = recipe.train
    strategy = effective_strategy(t)
    if strategy == "fsdp" and not cuda:
        raise UserError(
            "train.strategy: fsdp needs CUDA GPUs; on CPUs accelerate would silently run plain DDP "
            "(every process holding the whole model). Use ddp, or zero2/zero3 (DeepSpeed runs on CPUs)"
        )
    if strategy == "fsdp" and t.fsdp_sharding == "hybrid" and nodes < 2:
        raise UserError(
            "train.fsdp_sharding: hybrid shards within a node and replicates across nodes; on one node "
            "use full"
        )
    if strategy in ZERO_STAGES or t.deepspeed_config:
        require_module("deepspeed", "deepspeed", f"train.strategy: {strategy}")
        if t.method == "qlora" and strategy == "zero3":
            raise UserError(
                "train.method: qlora cannot run under zero3 (4-bit weights are not partitioned); "
                "use zero2 or ddp"
            )
    if t.deepspeed_config and strategy not in ZERO_STAGES:
        raise UserError(
            f"train.deepspeed_config is given but train.strategy is {t.strategy!r}; set it to the "
            "file's ZeRO stage (zero1, zero2 or zero3)"
        )


def find_ninja() -> None:
    """DeepSpeed compiles its ops on first use with ninja, which torch looks up on PATH. pip installs ninja next to
    the interpreter, which is not on PATH when r1kit runs from a virtualenv that was not activated: add it."""
    import shutil

    if shutil.which("ninja"):
        return
    beside = Path(sys.executable).parent
    if (beside / "ninja").is_file():
        os.environ["PATH"] = f"{beside}{os.pathsep}{os.environ.get('PATH', '')}"
        return
    raise UserError("DeepSpeed compiles its ops with ninja, which is not installed: pip install ninja")


def deepspeed_config(t: TrainConfig, precision: str, *, cuda: bool) -> dict:
    """A DeepSpeed config for the recipe's ZeRO stage; batch sizes, clipping and the optimizer stay `auto`, so
    the Trainer fills them from the same recipe fields as without DeepSpeed."""
    if t.deepspeed_config:
        path = Path(t.deepspeed_config)
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"train.deepspeed_config: cannot read {path}: {exc}") from None
        stage = config.get("zero_optimization", {}).get("stage")
        if stage != ZERO_STAGES[effective_strategy(t)]:
            raise UserError(
                f"train.deepspeed_config: {path} sets ZeRO stage {stage}, but train.strategy is {t.strategy}"
            )
        return config
    stage = ZERO_STAGES[effective_strategy(t)]
    zero: dict = {
        "stage": stage,
        "overlap_comm": cuda,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if stage == 3:
        # the final save gathers the 16-bit weights into one plain state dict
        zero.update(
            stage3_gather_16bit_weights_on_model_save=True,
            stage3_prefetch_bucket_size="auto",
            stage3_param_persistence_threshold="auto",
        )
    if t.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": cuda}
    if t.offload_parameters:
        zero["offload_param"] = {"device": "cpu", "pin_memory": cuda}
    return {
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "loss_scale": 0},  # 0: dynamic loss scaling
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": True,
    }


def decoder_layer_class(recipe: Recipe) -> str | None:
    """Name of the model's decoder layer class (what FSDP shards by), read from its config without weights."""
    import transformers
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from r1kit.models.load import resolve_model_dir
    from r1kit.models.presets import PRESETS

    cfg = recipe.model
    model_type = (
        PRESETS[cfg.preset].model_type
        if cfg.preset
        else AutoConfig.from_pretrained(
            resolve_model_dir(cfg.path), trust_remote_code=cfg.trust_remote_code
        ).model_type
    )
    model_class = getattr(transformers, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type, ""), None)
    layers = getattr(model_class, "_no_split_modules", None) or []
    return layers[0] if layers else None


def fsdp_settings(recipe: Recipe, layer_class: str) -> dict:
    """FSDP2 through accelerate: each decoder layer its own shard unit, sharded checkpoints (consolidated by
    `r1kit export`), hybrid shard as a 2-D mesh (replicate across nodes, shard within one)."""
    t = recipe.train
    settings: dict = {
        "fsdp": True,
        "fsdp_config": {
            "version": 2,
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "transformer_layer_cls_to_wrap": [layer_class],
            "state_dict_type": "SHARDED_STATE_DICT",
            "reshard_after_forward": True,
            "activation_checkpointing": t.gradient_checkpointing,
            "cpu_ram_efficient_loading": True,
        },
    }
    if t.fsdp_sharding == "hybrid":
        from accelerate.parallelism_config import ParallelismConfig

        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        settings["parallelism_config"] = ParallelismConfig(dp_replicate_size=nodes(), dp_shard_size=local)
    return settings


def strategy_settings(recipe: Recipe, precision: str, *, cuda: bool) -> dict:
    """Trainer settings for the recipe's strategy (which `check_strategy` has accepted at start-up), plus the
    collective timeout."""
    t = recipe.train
    settings: dict = {"ddp_timeout": t.collective_timeout_minutes * 60}
    strategy = effective_strategy(t)
    if strategy in ZERO_STAGES:
        find_ninja()
        if os.environ.get("LOCAL_RANK", "0") == "0":  # one process per machine: the locks are the machine's
            for message in clear_stale_build_locks():
                print(f"r1kit: {message}", file=sys.stderr)
        settings["deepspeed"] = deepspeed_config(t, precision, cuda=cuda)
    elif strategy == "fsdp":
        layer_class = decoder_layer_class(recipe)
        if layer_class is None:
            raise UserError("train.strategy: fsdp could not find the model's decoder layer class to shard by")
        settings.update(fsdp_settings(recipe, layer_class))
    return settings
