"""`r1kit export`: a model folder ready to serve: LoRA merged, optionally quantised, with a before/after report.

Input: a Hugging Face model folder (a run's `final/`, a `checkpoint-N/`, sharded safetensors included) or a
LoRA adapter folder (`adapter_config.json`, whose base folder is named inside it). Output: a Hugging Face
folder that plain transformers loads, safetensors only (or a GGUF file, below), plus `export.json` (sizes,
generation speed before and after, which weight tensors were left unquantised, with why, and how to serve the
folder with vLLM).

vLLM cannot run on a CPU, so what it needs is checked on the written files (`vllm_declaration`): its DeepSeek-R1
reasoning parser (`--reasoning-parser deepseek_r1`) finds `<think>` and `</think>` by text in the tokenizer's
vocabulary and refuses to start without them, its structured-output reasoner takes the first token of each,
and the chat template and generation defaults come from the folder.

Quantisation methods (`--quantize`), each from the library that owns it:
- `auto`: measure, on this machine, the original and every method below that runs here, and keep the fastest
  (a quantised model is smaller but not always faster: on a CPU without int8 matrix kernels, dequantising each
  weight costs more than it saves); the report keeps every figure;
- `int8-dynamic`: torchao int8 weights with int8 dynamic activations, for CPU inference;
- `int8`, `int4`: torchao weight-only (int4 on CUDA GPUs: its CPU kernels need a layout this export does not
  choose);
- `nf4`: bitsandbytes 4-bit NormalFloat with double quantisation (the QLoRA format), for CUDA GPUs.
- `--format gguf --quant f16|q8_0|q4_k_m`: one GGUF file for llama.cpp, Ollama and LM Studio, with the tokenizer
  beside it for `r1kit serve` and `r1kit eval` (gguf_export.py); its speed is measured by llama.cpp. `auto`
  measures these files too (`gguf-<quant>`) where llama.cpp is installed and no CUDA GPU is (vLLM serves GPUs).
torchao and bitsandbytes quantise `nn.Linear` layers only: embeddings, the LM head and MoE experts stored as
fused 3-D tensors (DeepSeek-V3 in transformers) stay in their original precision, and the report lists them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from r1kit.errors import UserError
from r1kit.hardware import require_cuda, require_module
from r1kit.models.load import load_full_model, load_tokenizer

METHODS = ("none", "auto", "int8-dynamic", "int8", "int4", "nf4")
FORMATS = ("hf", "gguf")
GGUF_QUANTS = ("f16", "q8_0", "q4_k_m")
"""GGUF's quantisations (gguf_export.py); `auto` tries them as `gguf-f16`, `gguf-q8_0`, `gguf-q4_k_m`."""
SPEED_REPEATS = 3
"""Speed checks per model; the median is reported (one greedy run is at the mercy of a busy machine)."""
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
    measured: dict[str, Measurement] = field(default_factory=dict)
    """With `auto`: every method tried (`none` included) and its size and speed here."""
    vllm: dict = field(default_factory=dict)
    """`vllm_declaration` of the written folder (a Hugging Face folder)."""
    gguf: dict = field(default_factory=dict)
    """A GGUF export: its file and how to serve it with r1kit and with llama.cpp's own server."""
    faster: dict = field(default_factory=dict)
    """When the quantised export is slower than the original: a scheme measured faster here, and its command."""

    @property
    def slower(self) -> bool:
        """The quantised export generates more slowly than the model it came from (on this machine). An
        unquantised export is the same model: two measurements of it differ by the machine's noise alone."""
        return self.quantize != "none" and self.after.tokens_per_second < self.before.tokens_per_second


def export(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    merge_lora: bool = True,
    quantize: str = "none",
    format: str = "hf",
    trust_remote_code: bool = False,
    speed_tokens: int = 32,
) -> ExportResult:
    """`format` "hf" (a Hugging Face folder, `quantize` one of METHODS) or "gguf" (a folder with one GGUF file
    and the tokenizer, `quantize` one of gguf_export.QUANTS). `auto` measures both kinds where llama.cpp is
    installed (`gguf-<quant>` candidates) and keeps the fastest."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if format not in FORMATS:
        raise UserError(f"--format {format!r}: choose one of {', '.join(FORMATS)}")
    if format == "gguf":
        if quantize not in GGUF_QUANTS:
            raise UserError(f"--format gguf takes --quant {' | '.join(GGUF_QUANTS)}, not {quantize!r}")
        quantize = f"gguf-{quantize}"
    elif quantize not in METHODS:
        raise UserError(f"--quantize {quantize!r}: choose one of {', '.join(METHODS)}")
    if quantize != "auto":
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
    if quantize.startswith("gguf-"):
        from r1kit.gguf_export import check_exportable

        check_exportable(model.config)
    before = Measurement(weights_mib(source_dir), generation_speed(model, tokenizer, speed_tokens))

    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    if quantize.startswith("gguf-"):
        staging.mkdir(parents=True)
    else:  # the merged full-precision weights, quantised on reload by transformers
        model.save_pretrained(staging)
    measured: dict[str, Measurement] = {}
    if quantize == "auto":
        measured["none"] = Measurement(weights_mib(staging), before.tokens_per_second)
        for method in auto_candidates(model.config, tokenizer)[1:]:
            measured[method] = measure_candidate(
                staging, model, tokenizer, method, speed_tokens, trust_remote_code
            )
        quantize = max(measured, key=lambda method: measured[method].tokens_per_second)
    if quantize.startswith("gguf-"):
        return _finish_gguf(
            model,
            tokenizer,
            staging,
            out_dir,
            quantize,
            is_adapter,
            before,
            measured,
            model_dir,
            speed_tokens,
        )
    not_quantized: dict[str, str] = {}
    if quantize != "none":
        del model
        model = load_quantized(staging, quantize, trust_remote_code)
        not_quantized = unquantized_weights(model)
        shutil.rmtree(staging)
        model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    vllm = vllm_declaration(staging, out_dir, trust_remote_code)
    speed = (
        measured[quantize].tokens_per_second
        if quantize in measured
        else generation_speed(model, tokenizer, speed_tokens)
    )
    after = Measurement(weights_mib(staging), speed)
    if measured:
        measured[quantize] = after  # its size as written
    result = ExportResult(out_dir, quantize, is_adapter, before, after, not_quantized, measured, vllm)
    if result.slower and not measured:
        config = model.config
        del model
        result.faster = faster_offer(
            model_dir, out_dir, config, tokenizer, is_adapter, after, speed_tokens, trust_remote_code
        )
    return _land(result, staging, model_dir)


def faster_offer(
    model_dir: Path,
    out_dir: Path,
    config,
    tokenizer,
    is_adapter: bool,
    after: Measurement,
    speed_tokens: int,
    trust_remote_code: bool,
) -> dict:
    """After a quantisation that came out slower than the original: llama.cpp's q8_0 GGUF file of the same model,
    measured here, with the command that writes it, when it is faster than what was written ({} otherwise, or
    where llama.cpp is not installed)."""
    if "gguf-q8_0" not in auto_candidates(config, tokenizer):
        return {}
    original, _ = load_full_model(model_dir, is_adapter, trust_remote_code)
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as scratch:
        measured = measure_candidate(Path(scratch), original, tokenizer, "gguf-q8_0", speed_tokens)
    if measured.tokens_per_second <= after.tokens_per_second:
        return {}
    return {
        "method": "gguf-q8_0",
        "tokens_per_second": measured.tokens_per_second,
        "size_mib": measured.size_mib,
        "command": f"r1kit export --model {model_dir} --out {out_dir.name}-gguf --format gguf --quant q8_0",
    }


def _finish_gguf(
    model,
    tokenizer,
    staging: Path,
    out_dir: Path,
    quantize: str,
    is_adapter: bool,
    before: Measurement,
    measured: dict[str, Measurement],
    model_dir: Path,
    speed_tokens: int,
) -> ExportResult:
    """The GGUF file and the tokenizer (which `r1kit serve` and `r1kit eval` render prompts with) in place of the
    safetensors folder."""
    from r1kit.gguf_export import write_gguf

    quant = quantize.removeprefix("gguf-")
    for path in staging.iterdir():
        path.unlink()
    written = write_gguf(model, tokenizer, staging / f"{out_dir.name}-{quant}.gguf", quant)
    tokenizer.save_pretrained(staging)
    speed = (
        measured[quantize].tokens_per_second
        if quantize in measured
        else gguf_speed(written.path, tokenizer, speed_tokens)
    )
    after = Measurement(written.size_mib, speed)
    if measured:
        measured[quantize] = after
    not_quantized = dict.fromkeys(written.kept_f16, "rows do not split into q8_0 blocks of 32: kept in f16")
    gguf_file = out_dir / written.path.name
    serving = {
        "file": str(gguf_file),
        "r1kit": f"r1kit serve --model {out_dir} --engine llama.cpp",
        "llama.cpp": f"llama-server -m {gguf_file} --jinja --reasoning-format deepseek",
    }
    result = ExportResult(out_dir, quantize, is_adapter, before, after, not_quantized, measured, gguf=serving)
    return _land(result, staging, model_dir)


def _land(result: ExportResult, staging: Path, model_dir: Path) -> ExportResult:
    """Write export.json and move the finished folder into place: all or nothing, a half-written export is never
    found under out_dir."""
    out_dir = result.out_dir
    (staging / "export.json").write_text(
        json.dumps(
            {**asdict(result), "slower": result.slower, "out_dir": str(out_dir), "source": str(model_dir)},
            indent=2,
        )
        + "\n"
    )
    if out_dir.exists():
        out_dir.rmdir()
    staging.rename(out_dir)
    return result


def measure_candidate(
    staging: Path, model, tokenizer, method: str, speed_tokens: int, trust_remote_code: bool = False
) -> Measurement:
    """Size and speed of one `--quantize auto` candidate, made from the merged weights in `staging`."""
    if method.startswith("gguf-"):
        from r1kit.gguf_export import write_gguf

        with tempfile.TemporaryDirectory(dir=staging.parent) as scratch:
            written = write_gguf(
                model, tokenizer, Path(scratch) / "candidate.gguf", method.removeprefix("gguf-")
            )
            return Measurement(written.size_mib, gguf_speed(written.path, tokenizer, speed_tokens))
    candidate = load_quantized(staging, method, trust_remote_code)
    try:
        return Measurement(quantized_mib(candidate), generation_speed(candidate, tokenizer, speed_tokens))
    finally:
        del candidate


def vllm_declaration(folder: Path, served_from: Path, trust_remote_code: bool = False) -> dict:
    """How to serve `folder` (to be moved to `served_from`) with vLLM and DeepSeek-R1's reasoning parser, read
    back from its files: {"command", "reasoning_parser" (None when it cannot run), "think_token_ids",
    "problems": what stops the parser or the chat endpoint, said plainly}."""
    from transformers import AutoConfig

    from r1kit.r1format import THINK_CLOSE, THINK_OPEN

    tokenizer = load_tokenizer(folder, trust_remote_code=trust_remote_code)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    vocabulary = tokenizer.get_vocab()
    problems = []
    ids = {}
    for tag in (THINK_OPEN, THINK_CLOSE):
        encoded = tokenizer.encode(tag, add_special_tokens=False)
        if tag not in vocabulary:
            problems.append(
                f"{tag} is not in the tokenizer's vocabulary: vLLM's deepseek_r1 parser will not start"
            )
        elif encoded != [vocabulary[tag]]:
            problems.append(f"{tag} encodes as {encoded}, not as its own token {vocabulary[tag]}")
        else:
            ids[tag] = vocabulary[tag]
    if tokenizer.chat_template is None:
        problems.append("the tokenizer has no chat template: vLLM's chat endpoint needs one")
    if not getattr(config, "architectures", None):
        problems.append("config.json names no architecture for vLLM to load")
    parser = "deepseek_r1" if len(ids) == 2 else None
    command = f"vllm serve {served_from} --served-model-name {served_from.name}"
    if parser:
        command += f" --reasoning-parser {parser}"
    context = getattr(config.get_text_config(), "max_position_embeddings", None)
    if context:
        command += f" --max-model-len {context}"
    return {"command": command, "reasoning_parser": parser, "think_token_ids": ids, "problems": problems}


def auto_candidates(config=None, tokenizer=None) -> list[str]:
    """What `--quantize auto` measures on this machine: the original first, then each method that runs here
    (GGUF files through llama.cpp on CPUs, when it is installed and the model and its tokenizer can be written
    as GGUF)."""
    from r1kit.hardware import cuda_available, package_version

    found = ["none"]
    if package_version("torchao"):
        found += ["int8-dynamic", "int8"] + (["int4"] if cuda_available() else [])
    if cuda_available() and package_version("bitsandbytes"):
        found.append("nf4")
    if not cuda_available() and package_version("llama-cpp-python") and package_version("gguf"):
        from r1kit.gguf_export import check_exportable, pre_tokenizer_of

        try:
            check_exportable(config)
            if tokenizer is not None:
                pre_tokenizer_of(tokenizer)
        except UserError:
            return found
        found += [f"gguf-{quant}" for quant in GGUF_QUANTS]
    return found


def quantized_mib(model) -> float:
    """The size a model's weights take in memory (what its safetensors will hold, near enough)."""
    return sum(t.numel() * t.element_size() for t in _leaf_tensors(model)) / 2**20


def _leaf_tensors(model):
    for tensor in [*model.parameters(), *model.buffers()]:
        inner = getattr(tensor, "__tensor_flatten__", None)
        if inner is None:
            yield tensor
        else:  # a torchao tensor subclass: its storage is its inner tensors
            names, _ = inner()
            for name in names:
                yield getattr(tensor, name)


def check_quantizer(method: str) -> None:
    """Refuse a method this machine cannot run, before any work."""
    if method.startswith("gguf-"):
        require_module("gguf", "llamacpp", "--format gguf")
        require_module(
            "llama_cpp", "llamacpp", "--format gguf (llama.cpp measures the file and quantises it)"
        )
    if method in ("int8-dynamic", "int8", "int4"):
        require_module("torchao", "export", f"--quantize {method}")
    if method == "int4":
        require_cuda("--quantize int4 (torchao's int4 weight-only kernels)")
    if method == "nf4":
        require_cuda("--quantize nf4 (bitsandbytes 4-bit inference)")
        require_module("bitsandbytes", "gpu", "--quantize nf4")


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
    """Greedy tokens/s for one fixed chat prompt, decoded by r1kit's engine after a short warm-up: the median
    of SPEED_REPEATS runs."""
    from r1kit.engine.batching import TransformersEngine

    return engine_speed(TransformersEngine(model, tokenizer, max_batch_size=1), tokenizer, num_tokens)


def gguf_speed(gguf_path: Path, tokenizer, num_tokens: int) -> float:
    """`generation_speed` of a GGUF file, decoded by llama.cpp (same prompt, same count, same sampling code)."""
    from r1kit.engine.llamacpp_engine import LlamaCppEngine

    return engine_speed(LlamaCppEngine(gguf_path, tokenizer), tokenizer, num_tokens)


def engine_speed(engine, tokenizer, num_tokens: int) -> float:
    """The median greedy tokens/s of SPEED_REPEATS runs of the speed prompt, after a warm-up; shuts `engine`
    down."""
    import statistics

    from r1kit.engine.chats import Settings, complete_chats

    chat = [[{"role": "user", "content": SPEED_PROMPT}]]
    speeds = []
    try:
        complete_chats(engine, tokenizer, chat, Settings(0.0, 1.0, 2, 0), [0], ignore_eos=True)
        for _ in range(SPEED_REPEATS):
            (sample,) = complete_chats(
                engine, tokenizer, chat, Settings(0.0, 1.0, num_tokens, 0), [0], ignore_eos=True
            )
            speeds.append(sample.num_tokens / sample.seconds)
    finally:
        engine.shutdown()
    return statistics.median(speeds)
