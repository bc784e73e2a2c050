"""`r1kit export`: a model folder ready to serve: LoRA merged, optionally quantised, with a before/after report.

Input: a Hugging Face model folder (a run's `final/`, a `checkpoint-N/`, sharded safetensors included) or a
LoRA adapter folder (`adapter_config.json`, whose base folder is named inside it). Output: a Hugging Face
folder that plain transformers loads, safetensors only, plus `export.json` (sizes, generation speed before
and after, and which weight tensors were left unquantised, with why).

Quantisation methods (`--quantize`), each from the library that owns it:
- `int8-dynamic`: torchao int8 weights with int8 dynamic activations, for CPU inference;
- `int8`, `int4`: torchao weight-only (int4 on CUDA GPUs: its CPU kernels need a layout this export does not
  choose);
- `nf4`: bitsandbytes 4-bit NormalFloat with double quantisation (the QLoRA format), for CUDA GPUs.
torchao and bitsandbytes quantise `nn.Linear` layers only: embeddings, the LM head and MoE experts stored as
fused 3-D tensors (DeepSeek-V3 in transformers) stay in their original precision, and the report lists them.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from r1kit.errors import UserError
from r1kit.hardware import require_cuda, require_module
from r1kit.models.load import load_model, load_tokenizer

METHODS = ("none", "int8-dynamic", "int8", "int4", "nf4")
SPEED_PROMPT = "Janet's ducks lay 16 eggs per day. How many does she sell?"


@dataclass
class Measurement:
    size_mib: float
    tokens_per_second: float


@dataclass
class ExportResult:
    out_dir: Path
    quantize: str
    merged_lora: bool
    before: Measurement
    after: Measurement
    not_quantized: dict[str, str] = field(default_factory=dict)
    """Weight name (or group) -> why it kept its precision."""


def export(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    merge_lora: bool = True,
    quantize: str = "none",
    trust_remote_code: bool = False,
    speed_tokens: int = 32,
) -> ExportResult:
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if quantize not in METHODS:
        raise UserError(f"--quantize {quantize!r}: choose one of {', '.join(METHODS)}")
    check_quantizer(quantize)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserError(f"{out_dir} exists and is not empty: choose a new output folder")
    is_adapter = (model_dir / "adapter_config.json").is_file()
    if is_adapter and not merge_lora:
        raise UserError(
            f"{model_dir} is a LoRA adapter: export merges it into its base (drop --no-merge-lora), "
            "or serve the base with the adapter through PEFT"
        )
    tokenizer = load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
    model, source_dir = load_full_model(model_dir, is_adapter, trust_remote_code)
    before = Measurement(weights_mib(source_dir), generation_speed(model, tokenizer, speed_tokens))

    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    if quantize == "none":
        model.save_pretrained(staging)
        not_quantized: dict[str, str] = {}
    else:
        model.save_pretrained(
            staging
        )  # the merged full-precision weights, quantised on reload by transformers
        del model
        model = load_quantized(staging, quantize, trust_remote_code)
        not_quantized = unquantized_weights(model)
        shutil.rmtree(staging)
        model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    after = Measurement(weights_mib(staging), generation_speed(model, tokenizer, speed_tokens))
    result = ExportResult(out_dir, quantize, is_adapter, before, after, not_quantized)
    (staging / "export.json").write_text(
        json.dumps({**asdict(result), "out_dir": str(out_dir), "source": str(model_dir)}, indent=2) + "\n"
    )
    if out_dir.exists():
        out_dir.rmdir()
    staging.rename(out_dir)  # all or nothing: a half-written export is never found under out_dir
    return result


def check_quantizer(method: str) -> None:
    """Refuse a method this machine cannot run, before any work."""
    if method in ("int8-dynamic", "int8", "int4"):
        require_module("torchao", "export", f"--quantize {method}")
    if method == "int4":
        require_cuda("--quantize int4 (torchao's int4 weight-only kernels)")
    if method == "nf4":
        require_cuda("--quantize nf4 (bitsandbytes 4-bit inference)")
        require_module("bitsandbytes", "gpu", "--quantize nf4")


def sharded_checkpoint_kind(model_dir: Path) -> str | None:
    """`deepspeed` for a ZeRO checkpoint (its `latest` file names the global_step folder of partitioned states),
    `fsdp` for an FSDP sharded checkpoint, else None."""
    latest = model_dir / "latest"
    if latest.is_file() and (model_dir / latest.read_text().strip()).is_dir():
        return "deepspeed"
    if any(model_dir.glob("pytorch_model_fsdp_*")):
        return "fsdp"
    return None


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


def quantization_config(method: str):
    from transformers import BitsAndBytesConfig, TorchAoConfig

    if method == "nf4":
        import torch

        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    from torchao.quantization import (
        Int4WeightOnlyConfig,
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
    )

    quant_type = {
        "int8-dynamic": Int8DynamicActivationInt8WeightConfig(),
        "int8": Int8WeightOnlyConfig(),
        "int4": Int4WeightOnlyConfig(group_size=128),
    }[method]
    return TorchAoConfig(quant_type=quant_type)


def load_quantized(model_dir: Path, method: str, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        model_dir,
        dtype="auto",
        quantization_config=quantization_config(method),
        device_map="cuda" if method in ("int4", "nf4") else None,
        trust_remote_code=trust_remote_code,
    )


def unquantized_weights(model) -> dict[str, str]:
    """Weight tensors (2-D and up) that kept a plain floating-point type, grouped by their name pattern."""
    import re

    import torch

    groups: dict[str, str] = {}
    for name, param in model.named_parameters():
        if param.dim() < 2 or type(param.data) is not torch.Tensor or not param.dtype.is_floating_point:
            continue
        if param.__class__.__name__.startswith(("Params4bit", "Int8Params")):
            continue
        pattern = re.sub(r"\.\d+\.", ".N.", name)
        if "embed" in name:
            why = "embedding (a lookup table, not a Linear layer)"
        elif "lm_head" in name:
            why = "LM head (kept for output quality; tied to the embedding in small models)"
        elif param.dim() == 3:
            why = "fused MoE expert tensor (3-D, not a Linear layer)"
        else:
            why = "not a Linear layer"
        groups[pattern] = why
    return groups


def weights_mib(model_dir: Path) -> float:
    return sum(p.stat().st_size for p in model_dir.glob("*.safetensors")) / 2**20


def generation_speed(model, tokenizer, num_tokens: int) -> float:
    """Greedy tokens/s for one fixed chat prompt (after a short warm-up)."""
    import torch

    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": SPEED_PROMPT}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"].to(model.device)
    kwargs = dict(attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=tokenizer.pad_token_id)
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=2, **kwargs)
        start = time.perf_counter()
        output = model.generate(ids, max_new_tokens=num_tokens, min_new_tokens=num_tokens, **kwargs)
    return (output.shape[1] - ids.shape[1]) / (time.perf_counter() - start)
