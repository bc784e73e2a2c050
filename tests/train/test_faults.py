"""Faults across ranks, with two real torchrun processes (gloo on CPU): a SIGTERM to the launcher or to one rank
stops both after the same step with one checkpoint both wrote, from which --resume auto reproduces the
uninterrupted run; a NaN loss on one rank is skipped by both, whose parameters stay identical; two ranks that
find no prepared data clean it once."""

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
from launched import kill_group, output_excerpt, run_launched

STEPS = 16
RUN_TIMEOUT = 300
pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(6 * RUN_TIMEOUT)]

# Loaded by every Python process whose path holds this folder: in the training processes (RANK is set) it
# makes rank 1's loss NaN at one step (before backward, so its gradients are NaN too, as in a real blow-up),
# and writes each rank's parameter hash when training ends; or it notes which ranks clean the data; or it kills
# every process of the run in the middle of a checkpoint save.
INJECTION = """
import os
if os.environ.get("RANK") is not None and os.environ.get("R1KIT_TEST_CLEAN_LOG"):
    import r1kit.data.clean

    clean = r1kit.data.clean.clean

    def noted_clean(*args, **kwargs):
        with open(os.environ["R1KIT_TEST_CLEAN_LOG"], "a") as log:
            log.write(os.environ["RANK"] + "\\n")
        return clean(*args, **kwargs)

    r1kit.data.clean.clean = noted_clean
if os.environ.get("RANK") == "0" and os.environ.get("R1KIT_TEST_KILL_SAVE_AT"):
    import signal
    import transformers

    save_rng_state = transformers.Trainer._save_rng_state

    def killed_mid_save(self, *args, **kwargs):  # the weights are written, the random states not yet
        if self.state.global_step == int(os.environ["R1KIT_TEST_KILL_SAVE_AT"]):
            os.kill(os.getpid(), signal.SIGKILL)
        return save_rng_state(self, *args, **kwargs)

    transformers.Trainer._save_rng_state = killed_mid_save
if os.environ.get("RANK") is not None and os.environ.get("R1KIT_TEST_NAN_AT"):
    import hashlib
    import transformers
    import trl

    at, rank = int(os.environ["R1KIT_TEST_NAN_AT"]), os.environ["RANK"]
    train = transformers.Trainer.train

    def nan_on_rank_1(compute_loss):
        def compute_nan_loss(self, model, inputs, *args, **kwargs):
            loss = compute_loss(self, model, inputs, *args, **kwargs)
            if rank == "1" and self.state.global_step + 1 == at:
                nan = float("nan")
                loss = loss * nan if not isinstance(loss, tuple) else (loss[0] * nan, *loss[1:])
            return loss

        return compute_nan_loss

    def train_then_hash(self, *args, **kwargs):
        output = train(self, *args, **kwargs)
        digest = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(name.encode() + tensor.detach().float().cpu().numpy().tobytes())
        with open(os.path.join(os.environ["R1KIT_TEST_HASH_DIR"], f"rank{rank}.txt"), "w") as out:
            out.write(digest.hexdigest())
        return output

    trl.SFTTrainer.compute_loss = nan_on_rank_1(trl.SFTTrainer.compute_loss)
    trl.GRPOTrainer.compute_loss = nan_on_rank_1(trl.GRPOTrainer.compute_loss)
    transformers.Trainer.train = train_then_hash
"""


def losses(run_dir) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    found: dict[int, float] = {}
    for row in rows:
        if row["split"] == "train" and "loss" in row:
            assert row["step"] not in found, f"step {row['step']} recorded twice"
            found[row["step"]] = row["loss"]
    return found


def command(recipe_path, out_dir, *sets, resume=False):
    args = [arg for s in sets for arg in ("--set", s)] + (["--resume", "auto"] if resume else [])
    return [
        sys.executable, "-m", "r1kit", "launch", "--nproc-per-node", "2", "--", "r1kit",
        "train", "sft", str(recipe_path), "--out", str(out_dir), *args,
    ]  # fmt: skip


def environment(**extra) -> dict[str, str]:
    """One thread per rank; lines wide enough that no path in a message is folded across lines."""
    return dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="400", **extra)


@pytest.fixture(scope="module")
def recipe_path(recipe_for, tmp_path_factory):
    recipe = recipe_for(
        f"train.max_steps={STEPS}",
        "train.save_steps=1000",  # only the signal saves
        "train.eval_steps=1000",
        "train.precision=fp32",
        "train.tensorboard=false",
        "train.strategy=ddp",
        "train.lr_scheduler=constant",
    )
    path = tmp_path_factory.mktemp("faults") / "recipe.yaml"
    path.write_text(recipe.to_yaml())
    return path


@pytest.fixture(scope="module")
def uninterrupted(recipe_path):
    out = recipe_path.parent / "uninterrupted"
    run_launched(command(recipe_path, out), timeout=RUN_TIMEOUT, env=environment())
    return losses(out)


def interrupt(recipe_path, out_dir, target: str):
    """Start a run and send SIGTERM, once it has logged step 4, to the launcher or to rank 1 alone. Returns
    (exit status, stdout, stderr) of the launcher."""
    process = subprocess.Popen(
        command(recipe_path, out_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=environment(), start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + RUN_TIMEOUT
        while time.time() < deadline and process.poll() is None:
            metrics = out_dir / "metrics.jsonl"
            if metrics.is_file() and any(
                json.loads(line).get("step", 0) >= 4 for line in metrics.read_text().splitlines() if line
            ):
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be interrupted"
        if target == "launcher":
            process.send_signal(signal.SIGTERM)
        else:
            [rank1] = [
                p for p in psutil.Process(process.pid).children(recursive=True)
                if p.environ().get("RANK") == "1"
            ]  # fmt: skip
            rank1.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        kill_group(process.pid)
    return process.returncode, stdout, stderr


@pytest.mark.slow
@pytest.mark.parametrize("target", ["launcher", "rank 1"])
def test_sigterm_stops_every_rank_after_the_same_step_and_resumes_exactly(
    recipe_path, uninterrupted, tmp_path, target
):
    out = tmp_path / "run"
    code, stdout, stderr = interrupt(recipe_path, out, target)
    assert code != 0 and "stopped by SIGTERM" in stdout, output_excerpt(stderr)
    if target == "launcher":
        assert code == 128 + signal.SIGTERM, output_excerpt(stderr)
    [saved] = [p for p in (out / "checkpoints").iterdir() if p.name.isdigit()]  # the step both stopped after
    step = int(saved.name)
    assert 4 <= step < STEPS
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in saved.iterdir()}
    assert json.loads((saved / "r1kit_checkpoint.json").read_text())["processes"] == 2
    assert f"checkpoint saved in {saved}" in " ".join(stdout.split())
    run_launched(command(recipe_path, out, resume=True), timeout=RUN_TIMEOUT, env=environment())
    resumed = losses(out)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for later in range(step + 1, STEPS + 1):
        assert resumed[later] == pytest.approx(uninterrupted[later], abs=1e-5), later


def injected(tmp_path, **settings) -> dict[str, str]:
    """The environment of a run with INJECTION loaded, set by `settings`."""
    injection = tmp_path / "inject"
    injection.mkdir(exist_ok=True)
    (injection / "sitecustomize.py").write_text(textwrap.dedent(INJECTION))
    return environment(
        PYTHONPATH=os.pathsep.join([str(injection), os.environ.get("PYTHONPATH", "")]), **settings
    )


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "zero2"])
def test_a_nan_on_one_rank_is_skipped_by_both(recipe_path, tmp_path, strategy):
    """DDP: r1kit's guard drops the step's gradients on every rank. ZeRO-2: DeepSpeed skips the step itself
    (its gradient-norm check), and the guard counts it."""
    hashes = tmp_path / "hashes"
    hashes.mkdir()
    env = injected(tmp_path, R1KIT_TEST_NAN_AT="3", R1KIT_TEST_HASH_DIR=str(hashes))
    run = command(recipe_path, tmp_path / "run", f"train.strategy={strategy}")
    done = run_launched(run, timeout=RUN_TIMEOUT, env=env)
    rank0, rank1 = (hashes / "rank0.txt").read_text(), (hashes / "rank1.txt").read_text()
    assert rank0 == rank1, "the replicas diverged"
    assert "non-finite loss at step 3: step skipped" in done.stderr
    assert "1 steps skipped for a non-finite loss" in done.stderr
    assert sorted(losses(tmp_path / "run")) == list(range(1, STEPS + 1))


@pytest.mark.slow
def test_a_nan_on_one_rank_is_skipped_by_both_in_grpo(recipe_for, tmp_path):
    recipe = recipe_for(
        "train.per_device_batch_size=4",
        "grpo.num_generations=4",
        "grpo.max_completion_length=16",
        "train.max_steps=4",
        "train.save_steps=1000",
        "train.eval_steps=1000",
        "train.precision=fp32",
        "train.tensorboard=false",
        "grpo.rewards={accuracy: 1.0, tag_count: 0.5}",
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe.to_yaml())
    hashes = tmp_path / "hashes"
    hashes.mkdir()
    env = injected(tmp_path, R1KIT_TEST_NAN_AT="2", R1KIT_TEST_HASH_DIR=str(hashes))
    run = command(path, tmp_path / "run")
    run[run.index("sft")] = "grpo"
    done = run_launched(run, timeout=RUN_TIMEOUT, env=env)
    assert (hashes / "rank0.txt").read_text() == (hashes / "rank1.txt").read_text(), "the replicas diverged"
    assert "non-finite loss at step 2: step skipped" in done.stderr
    assert "1 steps skipped for a non-finite loss" in done.stderr


@pytest.mark.slow
def test_two_ranks_clean_the_inputs_once(recipe_for, sft_inputs, tmp_path):
    """No prepared dataset, data.inputs given, five runs in a row: process 0 cleans, process 1 waits for the
    published folder and trains on the same data."""
    raw = sft_inputs[1].parent / "arith.jsonl"  # what the shared cleaned set was made from
    recipe = recipe_for(
        "train.max_steps=1",
        "train.tensorboard=false",
        "train.strategy=ddp",
        "train.precision=fp32",
        "train.dataset=null",
        f"data.inputs=[{raw}]",
        "data.semantic.enabled=false",
        "data.validation_fraction=0.1",
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe.to_yaml())
    expected = json.loads((sft_inputs[1] / "report.json").read_text())["kept"]
    for attempt in range(5):
        log = tmp_path / f"cleaned-by-{attempt}.txt"
        run = tmp_path / f"run{attempt}"
        run_launched(
            command(path, run), timeout=RUN_TIMEOUT, env=injected(tmp_path, R1KIT_TEST_CLEAN_LOG=str(log))
        )
        assert log.read_text().split() == ["0"], attempt
        assert json.loads((run / "data" / "report.json").read_text())["kept"] == expected, attempt


def test_a_save_that_runs_out_of_space_fails_clearly_and_keeps_the_last_checkpoint(recipe_path, tmp_path):
    """A disk that fills during a save, made by a file-size limit on the training processes: the run ends with
    a message naming what failed and the checkpoint that is intact, and resume takes that checkpoint."""
    from r1kit.train import checkpoint

    out = tmp_path / "run"
    every_4 = ["train.save_steps=4", "train.eval_steps=4"]
    run_launched(
        command(recipe_path, out, "train.max_steps=4", *every_4), timeout=RUN_TIMEOUT, env=environment()
    )
    previous = out / "checkpoints" / "4"
    limit = (previous / "model.safetensors").stat().st_size // 2

    def limited():  # in the launcher, inherited by torchrun and the ranks: writes past the limit fail
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    process = subprocess.Popen(
        command(recipe_path, out, "train.max_steps=8", *every_4, resume=True),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment(), start_new_session=True,
        preexec_fn=limited,
    )  # fmt: skip
    try:
        _, stderr = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        kill_group(process.pid)
    said = " ".join(stderr.split())
    assert process.returncode != 0 and "saving the checkpoint of step 8 failed" in said, output_excerpt(
        stderr
    )
    assert f"the newest complete checkpoint, {previous}, is intact" in said, output_excerpt(stderr)
    assert [p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()] == ["4"]
    assert checkpoint.problem(previous) is None and checkpoint.latest_checkpoint(out) == previous


@pytest.mark.slow
def test_a_run_killed_mid_save_resumes_from_the_last_complete_checkpoint(
    recipe_path, uninterrupted, tmp_path
):
    out = tmp_path / "run"
    every_4 = ["train.save_steps=4", "train.eval_steps=4"]
    process = subprocess.Popen(
        command(recipe_path, out, *every_4), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=injected(tmp_path, R1KIT_TEST_KILL_SAVE_AT="8"), start_new_session=True,
    )  # fmt: skip
    try:
        process.communicate(timeout=RUN_TIMEOUT)
    finally:
        kill_group(process.pid)
    assert process.returncode != 0  # rank 0 killed; torchrun ends the others
    assert [p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()] == ["4"]
    assert (out / "checkpoints" / ".staging" / "checkpoint-8").is_dir()  # what the kill left, never published
    done = run_launched(
        command(recipe_path, out, *every_4, resume=True), timeout=RUN_TIMEOUT, env=environment()
    )
    assert "resuming from" in done.stderr and str(out / "checkpoints" / "4") in " ".join(done.stderr.split())
    resumed = losses(out)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for later in range(5, STEPS + 1):
        assert resumed[later] == pytest.approx(uninterrupted[later], abs=1e-5), later
