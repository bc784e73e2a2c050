"""Training over two processes started by `r1kit launch` (torchrun, gloo on CPU): DDP and DeepSpeed ZeRO-2/ZeRO-3 follow the
same loss curve as one process with the same global batch; a ZeRO-3 checkpoint resumes and exports to a plain
model folder; FSDP on a CPU is refused instead of silently becoming DDP."""

import json
import os
import shutil
import sys

import pytest
import torch
from launched import run_launched

pytest.importorskip("deepspeed")
STEPS = 6
# One training run, the first ZeRO runs included: on a fresh machine they compile DeepSpeed's CPU ops (shared-
# memory all-reduce, then CPU Adam for the offloaded optimizer), 60 and 90 s on a quiet 2-core machine.
RUN_TIMEOUT = 600
# The first test also builds the module's runs: four trainings, two of them compiling.
pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(4 * RUN_TIMEOUT)]


def losses(run_dir) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["split"] == "train" and "loss" in r}


def train(recipe_path, out_dir, *sets, processes=1, resume=False, quiet=False):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    launcher = ["launch", "--nproc-per-node", str(processes), "--", "r1kit"] if processes > 1 else []
    launcher = ["--quiet", *launcher] if quiet else launcher
    args = [arg for s in sets for arg in ("--set", s)] + (["--resume", "auto"] if resume else [])
    command = [
        sys.executable,
        "-m",
        "r1kit",
        *launcher,
        "train",
        "sft",
        str(recipe_path),
        "--out",
        str(out_dir),
    ]
    return run_launched(command + args, timeout=RUN_TIMEOUT, env=env)


def weights(folder) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return {k: v.float() for k, v in AutoModelForCausalLM.from_pretrained(folder).state_dict().items()}


@pytest.fixture(scope="module")
def runs(recipe_for, tmp_path_factory):
    """One process with micro-batch 2 against two processes with micro-batch 1 each (same global batch), fp32."""
    root = tmp_path_factory.mktemp("distributed")
    recipe = recipe_for(
        f"train.max_steps={STEPS}",
        "train.save_steps=3",
        "train.eval_steps=3",
        "train.precision=fp32",
        "train.tensorboard=false",
    )
    recipe_path = root / "recipe.yaml"
    recipe_path.write_text(recipe.to_yaml())
    one = train(recipe_path, root / "one", "train.per_device_batch_size=2")
    (root / "one.stderr").write_text(one.stderr)
    for name, sets in {
        "ddp": ["train.strategy=ddp"],
        "zero2": ["train.strategy=zero2"],
        "zero3": ["train.strategy=zero3", "train.offload_optimizer=true"],
    }.items():
        done = train(recipe_path, root / name, *sets, processes=2, quiet=name == "ddp")
        (root / f"{name}.stderr").write_text(done.stderr)
    return root, recipe_path


@pytest.mark.slow
def test_the_console_shows_one_stage_display_and_quiet_reaches_the_ranks(runs):
    root, _ = runs
    one, ddp = (root / "one.stderr").read_text(), (root / "ddp.stderr").read_text()
    assert f"sft  step {STEPS}/{STEPS}" in one and "{'loss'" not in one  # plain lines, no raw dictionaries
    # `r1kit --quiet launch ...`: neither rank prints a step, rank 0 alone says it is done
    assert "sft  step" not in ddp and ddp.count("sft  done: ") == 1 and "{'loss'" not in ddp


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "zero2", "zero3"])
def test_two_processes_follow_the_one_process_loss_curve(runs, strategy):
    root, _ = runs
    expected, got = losses(root / "one"), losses(root / strategy)
    assert sorted(got) == list(range(1, STEPS + 1))
    assert expected[STEPS] < expected[1]  # it learns
    for step in expected:  # same rows per step, same reduction: equal up to float summation order
        assert got[step] == pytest.approx(expected[step], abs=1e-4), (strategy, step)
    run_record = next(
        json.loads(line)
        for line in (root / strategy / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["split"] == "run"
    )
    assert run_record["processes"] == 2
    reference = weights(root / "one" / "final")
    final = weights(root / strategy / "final")  # ZeRO-3 gathers its shards into one plain folder
    assert final.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.allclose(final[name], tensor, atol=1e-4), name


@pytest.mark.slow
def test_a_zero3_checkpoint_resumes_and_exports_to_a_plain_folder(runs, tmp_path):
    root, recipe_path = runs
    # What a run killed after its step-3 checkpoint leaves behind
    interrupted = tmp_path / "interrupted"
    shutil.copytree(root / "zero3", interrupted)
    shutil.rmtree(interrupted / "final")
    shutil.rmtree(interrupted / "checkpoints" / str(STEPS))
    rows = (interrupted / "metrics.jsonl").read_text().splitlines()
    (interrupted / "metrics.jsonl").write_text(
        "".join(line + "\n" for line in rows if json.loads(line).get("step", 0) <= 3)
    )
    assert (interrupted / "checkpoints" / "3" / "latest").is_file()  # partitioned ZeRO states
    train(
        recipe_path,
        interrupted,
        "train.strategy=zero3",
        "train.offload_optimizer=true",
        processes=2,
        resume=True,
    )
    expected, got = losses(root / "zero3"), losses(interrupted)
    for step in range(4, STEPS + 1):
        assert got[step] == pytest.approx(expected[step], abs=1e-5), step

    from r1kit.export import export

    exported = export(root / "zero3" / "checkpoints" / str(STEPS), tmp_path / "exported", speed_tokens=4)
    consolidated = weights(exported.out_dir)  # from the fp32 master weights in the shards
    for name, tensor in weights(root / "zero3" / "final").items():
        assert torch.allclose(consolidated[name], tensor, atol=1e-4), name


def test_fsdp_on_cpu_is_refused_not_downgraded(recipe_for, tmp_path, cli):
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(recipe_for("train.strategy=fsdp").to_yaml())
    done = cli("train", "sft", str(recipe_path), "--out", str(tmp_path / "run"))
    assert done.returncode == 2
    assert "fsdp needs CUDA GPUs" in done.stderr and "DDP" in done.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
