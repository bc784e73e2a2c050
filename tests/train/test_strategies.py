"""The trainer settings r1kit writes for each strategy, and the combinations it refuses."""

import json

import pytest

from r1kit.config import load_recipe
from r1kit.errors import UserError
from r1kit.train.strategies import check_strategy, deepspeed_config, fsdp_settings, strategy_settings


def recipe(*sets):
    return load_recipe(None, ["model.preset=tiny-qwen2", *sets])


def test_zero3_config_offloads_and_gathers_weights_for_saving():
    r = recipe(
        "train.strategy=zero3",
        "train.offload_optimizer=true",
        "train.offload_parameters=true",
        "train.collective_timeout_minutes=90",
    )
    settings = strategy_settings(r, "bf16", cuda=False)
    zero = settings["deepspeed"]["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_gather_16bit_weights_on_model_save"]
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"
    assert settings["deepspeed"]["bf16"] == {"enabled": True}
    assert settings["ddp_timeout"] == 90 * 60
    # the batch sizes stay with the Trainer, which fills them from the same recipe fields
    assert settings["deepspeed"]["train_micro_batch_size_per_gpu"] == "auto"
    assert (
        "offload_optimizer"
        not in deepspeed_config(recipe("train.strategy=zero2").train, "fp32", cuda=False)["zero_optimization"]
    )


def test_a_users_deepspeed_file_is_used_when_its_stage_matches(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 2, "allgather_bucket_size": 5e8}}))
    mine = deepspeed_config(
        recipe("train.strategy=zero2", f"train.deepspeed_config={path}").train, "bf16", cuda=True
    )
    assert mine["zero_optimization"]["allgather_bucket_size"] == 5e8
    with pytest.raises(UserError, match="sets ZeRO stage 2, but train.strategy is zero3"):
        deepspeed_config(
            recipe("train.strategy=zero3", f"train.deepspeed_config={path}").train, "bf16", cuda=True
        )
    path.write_text("{not json")
    with pytest.raises(UserError, match="cannot read"):
        deepspeed_config(
            recipe("train.strategy=zero2", f"train.deepspeed_config={path}").train, "bf16", cuda=True
        )


@pytest.mark.parametrize(
    ("sets", "cuda", "nodes", "message"),
    [
        (["train.strategy=fsdp"], False, 1, "fsdp needs CUDA GPUs"),
        (["train.strategy=fsdp", "train.fsdp_sharding=hybrid"], True, 1, "on one node use full"),
        (["train.strategy=zero3", "train.method=qlora"], True, 1, "qlora cannot run under zero3"),
        (
            ["train.strategy=ddp", "train.deepspeed_config=ds.json"],
            True,
            1,
            "set it to the file's ZeRO stage",
        ),
    ],
)
def test_refused_combinations(sets, cuda, nodes, message):
    with pytest.raises(UserError, match=message):
        check_strategy(recipe(*sets), cuda=cuda, nodes=nodes)


def test_fsdp2_shards_by_decoder_layer_with_sharded_checkpoints():
    settings = fsdp_settings(
        recipe("train.strategy=fsdp", "train.gradient_checkpointing=true"), "Qwen2DecoderLayer"
    )
    assert settings["fsdp"] is True
    config = settings["fsdp_config"]
    assert config["version"] == 2 and config["transformer_layer_cls_to_wrap"] == ["Qwen2DecoderLayer"]
    assert config["state_dict_type"] == "SHARDED_STATE_DICT" and config["activation_checkpointing"] is True


def test_ninja_beside_the_interpreter_is_put_on_path(monkeypatch, tmp_path):
    import os
    import sys

    from r1kit.train.strategies import find_ninja

    (tmp_path / "ninja").write_text("#!/bin/sh\n")
    (tmp_path / "ninja").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", "/nonexistent")
    find_ninja()
    assert os.environ["PATH"].split(os.pathsep)[0] == str(tmp_path)
    (tmp_path / "ninja").unlink()
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(UserError, match="pip install ninja"):
        find_ninja()
