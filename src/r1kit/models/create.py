"""Creating a new, randomly initialised model folder from a preset and a tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from r1kit.errors import UserError
from r1kit.models.load import count_parameters, load_tokenizer
from r1kit.models.presets import PRESETS


@dataclass
class InitResult:
    out_dir: Path
    preset: str
    num_parameters: int


def build_config(preset_name: str, tokenizer):
    """The Hugging Face config of `preset_name`, sized to `tokenizer`'s vocabulary and special tokens."""
    from transformers import AutoConfig

    if preset_name not in PRESETS:
        raise UserError(f"unknown preset {preset_name!r}; available: {', '.join(PRESETS)}")
    preset = PRESETS[preset_name]
    return AutoConfig.for_model(
        preset.model_type,
        # Exactly the tokenizer's size: a padded vocabulary lets an untrained model sample ids with no text.
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **preset.settings,
    )


def r1_generation_config(tokenizer):
    """DeepSeek's recommended sampling for R1 models (temperature 0.6, top-p 0.95); generation stops at EOS."""
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=True,
        temperature=0.6,
        top_p=0.95,
    )


def init_model(
    preset_name: str, tokenizer_dir: str | Path, out_dir: str | Path, *, seed: int = 42
) -> InitResult:
    """Write a Hugging Face folder (config, safetensors weights, tokenizer, generation config) for a new
    model of `preset_name`, initialised with `seed`."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(tokenizer_dir)
    config = build_config(preset_name, tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = r1_generation_config(tokenizer)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return InitResult(out_dir, preset_name, count_parameters(model))
