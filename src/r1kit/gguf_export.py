"""`r1kit export --format gguf`: one GGUF file for llama.cpp, Ollama and LM Studio, with the tokenizer and the R1
chat template inside it.

The file is written with the `gguf` package (llama.cpp's own Python writer): its key names, tensor names
(`gguf.get_tensor_name_map`) and block quantisers. `f16` keeps every matrix in half precision; `q8_0` stores
them in 8-bit blocks of 32 (quantised by `gguf`), as llama.cpp's own q8_0 does; `q4_k_m` is llama.cpp's mixed
4-bit recipe, which only llama.cpp implements, so the f16 file is written first and llama.cpp's quantiser
(`llama-cpp-python`, the `llamacpp` extra) turns it into q4_k_m. Norms and biases stay in float32, as llama.cpp
keeps them. A matrix whose rows do not split into whole blocks stays f16 (the report lists it; llama.cpp's
quantiser picks its own fallback for q4_k_m, which needs rows that are multiples of 256).

Architectures: Qwen2 (R1-Distill-Qwen, r1kit's tiny presets) and Llama (R1-Distill-Llama). DeepSeek-V3's GGUF
layout (llama.cpp's `deepseek2`: MLA split into per-head tensors, stacked experts) is not written: the export
says so rather than writing a file llama.cpp would misread. Tokenizer: byte-level BPE with the Qwen2
pre-tokenization (r1kit's trained tokenizers and the R1-Distill-Qwen one); llama.cpp applies no Unicode
normalisation, so text that is not in NFC may tokenize differently from the Hugging Face tokenizer.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1kit.errors import UserError
from r1kit.hardware import require_module

QUANTS = ("f16", "q8_0", "q4_k_m")
ARCHITECTURES = {"qwen2": "qwen2", "llama": "llama"}
"""Hugging Face model_type -> GGUF architecture."""
BPE_PRE_TOKENIZERS = {
    # The split pattern of r1kit's byte-level BPE (models/tokenizer.py) and of Qwen2's tokenizer: llama.cpp knows
    # it as `qwen2`.
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
}


@dataclass
class GgufResult:
    path: Path
    quant: str
    size_mib: float
    kept_f16: list[str] = field(default_factory=list)
    """Matrices left in f16 by q8_0 (rows that do not split into blocks of 32)."""


def write_gguf(model, tokenizer, out_path: Path, quant: str) -> GgufResult:
    """Write `model` (a transformers causal LM, LoRA already merged) and `tokenizer` to `out_path`."""
    if quant not in QUANTS:
        raise UserError(f"--quant {quant!r}: choose one of {', '.join(QUANTS)}")
    if quant == "q4_k_m":
        require_module("llama_cpp", "llamacpp", "--quant q4_k_m (llama.cpp's quantiser)")
        with tempfile.TemporaryDirectory(dir=out_path.parent) as scratch:
            f16 = Path(scratch) / "f16.gguf"
            _write(model, tokenizer, f16, "f16")
            quantize_file(f16, out_path, "q4_k_m")
        return GgufResult(out_path, quant, out_path.stat().st_size / 2**20)
    kept = _write(model, tokenizer, out_path, quant)
    return GgufResult(out_path, quant, out_path.stat().st_size / 2**20, kept)


def quantize_file(source: Path, target: Path, quant: str) -> None:
    """llama.cpp's quantiser (what its `llama-quantize` tool runs), from an f16 GGUF file. Its per-tensor lines
    and warnings (rows too short for a k-quant fall back to another type) go to the C library's stderr; they are
    kept out of the console and shown only when quantising fails."""
    import llama_cpp

    ftypes = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftypes[quant]
    with tempfile.TemporaryFile("w+") as log:
        with _stderr_to(log):
            status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params)
        if status != 0:
            log.seek(0)
            tail = "".join(log.readlines()[-5:])
            raise UserError(f"llama.cpp could not quantise {source} to {quant} (status {status}):\n{tail}")


@contextmanager
def _stderr_to(file):
    """Standard error into `file` for the block: file descriptor 2, where C code writes, and Python's
    `sys.stderr`, where llama-cpp-python prints llama.cpp's log lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(file.fileno(), 2)
    try:
        with redirect_stderr(file):
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def check_exportable(config) -> str:
    """The GGUF architecture for a model config, or a UserError saying why not."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        known = ", ".join(ARCHITECTURES)
        raise UserError(
            f"GGUF export supports {known} models; this one is {model_type!r}"
            + (
                " (DeepSeek-V3's GGUF layout splits its attention and stacks its experts in ways this export "
                "does not write yet: export it as safetensors and serve it with vLLM)"
                if model_type == "deepseek_v3"
                else ""
            )
        )
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise UserError(f"GGUF export writes plain RoPE; this model uses {rope['rope_type']!r} scaling")
    return ARCHITECTURES[model_type]


def _write(model, tokenizer, out_path: Path, quant: str) -> list[str]:
    import gguf

    config = model.config
    arch = check_exportable(config)
    writer = gguf.GGUFWriter(out_path, arch)
    _write_hyperparameters(writer, config, quant)
    _write_tokenizer(writer, tokenizer, config.vocab_size)
    kept = _write_tensors(writer, model, arch, quant)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return kept


def _write_hyperparameters(writer, config, quant: str) -> None:
    import gguf

    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_name(getattr(config, "_name_or_path", "") or "r1kit model")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[quant]
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _write_tokenizer(writer, tokenizer, vocab_size: int) -> None:
    """Tokens, their types, merges, special ids and the chat template, as llama.cpp's `gpt2` (byte-level BPE)
    tokenizer model reads them."""
    import gguf

    pre = pre_tokenizer_of(tokenizer)
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in by_id:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif index in added:
            tokens.append(by_id[index])
            types.append(gguf.TokenType.CONTROL if added[index].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[index])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    if tokenizer.chat_template:
        special.chat_template = inference_template(tokenizer.chat_template)
    special.add_to_gguf(writer, quiet=True)


def inference_template(template: str) -> str:
    """The chat template without transformers' `{% generation %}` markers (they mark the tokens training learns
    from; llama.cpp's and Ollama's template engines do not know the tag and would refuse the template)."""
    return re.sub(r"\{%-?\s*(?:end)?generation\s*-?%\}", "", template)


def pre_tokenizer_of(tokenizer) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer, or a UserError saying why it has none (llama.cpp runs
    its own copy of each split pattern it knows)."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    if state["model"]["type"] != "BPE" or "ByteLevel" not in json.dumps(state.get("decoder")):
        raise UserError(
            "GGUF export supports byte-level BPE tokenizers (r1kit's default, R1-Distill-Qwen's); this "
            f"tokenizer is {state['model']['type']}: llama.cpp would tokenize differently"
        )
    patterns = list(_split_patterns(state["pre_tokenizer"]))
    for pattern in patterns:
        if pattern in BPE_PRE_TOKENIZERS:
            return BPE_PRE_TOKENIZERS[pattern]
    raise UserError(
        "the tokenizer's pre-tokenizer splits text with a pattern llama.cpp does not know "
        f"({patterns or state['pre_tokenizer']}); GGUF export supports the Qwen2 pattern r1kit trains with"
    )


def _split_patterns(node):
    """The regular expressions of the `Split` steps in a tokenizers pre-tokenizer (nested in `Sequence`s)."""
    if isinstance(node, dict):
        if node.get("type") == "Split" and "Regex" in (node.get("pattern") or {}):
            yield node["pattern"]["Regex"]
        for value in node.values():
            yield from _split_patterns(value)
    elif isinstance(node, list):
        for value in node:
            yield from _split_patterns(value)


def _write_tensors(writer, model, arch: str, quant: str) -> list[str]:
    import gguf
    import torch

    config = model.config
    names = gguf.get_tensor_name_map(
        next(key for key, value in gguf.MODEL_ARCH_NAMES.items() if value == arch), config.num_hidden_layers
    )
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    kept = []
    state = model.state_dict()
    tied = getattr(config, "tie_word_embeddings", False)
    for name, tensor in state.items():
        if tied and name == "lm_head.weight":
            continue  # llama.cpp uses the token embedding as the output layer when `output` is absent
        if "rotary_emb" in name:
            continue
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise UserError(f"GGUF export: no GGUF name for the weight {name}")
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            # llama.cpp rotates pairs of adjacent dimensions; Hugging Face's Llama rotates the two halves
            data = _interleave_rope(data, heads if "q_proj" in name else kv_heads)
        if data.ndim == 1:
            writer.add_tensor(gguf_name, data)
        elif quant == "q8_0" and data.shape[-1] % 32 == 0:
            writer.add_tensor(
                gguf_name,
                gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0),
                raw_dtype=gguf.GGMLQuantizationType.Q8_0,
            )
        else:
            if quant == "q8_0":
                kept.append(gguf_name)
            writer.add_tensor(gguf_name, data.astype("float16"))
    return kept


def _interleave_rope(weight: Any, heads: int) -> Any:
    """Reorder each head's rows from (first halves, second halves) to adjacent pairs, so that llama.cpp's RoPE
    on pairs equals Hugging Face's on halves."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )
