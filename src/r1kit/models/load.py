"""Loading local Hugging Face model folders: r1kit's presets and real checkpoints go through the same code.

Nothing is downloaded: a path that is not a model folder is an error, not a hub id. Weights load from
safetensors (transformers reads legacy .bin files with `torch.load(weights_only=True)`), DeepSpeed's ZeRO
checkpoints too (`weights_only_loads`), and `trust_remote_code` stays off unless the recipe turns it on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
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


def find_gguf(path: str | Path) -> Path | None:
    """The GGUF file `path` names: the file itself, or the one `.gguf` file in a folder (a GGUF export); None
    for a folder without one. Two or more in one folder are refused: which to serve is the user's choice."""
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        return path
    if not path.is_dir():
        return None
    found = sorted(path.glob("*.gguf"))
    if len(found) > 1:
        raise UserError(
            f"{path} holds {len(found)} GGUF files ({', '.join(p.name for p in found)}): name one"
        )
    return found[0] if found else None


def gguf_export_file(path: str | Path) -> Path | None:
    """The GGUF file to run when `path` is a GGUF export (a `.gguf` file, or a folder with one and no config.json,
    as `r1kit export --format gguf` writes); None for a Hugging Face folder."""
    path = Path(path)
    return None if (path / "config.json").is_file() else find_gguf(path)


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    quiet_transformers()
    tokenizer_dir = resolve_model_dir(path, "tokenizer")
    if not any((tokenizer_dir / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise UserError(f"{tokenizer_dir} holds no tokenizer (tokenizer.json or tokenizer_config.json)")
    if _saved_class(tokenizer_dir) == "TokenizersBackend":
        # What r1kit's trained tokenizers save. Beside a config.json, AutoTokenizer would build the class of the
        # config's model type instead (Qwen2's byte-level BPE for a qwen2 model), which splits a unigram
        # tokenizer's text differently from how it was trained.
        from transformers import TokenizersBackend

        return TokenizersBackend.from_pretrained(tokenizer_dir)
    return AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=trust_remote_code)


def _saved_class(tokenizer_dir: Path) -> str | None:
    try:
        return json.loads((tokenizer_dir / "tokenizer_config.json").read_text()).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return None


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


def sharded_checkpoint_kind(model_dir: Path) -> str | None:
    """`deepspeed` for a ZeRO checkpoint (its `latest` file names the global_step folder of partitioned states),
    `fsdp` for an FSDP sharded checkpoint, else None."""
    latest = model_dir / "latest"
    if latest.is_file() and (model_dir / latest.read_text().strip()).is_dir():
        return "deepspeed"
    if any(model_dir.glob("pytorch_model_fsdp_*")):
        return "fsdp"
    return None


@contextmanager
def weights_only_loads() -> Iterator[None]:
    """Inside, every `torch.load` reads tensors and plain containers only (`weights_only=True`), whatever its
    caller asks. DeepSpeed asks for full unpickling of its ZeRO checkpoints (on resume and when consolidating
    them), which would run any code a tampered checkpoint carries; the loss-scaler objects its optimizer states
    hold, and ZeRO's stage enum, are allowed by name. (transformers already loads everything else of a checkpoint this way.)"""
    import torch

    allowed = []
    try:
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum

        allowed = [LossScaler, DynamicLossScaler, ZeroStageEnum]
    except ImportError:
        pass
    original = torch.load

    def load(*args, **kwargs):
        kwargs["weights_only"] = True
        with torch.serialization.safe_globals(allowed):
            return original(*args, **kwargs)

    torch.load = load
    try:
        yield
    finally:
        torch.load = original


def consolidated_model(model_dir: Path, kind: str, trust_remote_code: bool):
    """The model of a sharded training checkpoint, with its full weights gathered from the shards: the fp32
    master weights of a ZeRO checkpoint, or the distributed checkpoint of FSDP."""
    import tempfile

    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    if kind == "deepspeed":
        require_module("deepspeed", "deepspeed", "consolidating a DeepSpeed ZeRO checkpoint")
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        with weights_only_loads():
            state = get_fp32_state_dict_from_zero_checkpoint(str(model_dir))
    else:
        from accelerate.utils import merge_fsdp_weights

        with tempfile.TemporaryDirectory() as tmp:
            merge_fsdp_weights(
                str(next(model_dir.glob("pytorch_model_fsdp_*"))), tmp, safe_serialization=True
            )
            state = load_file(Path(tmp) / "model.safetensors")
    model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if config.get_text_config().tie_word_embeddings else set()
    if unexpected or set(missing) - tied:
        raise UserError(
            f"{model_dir}: the {kind} shards do not match config.json (missing "
            f"{sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )
    model.tie_weights()
    return model


def load_full_model(model_dir: Path, is_adapter: bool, trust_remote_code: bool):
    """(model, folder its weights came from); an adapter is loaded onto its base and merged, and a sharded
    training checkpoint (ZeRO, FSDP) is consolidated into one model."""
    if not is_adapter:
        kind = sharded_checkpoint_kind(model_dir)
        if kind is not None:
            return consolidated_model(model_dir, kind, trust_remote_code), model_dir
        return load_model(model_dir, trust_remote_code=trust_remote_code), model_dir
    from peft import PeftModel

    base = json.loads((model_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base or not Path(base).is_dir():
        raise UserError(
            f"{model_dir}/adapter_config.json names base model {base!r}, which is not a local folder; "
            "r1kit loads local folders only"
        )
    model = load_model(base, trust_remote_code=trust_remote_code)
    return PeftModel.from_pretrained(model, model_dir).merge_and_unload(), Path(base)
