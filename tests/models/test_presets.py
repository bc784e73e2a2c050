import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from r1kit.errors import UserError
from r1kit.models.create import init_model
from r1kit.models.presets import PRESETS


@pytest.fixture(scope="module")
def models(tmp_path_factory, tokenizer_dir):
    """Every preset initialised once for this module."""
    root = tmp_path_factory.mktemp("presets")
    return {name: init_model(name, tokenizer_dir, root / name, seed=0) for name in PRESETS}


@pytest.mark.parametrize("name", list(PRESETS))
def test_hf_round_trip_keeps_logits(models, name):
    result = models[name]
    files = {p.name for p in result.out_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)

    # Plain transformers loads it, no r1kit code involved.
    model = AutoModelForCausalLM.from_pretrained(result.out_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(result.out_dir)
    assert model.config.model_type == PRESETS[name].model_type
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id

    # A second model rebuilt from the same seed is identical, and one from another seed is not: the
    # saved weights are the initialised ones, not defaults filled in at load time.
    torch.manual_seed(0)
    rebuilt = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(result.out_dir)).eval()
    ids = tokenizer("Natalia sold clips to 48 of her friends in April.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
        rebuilt_logits = rebuilt(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()
    assert torch.equal(logits, rebuilt_logits)

    # Save and load again: identical logits.
    model.save_pretrained(result.out_dir.parent / f"{name}-resaved")
    again = AutoModelForCausalLM.from_pretrained(result.out_dir.parent / f"{name}-resaved").eval()
    with torch.no_grad():
        assert torch.equal(again(ids).logits, logits)


def test_deepseek_v3_preset_has_mla_and_moe(models):
    model = AutoModelForCausalLM.from_pretrained(models["tiny-deepseek-v3"].out_dir)
    config = model.config
    assert config.kv_lora_rank < config.hidden_size and config.q_lora_rank < config.hidden_size
    names = [n for n, _ in model.named_modules()]
    assert any(n.endswith("self_attn.kv_a_proj_with_mqa") for n in names)  # MLA compression
    assert any(n.endswith("mlp.shared_experts") for n in names)
    assert any(n.endswith("mlp.experts") for n in names)
    assert any(n.endswith("mlp.gate") for n in names)  # router
    # ~1M parameters at an 8k vocabulary (this test's tokenizer has 1k tokens).
    num_without_embeddings = models["tiny-deepseek-v3"].num_parameters - 2 * 1024 * config.hidden_size
    assert 0.1e6 < num_without_embeddings + 2 * 8192 * config.hidden_size < 1.5e6


def test_small_preset_sizes(models):
    for name in ("small-qwen2", "small-deepseek-v3"):
        hidden = PRESETS[name].settings["hidden_size"]
        tied = PRESETS[name].settings["tie_word_embeddings"]
        at_8k = models[name].num_parameters + (1 if tied else 2) * (8192 - 1024) * hidden
        assert 20e6 <= at_8k <= 60e6, (name, at_8k)


def test_generation_defaults_follow_r1(models):
    model = AutoModelForCausalLM.from_pretrained(models["tiny-qwen2"].out_dir)
    assert model.generation_config.temperature == 0.6
    assert model.generation_config.top_p == 0.95
    assert model.generation_config.do_sample is True


def test_unknown_preset(tokenizer_dir, tmp_path):
    with pytest.raises(UserError, match="unknown preset 'tiny-llama'; available: tiny-qwen2"):
        init_model("tiny-llama", tokenizer_dir, tmp_path / "m")
