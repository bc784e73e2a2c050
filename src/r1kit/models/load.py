"""Loading local Hugging Face model folders: r1kit's presets and real checkpoints go through the same code.

Nothing is downloaded: a path that is not a model folder is an error, not a hub id. Weights load from
safetensors (transformers reads legacy .bin files with `torch.load(weights_only=True)`), and
`trust_remote_code` stays off unless the recipe turns it on.
"""

from __future__ import annotations

from pathlib import Path

from r1kit.errors import UserError
from r1kit.hardware import require_cuda, require_module
from r1kit.quiet import quiet_transformers


def resolve_model_dir(path: str | Path, what: str = "model") -> Path:
    """Check that `path` is a local Hugging Face folder with a config.json."""
    model_dir = Path(path)
    if not model_dir.exists():
        raise UserError(f"{what} folder not found: {model_dir} (r1kit loads local folders only, no hub ids)")
    if not model_dir.is_dir():
        raise UserError(f"{what} path {model_dir} is a file; expected a Hugging Face model folder")
    if what == "model" and not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir} has no config.json: not a Hugging Face model folder")
    return model_dir


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    quiet_transformers()
    tokenizer_dir = resolve_model_dir(path, "tokenizer")
    if not any((tokenizer_dir / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise UserError(f"{tokenizer_dir} holds no tokenizer (tokenizer.json or tokenizer_config.json)")
    return AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=trust_remote_code)


def check_attn_implementation(name: str) -> None:
    """Refuse an attention kernel this machine cannot run (flash-attention needs CUDA and its package)."""
    if name == "flash_attention_2":
        require_cuda("model.attn_implementation: flash_attention_2")
        require_module("flash_attn", "gpu", "model.attn_implementation: flash_attention_2")


def load_model(
    path: str | Path,
    *,
    dtype: str = "auto",
    attn_implementation: str = "sdpa",
    trust_remote_code: bool = False,
):
    """Load a causal LM from a local folder, refusing kernels this machine cannot run."""
    from transformers import AutoModelForCausalLM

    model_dir = resolve_model_dir(path)
    check_attn_implementation(attn_implementation)
    return AutoModelForCausalLM.from_pretrained(
        model_dir,
        dtype=dtype,
        attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
    )


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
