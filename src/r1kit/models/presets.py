"""Model presets: architecture settings for models r1kit builds from scratch.

Each preset is the Hugging Face config of a real architecture at a small size, so a model trained from a
preset loads with plain `AutoModelForCausalLM.from_pretrained` and runs on every engine that runs the full-size
model. The vocabulary size and special-token ids come from the tokenizer the model is built for. Every linear
layer's width is a multiple of 32, which bitsandbytes' 4-bit CPU kernels (QLoRA on a CPU) require.

- `qwen2` is the architecture of the DeepSeek-R1-Distill-Qwen models (GQA attention, SwiGLU, RMSNorm, RoPE).
- `deepseek_v3` is the architecture of DeepSeek-V3 and R1: multi-head latent attention (low-rank compressed
  queries and key/values with decoupled RoPE dims), the first layers dense, the rest mixture-of-experts with
  shared experts and group-limited top-k routing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Preset:
    name: str
    model_type: str
    """Hugging Face `model_type` (selects the config and model classes)."""
    summary: str
    settings: dict[str, Any]
    """Config fields other than the vocabulary and special-token ids."""


_QWEN2_COMMON = dict(
    hidden_act="silu",
    rms_norm_eps=1e-6,
    use_sliding_window=False,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
)

_DEEPSEEK_V3_COMMON = dict(
    hidden_act="silu",
    rms_norm_eps=1e-6,
    n_shared_experts=1,
    routed_scaling_factor=2.5,
    norm_topk_prob=True,
    first_k_dense_replace=1,
    rope_interleave=True,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    # Multi-token prediction modules are a pretraining aid of the full model; a new small model starts without.
    num_mtp_layers=0,
)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "tiny-qwen2",
            "qwen2",
            "Qwen2 (R1-Distill-Qwen architecture), 2 layers, hidden 64: tests and smoke runs",
            dict(
                _QWEN2_COMMON,
                hidden_size=64,
                intermediate_size=192,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=2048,
                tie_word_embeddings=True,
            ),
        ),
        Preset(
            "tiny-deepseek-v3",
            "deepseek_v3",
            "DeepSeek-V3 (MLA + routed/shared MoE), 2 layers, hidden 64, 8 experts top-2: tests",
            dict(
                _DEEPSEEK_V3_COMMON,
                hidden_size=64,
                intermediate_size=192,
                moe_intermediate_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=4,
                q_lora_rank=32,
                kv_lora_rank=24,  # + the 8 RoPE dims: 32-wide projections, as 4-bit CPU kernels require
                qk_nope_head_dim=16,
                qk_rope_head_dim=8,
                v_head_dim=16,
                n_routed_experts=8,
                num_experts_per_tok=2,
                n_group=2,
                topk_group=1,
                max_position_embeddings=2048,
                tie_word_embeddings=False,
            ),
        ),
        Preset(
            "mini-qwen2",
            "qwen2",
            "Qwen2, 4 layers, hidden 256 (~3.3M params with a 512 vocabulary): RL that learns on 2 CPU cores",
            dict(
                _QWEN2_COMMON,
                hidden_size=256,
                intermediate_size=704,
                num_hidden_layers=4,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=1024,
                tie_word_embeddings=True,
            ),
        ),
        Preset(
            "small-qwen2",
            "qwen2",
            "Qwen2, 8 layers, hidden 512, GQA 8/4 heads (~28M params with an 8k vocabulary): the CPU demo",
            dict(
                _QWEN2_COMMON,
                hidden_size=512,
                intermediate_size=1408,
                num_hidden_layers=8,
                num_attention_heads=8,
                num_key_value_heads=4,
                max_position_embeddings=4096,
                tie_word_embeddings=True,
            ),
        ),
        Preset(
            "small-deepseek-v3",
            "deepseek_v3",
            "DeepSeek-V3, 6 layers, hidden 384, 16 experts top-4 (~35M params, ~12M active, 8k vocabulary)",
            dict(
                _DEEPSEEK_V3_COMMON,
                hidden_size=384,
                intermediate_size=1024,
                moe_intermediate_size=256,
                num_hidden_layers=6,
                num_attention_heads=6,
                num_key_value_heads=6,
                q_lora_rank=192,
                kv_lora_rank=128,
                qk_nope_head_dim=32,
                qk_rope_head_dim=32,
                v_head_dim=64,
                n_routed_experts=16,
                num_experts_per_tok=4,
                n_group=4,
                topk_group=2,
                max_position_embeddings=4096,
                tie_word_embeddings=False,
            ),
        ),
    ]
}
