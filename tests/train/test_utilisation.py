"""MFU's parts: the parameters that multiply, the FLOPs per token, the measured peak, and MFU itself."""

import math

import pytest

from r1kit.config import GrpoConfig
from r1kit.train.utilisation import Utilisation, matmul_params, matmul_peak_flops, passes_per_token


@pytest.fixture(scope="module", params=["tiny-qwen2", "tiny-deepseek-v3"])
def model(request, tmp_path_factory, tokenizer_dir):
    from r1kit.models.create import init_model
    from r1kit.models.load import load_model

    out_dir = tmp_path_factory.mktemp(request.param)
    init_model(request.param, tokenizer_dir, out_dir, seed=1)
    return load_model(out_dir, dtype="float32")


def test_the_parameters_that_multiply(model):
    """Not the input embedding (a lookup); the output head once, tied or not; routed experts at top-k."""
    config = model.config
    embedding = model.get_input_embeddings().weight
    tied = model.get_output_embeddings().weight is embedding
    dense = sum(p.numel() for n, p in model.named_parameters() if p is not embedding)
    routed = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n and "shared" not in n)
    experts = getattr(config, "n_routed_experts", 0) or 0
    idle = routed - routed * config.num_experts_per_tok // experts if experts else 0
    head = embedding.numel() if tied else 0
    assert matmul_params(model) == dense + head - idle
    assert (idle > 0) == (model.config.model_type == "deepseek_v3")


def test_flops_per_token_and_mfu(model):
    utilisation = Utilisation.of(model, passes_per_token("full"), 100.0, peak=1e12)
    config = model.config
    heads = config.num_attention_heads
    head_dim = (
        getattr(config, "v_head_dim", None)
        or getattr(config, "head_dim", None)
        or config.hidden_size // heads
    )
    forward = 2 * matmul_params(model) + 4 * config.num_hidden_layers * heads * head_dim * 100
    assert utilisation.flops_per_token() == 3 * forward
    assert math.isclose(utilisation.mfu(1000.0), 3 * forward * 1000 / 1e12)
    grpo = Utilisation.of(
        model, passes_per_token("lora", GrpoConfig(beta=0.04)), 20.0, completion_key="completions/mean_length"
    )
    assert grpo.passes == 2 + 1 + 1  # adapters, the rollout, the reference model
    longer = grpo.flops_per_token({"completions/mean_length": 80.0})
    assert longer == Utilisation.of(model, 4, 100.0).flops_per_token()
    assert grpo.mfu(1000.0) is None  # no peak yet


def test_the_measured_peak_is_of_the_precision_asked():
    fp32 = matmul_peak_flops("fp32", seconds=0.05)
    assert math.isfinite(fp32) and fp32 > 0
    utilisation = Utilisation(1000, 1, 8, 3, 10.0, precision="fp32", peak_tflops=2.0)
    utilisation.measure("cpu", processes=2)
    assert utilisation.peak == 2 * 2.0e12  # the recipe's figure per device, not a measurement
