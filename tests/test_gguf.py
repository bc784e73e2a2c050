"""`r1kit export --format gguf`: files llama.cpp loads (through llama-cpp-python) with the tokenizer and the chat
template inside; f16 decodes the same greedy tokens as the Hugging Face model, q8_0 and q4_k_m stay close; what
cannot be written as GGUF is refused with the reason."""

import json
import re

import pytest
import torch

pytest.importorskip("llama_cpp", reason="the llamacpp extra (make setup installs it)")

from r1kit.errors import UserError
from r1kit.export import export
from r1kit.gguf_export import inference_template, write_gguf

PROMPTS = [
    "Janet's ducks lay 16 eggs per day. How many does she sell?",
    "What is 12 + 35?\n\nThink step by step.",
    "A train travels 120 km in 2 hours; its speed is",
]
NEW_TOKENS = 24


def varied_model(config, seed: int):
    """A model whose greedy continuations vary from token to token (a freshly initialised one repeats a single
    token, which would let a wrong export pass), rounded to half precision as an f16 file holds it."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() > 1:
                param.normal_(std=0.25)
            elif "norm" in name:
                param.uniform_(0.5, 1.5)
            else:
                param.normal_(std=0.5)
    return model.half().float().eval()


@pytest.fixture(scope="module")
def models(tokenizer_dir):
    """{architecture: (model, tokenizer)}: r1kit's tiny Qwen2 preset and a Llama of the same size."""
    from transformers import LlamaConfig

    from r1kit.models.create import build_config
    from r1kit.models.load import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    qwen2 = build_config("tiny-qwen2", tokenizer)
    llama = LlamaConfig(**{k: getattr(qwen2, k) for k in ("vocab_size", "hidden_size", "intermediate_size")},
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=2048, tie_word_embeddings=False,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    return {"qwen2": (varied_model(qwen2, 0), tokenizer), "llama": (varied_model(llama, 1), tokenizer)}


def greedy_hf(model, ids: list[int]) -> list[int]:
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None
        )
    return out[0, len(ids) :].tolist()


def greedy_llama_cpp(path, tokenizer, ids: list[int]) -> list[int]:
    from r1kit.engine.batching import Finish, GenerationRequest
    from r1kit.engine.llamacpp_engine import LlamaCppEngine

    engine = LlamaCppEngine(path, tokenizer, eos_ids=[], start=False)
    events = []
    engine.run([GenerationRequest(ids, NEW_TOKENS, temperature=0.0, sink=events.append, detokenize=False)])
    engine.llama.close()
    (finish,) = [e for e in events if isinstance(e, Finish)]
    return finish.token_ids


def chat_ids(tokenizer, prompt: str) -> list[int]:
    from r1kit.r1format import render_chat

    return render_chat(tokenizer, [{"role": "user", "content": prompt}])[0]


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_f16_decodes_the_same_greedy_tokens_as_transformers(models, arch, tmp_path):
    model, tokenizer = models[arch]
    path = write_gguf(model, tokenizer, tmp_path / "model.gguf", "f16").path
    for prompt in PROMPTS:
        ids = chat_ids(tokenizer, prompt)
        expected = greedy_hf(model, ids)
        assert len(set(expected)) > 4, "the reference continuation must vary to prove anything"
        assert greedy_llama_cpp(path, tokenizer, ids) == expected, prompt


def agreement(model, path, tokenizer) -> tuple[float, float]:
    """Over teacher-forced text (each position judged on the same context): the share of positions where
    llama.cpp's next token (argmax) equals the Hugging Face model's, and the relative error of its logits
    (|llama.cpp - HF| / |HF|, over all positions)."""
    import numpy as np

    from r1kit.engine.llamacpp_engine import load_llama

    ids = [t for p in PROMPTS for t in chat_ids(tokenizer, p) + tokenizer.encode(p, add_special_tokens=False)]
    import llama_cpp

    with torch.inference_mode():
        expected = model(torch.tensor([ids])).logits[0].numpy()
    llama = load_llama(path, 512, 2)
    got = []
    for token in ids:
        llama.eval([token])
        pointer = llama_cpp.llama_get_logits_ith(llama.ctx, -1)
        got.append(np.ctypeslib.as_array(pointer, shape=(llama.n_vocab(),)).copy())
    llama.close()
    got = np.stack(got)
    same = float((got.argmax(-1) == expected.argmax(-1)).mean())
    return same, float(np.linalg.norm(got - expected) / np.linalg.norm(expected))


# Measured on this deliberately chaotic model (weights of std 0.25: small errors grow through the layers), where
# llama.cpp's q8_0 also rounds activations to 8 bits: q8_0 agrees on 92% of next tokens with a logit error of
# 5.7%, q4_k_m (rows of 64 are too short for 4-bit k-quant blocks of 256, so llama.cpp falls back per tensor) on
# 65% with 25%; f16 on 99% with 0.6%. The bounds leave room for other CPUs' kernels. The demo model's held-out
# accuracy with each file is in benchmarks/quantized_speed.py.
@pytest.mark.parametrize(("quant", "least", "most"), [("q8_0", 0.85, 0.1), ("q4_k_m", 0.55, 0.35)])
def test_quantised_files_are_smaller_and_stay_close(models, quant, least, most, tmp_path):
    model, tokenizer = models["qwen2"]
    f16 = write_gguf(model, tokenizer, tmp_path / "f16.gguf", "f16")
    quantised = write_gguf(model, tokenizer, tmp_path / f"{quant}.gguf", quant)
    assert quantised.size_mib < 0.75 * f16.size_mib
    # f16: llama.cpp's f16 KV cache and summation order can flip a near tie, nothing more
    same, error = agreement(model, f16.path, tokenizer)
    assert same >= 0.98 and error < 0.02
    same, error = agreement(model, quantised.path, tokenizer)
    assert same >= least and error < most


def test_q8_0_is_llama_cpps_own_q8_0(models, tmp_path):
    """The q8_0 blocks the gguf package writes are the ones llama.cpp's quantiser makes from the f16 file."""
    import gguf

    from r1kit.gguf_export import quantize_file

    model, tokenizer = models["qwen2"]
    ours = write_gguf(model, tokenizer, tmp_path / "ours.gguf", "q8_0").path
    quantize_file(
        write_gguf(model, tokenizer, tmp_path / "f16.gguf", "f16").path, tmp_path / "theirs.gguf", "q8_0"
    )
    theirs = {t.name: t for t in gguf.GGUFReader(tmp_path / "theirs.gguf").tensors}
    for tensor in gguf.GGUFReader(ours).tensors:
        assert tensor.tensor_type == theirs[tensor.name].tensor_type, tensor.name
        assert bytes(tensor.data) == bytes(theirs[tensor.name].data), tensor.name


def test_llama_cpps_quantiser_keeps_the_console_clean_and_explains_a_failure(models, tmp_path, capfd):
    from r1kit.gguf_export import quantize_file

    model, tokenizer = models["qwen2"]
    write_gguf(
        model, tokenizer, tmp_path / "q.gguf", "q4_k_m"
    )  # rows of 64: llama.cpp falls back, and says so
    printed = capfd.readouterr()
    assert "llama_model_quantize" not in printed.err + printed.out and "fallback" not in printed.err
    (tmp_path / "bad.gguf").write_bytes(b"not a GGUF file")
    with pytest.raises(UserError, match="could not quantise .*bad.gguf to q4_k_m"):
        quantize_file(tmp_path / "bad.gguf", tmp_path / "out.gguf", "q4_k_m")


def test_the_file_carries_the_tokenizer_and_the_chat_template(models, tmp_path):
    import gguf
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    model, tokenizer = models["qwen2"]
    path = write_gguf(model, tokenizer, tmp_path / "model.gguf", "q8_0").path
    fields = gguf.GGUFReader(path).fields
    template = fields["tokenizer.chat_template"].contents()
    assert template == inference_template(tokenizer.chat_template) and not re.search(
        r"\{%-?\s*generation", template
    )
    assert fields["tokenizer.ggml.pre"].contents() == "qwen2"
    llama = Llama(model_path=str(path), n_ctx=256, verbose=False)
    texts = [
        *PROMPTS,
        "don't  stop:\n\n\t1234567 + 89 = ?",
        "naïve café, 東京 ",
        "<think>\nx\n</think>\n\nSo 5.",
    ]
    for text in texts:  # llama.cpp's own tokenizer, from the file
        assert llama.tokenize(text.encode(), add_bos=False, special=True) == tokenizer.encode(
            text, add_special_tokens=False
        ), text
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPTS[0]}]
    rendered = Jinja2ChatFormatter(template, eos_token=tokenizer.eos_token, bos_token=tokenizer.bos_token)(
        messages=messages
    ).prompt
    assert rendered == tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert llama.token_eos() == tokenizer.eos_token_id and llama.token_bos() == tokenizer.bos_token_id
    llama.close()


def test_export_writes_a_gguf_folder_with_its_report(tokenizer_dir, tmp_path, cli):
    from r1kit.models.create import init_model

    init_model("tiny-qwen2", tokenizer_dir, tmp_path / "base", seed=3)
    done = cli("export", "--model", str(tmp_path / "base"), "--out", str(tmp_path / "out"), "--format", "gguf",
               "--quant", "q4_k_m", check=True)  # fmt: skip
    report = json.loads((tmp_path / "out" / "export.json").read_text())
    (gguf_file,) = (tmp_path / "out").glob("*.gguf")
    assert report["quantize"] == "gguf-q4_k_m" and report["gguf"]["file"] == str(gguf_file)
    assert report["after"]["size_mib"] == pytest.approx(gguf_file.stat().st_size / 2**20)
    assert report["after"]["tokens_per_second"] > 0 and report["before"]["tokens_per_second"] > 0
    assert f"r1kit serve --model {tmp_path / 'out'} --engine llama.cpp" in done.stdout
    assert (tmp_path / "out" / "tokenizer.json").is_file() and not list(
        (tmp_path / "out").glob("*.safetensors")
    )


def test_what_gguf_cannot_hold_is_refused(tokenizer_dir, tmp_path, cli):
    from r1kit.models.create import init_model
    from r1kit.models.load import load_model, load_tokenizer
    from r1kit.models.tokenizer import train_tokenizer

    init_model("tiny-deepseek-v3", tokenizer_dir, tmp_path / "moe", seed=0)
    with pytest.raises(UserError, match="deepseek_v3.*serve it with vLLM"):
        export(tmp_path / "moe", tmp_path / "out", format="gguf", quantize="f16")
    assert not (tmp_path / "out").exists()

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(f"line {i} of some words to learn" for i in range(200)))
    train_tokenizer([texts], tmp_path / "unigram", vocab_size=300, type="unigram")
    init_model("tiny-qwen2", tmp_path / "unigram", tmp_path / "uni-model", seed=0)
    model, tokenizer = load_model(tmp_path / "uni-model"), load_tokenizer(tmp_path / "uni-model")
    with pytest.raises(UserError, match="byte-level BPE"):
        write_gguf(model, tokenizer, tmp_path / "x.gguf", "f16")

    base = tmp_path / "uni-model"
    for args, message in [
        (["--format", "gguf", "--quant", "q3"], "--quant"),
        (["--quant", "q8_0"], "--quant is for --format gguf"),
        (["--format", "gguf", "--quantize", "int8"], "--quantize is for --format hf"),
        (["--format", "onnx"], "--format 'onnx'"),
    ]:
        done = cli("export", "--model", str(base), "--out", str(tmp_path / "o"), *args)
        assert done.returncode != 0 and message in done.stdout + done.stderr, (args, done.stderr)


def test_a_recipe_exports_gguf_and_refuses_two_quantisations(tokenizer_dir, tmp_path):
    from r1kit.config import load_recipe
    from r1kit.models.create import init_model
    from r1kit.pipeline import run_pipeline

    init_model("tiny-qwen2", tokenizer_dir, tmp_path / "base", seed=3)
    settings = [f"model.path={tmp_path / 'base'}", "pipeline.stages=[export]", "export.speed_tokens=4"]
    (record,) = run_pipeline(
        load_recipe(None, [*settings, "export.format=gguf", "export.gguf_quant=f16"]), tmp_path / "run"
    )
    assert record.summary["quantize"] == "gguf-f16" and list(
        (tmp_path / "run" / "01-export" / "model").glob("*.gguf")
    )
    with pytest.raises(UserError, match="export.gguf_quant"):
        load_recipe(None, [*settings, "export.format=gguf", "export.quantize=int8"])
