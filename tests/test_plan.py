"""The capacity planner: parameter counts, the textbook memory figures, sharding, fixes, time, and the CLI."""

import json
from pathlib import Path

import pytest

from r1kit.config import load_recipe
from r1kit.models.architecture import describe_model
from r1kit.plan import GB, Setup, make_plan, memory_breakdown

ROOT = Path(__file__).resolve().parents[1]
LORA_7B = ROOT / "recipes" / "lora-r1-distill-qwen-7b-24gb.yaml"
FULL_7B = ROOT / "recipes" / "full-r1-distill-qwen-7b-8gpu.yaml"


def gpt3_config(tmp_path):
    """GPT-3 175B's shape (96 layers, width 12288, 2048 positions) as a config.json file."""
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "model_type": "gpt2",
                "n_embd": 12288,
                "n_layer": 96,
                "n_head": 96,
                "n_positions": 2048,
                "vocab_size": 50257,
                "torch_dtype": "float16",
            }
        )
    )
    return path


def full_setup(**changes) -> Setup:
    settings = dict(
        method="full",
        strategy="ddp",
        weight_bytes=2,
        precision="bf16",
        micro_batch=1,
        seq_length=2048,
        gradient_checkpointing=True,
        offload_optimizer=False,
        offload_parameters=False,
        gpus_per_node=1,
        nodes=1,
    )
    return Setup(**{**settings, **changes})


def states_gb(parts: dict) -> float:
    return parts["weights"] + parts["gradients"] + parts["optimizer states"]


def test_175b_parameters_in_fp16_are_350_gb_of_weights(tmp_path):
    recipe = load_recipe(
        None, [f"model.path={gpt3_config(tmp_path)}", "model.dtype=float16", "train.method=full"]
    )
    arch = describe_model(recipe)
    assert arch.total_params == pytest.approx(175e9, rel=0.01)
    parts, _, _ = memory_breakdown(arch, full_setup(), on_cpu=False, overhead_gb=0, capacity_gb=80)
    assert parts["weights"] == pytest.approx(350, rel=0.01)


def test_mixed_precision_adamw_costs_16_bytes_per_parameter_and_zero3_divides_it(tmp_path):
    recipe = load_recipe(None, [f"model.path={gpt3_config(tmp_path)}"])
    arch = describe_model(recipe)
    one, _, _ = memory_breakdown(
        arch, full_setup(strategy="zero3"), on_cpu=False, overhead_gb=0, capacity_gb=80
    )
    assert states_gb(one) * GB / arch.total_params == pytest.approx(16, rel=1e-6)
    eight, _, _ = memory_breakdown(
        arch, full_setup(strategy="zero3", gpus_per_node=8), on_cpu=False, overhead_gb=0, capacity_gb=80
    )
    assert states_gb(eight) == pytest.approx(states_gb(one) / 8, rel=1e-6)
    # ZeRO-1 shards only the 12 bytes of optimizer states; ZeRO-2 the gradients too
    z1, _, _ = memory_breakdown(
        arch, full_setup(strategy="zero1", gpus_per_node=8), on_cpu=False, overhead_gb=0, capacity_gb=80
    )
    z2, _, _ = memory_breakdown(
        arch, full_setup(strategy="zero2", gpus_per_node=8), on_cpu=False, overhead_gb=0, capacity_gb=80
    )
    per_param = {
        name: parts * GB / arch.total_params for name, parts in (("z1", states_gb(z1)), ("z2", states_gb(z2)))
    }
    assert per_param["z1"] == pytest.approx(2 + 2 + 12 / 8)
    assert per_param["z2"] == pytest.approx(2 + (2 + 12) / 8)
    # offloading the optimizer moves its states to host memory
    off, host, _ = memory_breakdown(
        arch,
        full_setup(strategy="zero3", gpus_per_node=8, offload_optimizer=True),
        on_cpu=False,
        overhead_gb=0,
        capacity_gb=80,
    )
    assert off["optimizer states"] == 0 and host == pytest.approx(eight["optimizer states"] * 8)


def test_moe_total_and_active_parameters_and_known_dense_checkpoints():
    v3 = describe_model(load_recipe(None, ["model.path=checkpoints/DeepSeek-R1"]))
    assert v3.total_params == pytest.approx(671e9, rel=0.005)  # the main model, without the MTP module
    assert v3.active_params == pytest.approx(37e9, rel=0.03)
    assert (v3.experts, v3.experts_per_token) == (256, 8)
    qwen = describe_model(load_recipe(LORA_7B, []))
    assert qwen.total_params == pytest.approx(7.62e9, rel=0.002) and qwen.active_params == qwen.total_params


def test_lora_trainable_count_matches_peft(tokenizer_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from r1kit.models.create import build_config

    recipe = load_recipe(
        None,
        [
            "model.preset=tiny-qwen2",
            f"model.tokenizer={tokenizer_dir}",
            "train.method=lora",
            "train.lora.r=8",
        ],
    )
    arch = describe_model(recipe)
    model = AutoModelForCausalLM.from_config(
        build_config("tiny-qwen2", AutoTokenizer.from_pretrained(tokenizer_dir))
    )
    assert arch.total_params == sum(p.numel() for p in model.parameters())
    peft_model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear"))
    assert arch.lora_params == sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


def test_shipped_recipes_fit_and_a_full_7b_on_one_24gb_gpu_gets_the_smallest_fix():
    lora = make_plan(load_recipe(LORA_7B, ["plan.device=RTX 4090"]))
    assert lora.fits and 15 < lora.memory_gb["weights"] < 16
    full = make_plan(load_recipe(FULL_7B, ["plan.device=H100", "plan.gpus_per_node=8"]))
    assert full.fits and full.memory_gb["weights"] == pytest.approx(7.62 * 2 / 8, rel=0.01)
    alone = make_plan(load_recipe(FULL_7B, ["plan.device=RTX 4090", "train.strategy=auto"]))
    assert not alone.fits and alone.fix == "train.method: qlora"  # 2 x 8192-token rows leave no room for bf16
    shorter = make_plan(
        load_recipe(
            FULL_7B,
            [
                "plan.device=RTX 4090",
                "train.strategy=auto",
                "train.per_device_batch_size=1",
                "train.max_seq_length=4096",
            ],
        )
    )
    assert not shorter.fits and shorter.fix == "train.method: lora"
    # a LoRA run that only misses by its activations is fixed by checkpointing them, not by a new method
    heavy = make_plan(
        load_recipe(
            LORA_7B,
            ["plan.device=RTX 4090", "train.gradient_checkpointing=false", "train.per_device_batch_size=2"],
        )
    )
    assert not heavy.fits and heavy.fix == "train.gradient_checkpointing: true"
    qlora = make_plan(load_recipe(LORA_7B, ["plan.device=RTX 4090", "train.method=qlora"]))
    assert 4 < qlora.memory_gb["weights"] < 7  # 4-bit linear layers, bf16 embeddings and head


def test_time_and_cost_follow_tokens_flops_and_prices():
    sets = [
        "plan.device=H100",
        "plan.gpus_per_node=8",
        "plan.dataset_tokens=1000000000",
        "plan.mfu=0.4",
        "plan.prices={on_demand: 4.0, preemptible: 1.5}",
        "train.num_epochs=2",
    ]
    plan = make_plan(load_recipe(FULL_7B, sets))
    assert plan.tokens == 2_000_000_000
    flops_per_token = 8 * plan.model.active_params  # 6 x params, +2 for recomputing checkpointed activations
    assert plan.hours * 3600 > plan.tokens * flops_per_token / (8 * 989e12 * 0.4)  # attention adds a little
    assert plan.hours * 3600 < 1.3 * plan.tokens * flops_per_token / (8 * 989e12 * 0.4)
    assert plan.costs["on_demand"] == pytest.approx(plan.hours * 8 * 4.0)
    assert plan.costs["preemptible"] < plan.costs["on_demand"]


def test_grpo_counts_the_reference_model_and_the_rollout_memory():
    base = [
        "plan.device=A100",
        "train.method=full",
        "train.strategy=auto",
        "model.path=DeepSeek-R1-Distill-Qwen-1.5B",
    ]
    without = make_plan(load_recipe(None, base + ["grpo.beta=0"]), "grpo")
    with_ref = make_plan(load_recipe(None, base + ["grpo.beta=0.04"]), "grpo")
    assert "reference model" not in without.memory_gb
    assert with_ref.memory_gb["reference model"] == pytest.approx(1.78 * 2, rel=0.02)
    assert without.memory_gb["rollout KV cache"] > 0
    vllm = make_plan(load_recipe(None, base + ["grpo.rollout_engine=vllm_colocate"]), "grpo")
    assert vllm.memory_gb["rollout engine (vLLM)"] == pytest.approx(0.3 * 80)


@pytest.mark.slow
def test_plan_cli_prints_the_breakdown_and_refuses_unknown_devices(cli):
    done = cli(
        "plan", str(LORA_7B), "--device", "RTX 4090", "--set", "plan.dataset_tokens=50000000", check=True
    )
    assert "DeepSeek-R1-Distill-Qwen-7B: 7.62B parameters" in done.stdout
    assert "fits: " in done.stdout and "optimizer states" in done.stdout and "time " in done.stdout
    # transformers imports torchao, whose warnings about CUDA-only kernels and torch's enums are not the user's
    assert "torchao" not in done.stderr and "_pytree" not in done.stderr, done.stderr
    as_json = json.loads(
        cli("plan", str(FULL_7B), "--device", "H100", "--gpus-per-node", "8", "--json", check=True).stdout
    )
    assert as_json["fits"] and as_json["setup"]["strategy"] == "zero3"
    bad = cli("plan", str(LORA_7B), "--device", "TPU-v9")
    assert bad.returncode == 2 and "plan.device" in bad.stderr and "memory_gb" in bad.stderr
