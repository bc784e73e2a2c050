"""A model's size and shape without its weights: parameters counted exactly on PyTorch's meta device (for MoE,
also the active parameters per token), the LoRA trainable count, and the widths that size activations and the
KV cache. The model comes from a preset, a model folder, a config.json, or a well-known checkpoint by name
(`models/known.py`). Used by `r1kit plan`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from r1kit.config import Recipe
from r1kit.errors import UserError

if TYPE_CHECKING:
    from transformers import PretrainedConfig


@dataclass(frozen=True)
class Architecture:
    name: str
    source: str
    total_params: int
    active_params: int
    """Parameters used per token: routed experts count at top-k over the number of experts."""
    embedding_params: int
    """Input embeddings plus an untied output head (kept in bf16 by QLoRA)."""
    lora_params: int
    """Trainable adapter parameters at the recipe's rank and target modules."""
    lora_rank: int
    lora_modules: int
    """Adapted linear layers per decoder layer."""
    lora_input_width: int
    """Summed input features of the adapted linear layers of one decoder layer."""
    layers: int
    hidden: int
    kv_width: int
    """Key (and value) features per token and layer: what the KV cache stores."""
    mlp_width: int
    """MLP features per token (for MoE, the active experts' plus the shared ones)."""
    attn_width: int
    heads: int
    vocab: int
    dtype: str | None = None
    """The dtype recorded in the config (what `model.dtype: auto` loads)."""
    experts: int = 0
    experts_per_token: int = 0


def _model_config(recipe: Recipe) -> tuple[PretrainedConfig, str, str]:
    """(transformers config, name, source) of the recipe's model, without loading weights."""
    from transformers import AutoConfig

    from r1kit.models.known import KNOWN_MODELS, known_config

    cfg = recipe.model
    if cfg.preset is not None:
        from r1kit.models.create import build_config
        from r1kit.models.presets import PRESETS

        tokenizer = _preset_tokenizer(recipe)
        return build_config(cfg.preset, tokenizer), cfg.preset, PRESETS[cfg.preset].summary
    if cfg.path is None:
        raise UserError(
            "model: set `path` (a model folder, a config.json, or a known checkpoint name such as "
            "DeepSeek-R1-Distill-Qwen-7B) or `preset`"
        )
    path = Path(cfg.path)
    if path.is_file() and path.suffix == ".json":
        return (
            AutoConfig.from_pretrained(
                path.parent if path.name == "config.json" else path, trust_remote_code=cfg.trust_remote_code
            ),
            path.stem,
            str(path),
        )
    if (path / "config.json").is_file():
        return (
            AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code),
            path.name,
            str(path / "config.json"),
        )
    known = known_config(cfg.path)
    if known is None:
        raise UserError(
            f"model.path: {cfg.path} has no config.json, and its name is not a checkpoint r1kit knows "
            f"({', '.join(KNOWN_MODELS)}); point it to a folder or a config.json"
        )
    return known, path.name, "published config (r1kit's table of known checkpoints)"


class _SizedVocabulary:
    """Stands in for a tokenizer when a preset is planned before its tokenizer exists."""

    bos_token_id, eos_token_id, pad_token_id = 0, 1, 2

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size


def _preset_tokenizer(recipe: Recipe) -> Any:
    folder = recipe.model.tokenizer
    if folder and Path(folder).is_dir():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(folder)
    return _SizedVocabulary(recipe.tokenizer.vocab_size)


def _count(config: PretrainedConfig, lora_rank: int, lora_targets: list[str] | str) -> dict[str, int]:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    counts = parameter_counts(model, config)
    head = model.get_output_embeddings()
    lora = modules = inputs = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or module is head:
            continue
        if lora_targets == "all-linear" or name.rsplit(".", 1)[-1] in lora_targets:
            lora += lora_rank * (module.in_features + module.out_features)
            modules, inputs = modules + 1, inputs + module.in_features
    layers = config.get_text_config().num_hidden_layers
    return {**counts, "lora": lora, "lora_modules": modules // layers, "lora_inputs": inputs // layers}


def parameter_counts(model: Any, config: PretrainedConfig) -> dict[str, int]:
    """{total, active (routed experts at top-k over their number), embeddings (input plus an untied head),
    experts, top_k} of a model (on any device, `meta` included)."""
    experts = next(
        (
            getattr(config, k)
            for k in ("n_routed_experts", "num_local_experts", "num_experts")
            if getattr(config, k, None)
        ),
        0,
    )
    top_k = getattr(config, "num_experts_per_tok", 0) or 0
    total = routed = 0
    for name, param in model.named_parameters():
        quantised = getattr(param, "quant_state", None)  # 4-bit weights (QLoRA) are stored two to a byte
        count = math.prod(quantised.shape) if quantised is not None else param.numel()
        total += count
        if experts and ".experts." in f"{name}." and "shared" not in name:
            routed += count
    embeddings = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings()
    if head is not None and head.weight is not model.get_input_embeddings().weight:
        embeddings += head.weight.numel()
    active = total - routed + (routed * top_k // experts if experts else 0)
    return {"total": total, "active": active, "embeddings": embeddings, "experts": experts, "top_k": top_k}


def describe_model(recipe: Recipe) -> Architecture:
    config, name, source = _model_config(recipe)
    text = config.get_text_config()
    counts = _count(config, recipe.train.lora.r, recipe.train.lora.target_modules)
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    if getattr(
        text, "kv_lora_rank", None
    ):  # multi-head latent attention caches one compressed latent per token
        kv_width = text.kv_lora_rank + text.qk_rope_head_dim
        head_dim = getattr(text, "v_head_dim", head_dim)
    else:
        kv_width = kv_heads * head_dim
    mlp = getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or 4 * text.hidden_size
    if counts["experts"]:
        mlp = (
            text.moe_intermediate_size * (counts["top_k"] + (getattr(text, "n_shared_experts", 0) or 0))
            if getattr(text, "moe_intermediate_size", None)
            else mlp * counts["top_k"]
        )
    return Architecture(
        name,
        source,
        counts["total"],
        counts["active"],
        counts["embeddings"],
        counts["lora"],
        recipe.train.lora.r,
        counts["lora_modules"],
        counts["lora_inputs"],
        text.num_hidden_layers,
        text.hidden_size,
        kv_width,
        mlp,
        heads * head_dim,
        heads,
        text.vocab_size,
        str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "") or None,
        counts["experts"],
        counts["top_k"],
    )
