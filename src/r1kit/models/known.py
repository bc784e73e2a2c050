"""Architectures of well-known checkpoints, for planning runs of models that are not on this machine.

Only the config.json fields that size the model are kept (the values are those of the published configs).
`r1kit plan` builds the model from them on PyTorch's meta device to count its parameters exactly, without
weights or downloads. A recipe's `model.path` is matched by its last path component, so
`models/DeepSeek-R1-Distill-Qwen-7B` finds `DeepSeek-R1-Distill-Qwen-7B`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PretrainedConfig

_QWEN2 = dict(
    model_type="qwen2",
    dtype="bfloat16",
    vocab_size=152064,
    tie_word_embeddings=False,
    hidden_act="silu",
    max_position_embeddings=131072,
)
_LLAMA = dict(
    model_type="llama",
    dtype="bfloat16",
    vocab_size=128256,
    tie_word_embeddings=False,
    hidden_act="silu",
    max_position_embeddings=131072,
)
_DEEPSEEK_V3 = dict(
    model_type="deepseek_v3",
    dtype="bfloat16",
    vocab_size=129280,
    hidden_size=7168,
    intermediate_size=18432,
    moe_intermediate_size=2048,
    num_hidden_layers=61,
    num_attention_heads=128,
    num_key_value_heads=128,
    n_shared_experts=1,
    n_routed_experts=256,
    num_experts_per_tok=8,
    first_k_dense_replace=3,
    n_group=8,
    topk_group=4,
    q_lora_rank=1536,
    kv_lora_rank=512,
    qk_nope_head_dim=128,
    qk_rope_head_dim=64,
    v_head_dim=128,
    tie_word_embeddings=False,
    max_position_embeddings=163840,
)

KNOWN_MODELS: dict[str, dict[str, Any]] = {
    "DeepSeek-R1-Distill-Qwen-1.5B": dict(
        _QWEN2,
        vocab_size=151936,
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
    ),
    "DeepSeek-R1-Distill-Qwen-7B": dict(
        _QWEN2,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
    ),
    "DeepSeek-R1-Distill-Qwen-14B": dict(
        _QWEN2,
        hidden_size=5120,
        intermediate_size=13824,
        num_hidden_layers=48,
        num_attention_heads=40,
        num_key_value_heads=8,
    ),
    "DeepSeek-R1-Distill-Qwen-32B": dict(
        _QWEN2,
        hidden_size=5120,
        intermediate_size=27648,
        num_hidden_layers=64,
        num_attention_heads=40,
        num_key_value_heads=8,
    ),
    "DeepSeek-R1-Distill-Llama-8B": dict(
        _LLAMA,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
    ),
    "DeepSeek-R1-Distill-Llama-70B": dict(
        _LLAMA,
        hidden_size=8192,
        intermediate_size=28672,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=8,
    ),
    "DeepSeek-R1": _DEEPSEEK_V3,
    "DeepSeek-R1-0528": _DEEPSEEK_V3,
    "DeepSeek-V3": _DEEPSEEK_V3,
    "DeepSeek-V3-0324": _DEEPSEEK_V3,
}


def known_config(name: str) -> PretrainedConfig | None:
    """The transformers config of a known checkpoint named `name` (or a path ending in it), else None."""
    from transformers import AutoConfig

    key = name.rstrip("/").rsplit("/", 1)[-1]
    fields = {k.lower(): v for k, v in KNOWN_MODELS.items()}.get(key.lower())
    if fields is None:
        return None
    settings = dict(fields)
    return AutoConfig.for_model(settings.pop("model_type"), **settings)
