"""GRPO in two processes launched by torchrun (DDP over gloo on CPU)."""

import json
import os
import sys

import pytest
from launched import run_launched


@pytest.mark.slow
@pytest.mark.multiprocess
def test_grpo_with_two_processes(recipe_for, tmp_path):
    recipe = recipe_for(
        "train.per_device_batch_size=4",
        "grpo.num_generations=4",
        "grpo.max_completion_length=16",
        "train.max_steps=3",
        "train.save_steps=3",
        "train.eval_steps=3",
        "grpo.rewards={accuracy: 1.0, tag_count: 0.5}",
    )
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(recipe.to_yaml())
    env = dict(os.environ, OMP_NUM_THREADS="1")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command = [*torchrun, "-m", "r1kit", "train", "grpo", str(recipe_path), "--out", str(tmp_path / "run")]
    run_launched(command, timeout=540, env=env)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train" and "reward" in r]
    assert [r["step"] for r in train] == [1, 2, 3]  # one writer: the main process
    run_record = next(r for r in rows if r["split"] == "run")
    assert run_record["problems"] > 0 and run_record["processes"] == 2
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
