"""`r1kit export`: LoRA merged into a folder plain transformers loads with the adapter's outputs; int8 dynamic
quantisation on CPU, smaller and close to the original; GPU-only methods and bad folders refused clearly."""

import json

import pytest
import torch

from r1kit.export import export


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, tokenizer_dir):
    from r1kit.models.create import init_model

    out_dir = tmp_path_factory.mktemp("export") / "base"
    init_model("tiny-qwen2", tokenizer_dir, out_dir, seed=3)
    return out_dir


def logits_of(model, tokens):
    with torch.inference_mode():
        return model(input_ids=tokens).logits.float()


TOKENS = torch.tensor([[5, 17, 99, 230, 41, 7, 300, 12]])


def test_lora_adapter_merges_into_a_plain_model(base_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from r1kit.models.load import load_tokenizer

    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)  # a trained adapter: B is no longer zero
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    load_tokenizer(base_dir).save_pretrained(adapter_dir)
    expected = logits_of(peft_model.eval(), TOKENS)
    assert not torch.allclose(expected, logits_of(AutoModelForCausalLM.from_pretrained(base_dir), TOKENS))

    result = export(adapter_dir, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    torch.testing.assert_close(logits_of(merged, TOKENS), expected, rtol=1e-4, atol=1e-4)
    assert result.merged_lora and not any("lora" in name for name, _ in merged.named_parameters())
    assert (tmp_path / "merged" / "tokenizer.json").is_file()
    assert json.loads((tmp_path / "merged" / "export.json").read_text())["merged_lora"] is True


def test_int8_dynamic_is_smaller_and_close(base_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    result = export(base_dir, tmp_path / "int8", quantize="int8-dynamic")
    assert result.after.size_mib < 0.8 * result.before.size_mib
    assert result.before.tokens_per_second > 0 and result.after.tokens_per_second > 0
    assert any("embed" in pattern for pattern in result.not_quantized)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "int8")  # plain transformers, from safetensors
    q_proj = reloaded.model.layers[0].self_attn.q_proj.weight
    assert type(q_proj).__name__ != "Parameter" or type(q_proj.data) is not torch.Tensor
    original = logits_of(AutoModelForCausalLM.from_pretrained(base_dir), TOKENS)
    quantized = logits_of(reloaded, TOKENS)
    cosine = torch.nn.functional.cosine_similarity(original.flatten(), quantized.flatten(), dim=0)
    assert cosine > 0.99
    assert not list(tmp_path.glob("*.partial"))


def test_refusals(base_dir, tmp_path, cli):
    done = cli("export", "--model", str(base_dir), "--out", str(tmp_path / "nf4"), "--quantize", "nf4")
    assert done.returncode == 2 and "CUDA GPU" in done.stderr
    done = cli("export", "--model", str(base_dir), "--out", str(tmp_path / "x"), "--quantize", "fp3")
    assert done.returncode == 2 and "int8-dynamic" in done.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    done = cli("export", "--model", str(base_dir), "--out", str(tmp_path / "full"))
    assert done.returncode == 2 and "not empty" in done.stderr
    done = cli("export", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "y"))
    assert done.returncode == 2 and "not found" in done.stderr


def test_cli_prints_before_and_after(base_dir, tmp_path, cli):
    done = cli(
        "export",
        "--model",
        str(base_dir),
        "--out",
        str(tmp_path / "out"),
        "--quantize",
        "int8-dynamic",
        check=True,
    )
    assert "MiB ->" in done.stdout and "tok/s ->" in done.stdout and "not quantised" in done.stdout
    assert "serve on GPUs with vLLM: vllm serve" in " ".join(done.stdout.split())


def test_auto_keeps_whichever_measures_fastest_here(base_dir, tmp_path):
    """A quantised model is smaller, not always faster: auto measures the original and each method that runs
    on this machine and keeps the fastest, with every figure in the report."""
    import importlib.util

    result = export(base_dir, tmp_path / "auto", quantize="auto", speed_tokens=8)
    speeds = {method: m.tokens_per_second for method, m in result.measured.items()}
    gguf = {"gguf-f16", "gguf-q8_0", "gguf-q4_k_m"} if importlib.util.find_spec("llama_cpp") else set()
    assert set(speeds) == {"none", "int8-dynamic", "int8"} | gguf  # torchao and llama.cpp on a CPU
    assert result.quantize == max(speeds, key=speeds.get)
    written = list((tmp_path / "auto").glob("*.gguf"))
    assert bool(written) is result.quantize.startswith("gguf-")
    assert result.after.tokens_per_second == speeds[result.quantize]
    assert result.measured["int8-dynamic"].size_mib < 0.8 * result.measured["none"].size_mib
    report = json.loads((tmp_path / "auto" / "export.json").read_text())
    assert report["quantize"] == result.quantize and set(report["measured"]) == set(speeds)
    assert report["slower"] is (result.after.tokens_per_second < result.before.tokens_per_second)


def test_a_slower_export_is_said_plainly(base_dir, tmp_path, cli):
    """int8 on a CPU without int8 kernels makes generation slower: export says so, and export.json records it
    (the message appears exactly when the measurement says slower)."""
    from r1kit.export import ExportResult, Measurement

    slow = ExportResult(tmp_path, "int8", False, Measurement(10.0, 200.0), Measurement(3.0, 70.0))
    assert (
        slow.slower
        and not ExportResult(tmp_path, "int8", False, Measurement(10, 70), Measurement(3, 200)).slower
    )
    # the same model measured twice (no quantisation) is not "slower" however the machine's noise falls
    assert not ExportResult(tmp_path, "none", False, Measurement(10, 381), Measurement(10, 330)).slower
    done = cli(
        "export", "--model", str(base_dir), "--out", str(tmp_path / "q"), "--quantize", "int8", check=True
    )
    report = json.loads((tmp_path / "q" / "export.json").read_text())
    assert (
        "generates more slowly than the original on this machine" in " ".join(done.stdout.split())
    ) is report["slower"]
    offer = report["faster"]
    if offer:  # a slower export offers a scheme measured faster here, with its command
        assert report["slower"] and offer["tokens_per_second"] > report["after"]["tokens_per_second"]
        assert offer["command"] in " ".join(done.stdout.split())


def test_a_slower_export_offers_llama_cpp_when_it_measures_faster(base_dir, tmp_path):
    """The offer compares llama.cpp's q8_0 file, measured here, with what was written: made when it is faster
    (against a written export of 0.001 tokens/s it always is), not when it is slower (against 10^9)."""
    pytest.importorskip("llama_cpp")
    from r1kit.export import Measurement, faster_offer
    from r1kit.models.load import load_model, load_tokenizer

    config, tokenizer = load_model(base_dir).config, load_tokenizer(base_dir)

    def offer(tokens_per_second):
        after = Measurement(1.0, tokens_per_second)
        return faster_offer(base_dir, tmp_path / "q", config, tokenizer, False, after, 4, False)

    made = offer(0.001)
    assert made["method"] == "gguf-q8_0" and made["tokens_per_second"] > 0.001
    assert made["command"] == f"r1kit export --model {base_dir} --out q-gguf --format gguf --quant q8_0"
    assert offer(1e9) == {}


def test_the_folder_declares_what_vllm_needs_for_the_r1_reasoning_parser(base_dir, tmp_path):
    """vLLM cannot run on a CPU: what its deepseek_r1 parser reads (the think tags by text in the vocabulary, the
    first token of each tag's encoding) and its chat endpoint needs (a chat template) is checked on the files."""
    from transformers import AutoTokenizer

    from r1kit.export import vllm_declaration

    export(base_dir, tmp_path / "out", speed_tokens=4)
    declared = json.loads((tmp_path / "out" / "export.json").read_text())["vllm"]
    assert declared["reasoning_parser"] == "deepseek_r1" and declared["problems"] == []
    added = {
        t["content"]: t["id"]
        for t in json.loads((tmp_path / "out" / "tokenizer.json").read_text())["added_tokens"]
    }
    assert declared["think_token_ids"] == {"<think>": added["<think>"], "</think>": added["</think>"]}
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tokenizer.encode("<think>\n2+2</think>4", add_special_tokens=False)[0] == added["<think>"]
    assert tokenizer.chat_template and "--reasoning-parser deepseek_r1" in declared["command"]
    assert f"vllm serve {tmp_path / 'out'} " in declared["command"]

    # A tokenizer without the tags (a user's own): the parser cannot start, and the declaration says why.
    plain = tmp_path / "plain"
    (tmp_path / "out").rename(plain)
    tokenizer_file = json.loads((plain / "tokenizer.json").read_text())
    tokenizer_file["added_tokens"] = [
        t for t in tokenizer_file["added_tokens"] if "think" not in t["content"]
    ]
    (plain / "tokenizer.json").write_text(json.dumps(tokenizer_file))
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"] = {
        k: v for k, v in config.get("added_tokens_decoder", {}).items() if "think" not in v["content"]
    }
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    declared = vllm_declaration(plain, plain)
    assert declared["reasoning_parser"] is None and "--reasoning-parser" not in declared["command"]
    assert any("<think> is not in the tokenizer's vocabulary" in p for p in declared["problems"])
