import json
import math
import shutil

import pytest

from r1kit.errors import UserError
from r1kit.hardware import choose_precision
from r1kit.train import checkpoint
from r1kit.train.callbacks import NonFiniteGuard


def test_retention_keeps_latest_and_best_k():
    metrics = {10: 3.0, 20: 2.0, 30: 2.5, 40: 1.5, 50: None}
    assert checkpoint.to_delete(metrics, keep_best=2, greater_is_better=False) == [10, 30]
    assert checkpoint.to_delete(metrics, keep_best=0, greater_is_better=False) == [10, 20, 30, 40]
    assert checkpoint.to_delete(metrics, keep_best=1, greater_is_better=True) == [20, 30, 40]
    assert checkpoint.to_delete({}, 1, False) == []


def staged_checkpoint(run_dir, step: int, processes: int = 1):
    """What the trainer leaves in the staging area for `step`: its state, weights and random states."""
    import torch
    from safetensors.torch import save_file

    staged = checkpoint.checkpoint_dir(run_dir) / checkpoint.STAGING / f"checkpoint-{step}"
    staged.mkdir(parents=True)
    (staged / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    save_file({"w": torch.ones(2)}, staged / "model.safetensors")
    names = ["rng_state.pth"] if processes == 1 else [f"rng_state_{k}.pth" for k in range(processes)]
    for name in names:
        torch.save({"python": step}, staged / name)
    return staged


def test_only_published_checkpoints_are_visible(tmp_path):
    staging = checkpoint.checkpoint_dir(tmp_path) / checkpoint.STAGING
    (staging / "checkpoint-5").mkdir(parents=True)  # a save that never finished
    assert checkpoint.latest_checkpoint(tmp_path) is None
    shutil.rmtree(staging / "checkpoint-5")
    published = checkpoint.publish(
        staged_checkpoint(tmp_path, 5), tmp_path, 5, 1.25, metric_name="eval_loss", greater_is_better=False
    )
    assert published == tmp_path / "checkpoints" / "5" and not (staging / "checkpoint-5").exists()
    assert checkpoint.latest_checkpoint(tmp_path) == published
    assert json.loads((published / checkpoint.INFO_FILE).read_text()) == {
        "step": 5,
        "metric": 1.25,
        "metric_name": "eval_loss",
        "greater_is_better": False,
        "processes": 1,
    }


@pytest.mark.parametrize(
    "damage, reason",
    [
        (
            lambda path: (path / "rng_state_1.pth").unlink(),
            "rng_state_1.pth missing (written by 2 processes)",
        ),
        (lambda path: (path / "rng_state_0.pth").write_bytes(b""), "rng_state_0.pth is empty"),
        (
            lambda path: (path / "model.safetensors").write_bytes(b"\x10" * 16),
            "model.safetensors does not open",
        ),
        (lambda path: (path / "trainer_state.json").write_text("{"), "records do not read"),
        (lambda path: (path / "trainer_state.json").write_text('{"global_step": 3}'), "another step"),
    ],
)
def test_resume_passes_over_a_checkpoint_that_does_not_check_out(tmp_path, capsys, damage, reason):
    """What a disk that filled or a machine that lost power can leave: --resume auto takes the newest
    checkpoint that checks out, and names the ones it passes over."""
    older = checkpoint.publish(staged_checkpoint(tmp_path, 4, processes=2), tmp_path, 4, None, processes=2)
    newer = checkpoint.publish(staged_checkpoint(tmp_path, 8, processes=2), tmp_path, 8, None, processes=2)
    assert checkpoint.latest_checkpoint(tmp_path) == newer
    damage(newer)
    assert checkpoint.problem(newer) is not None and reason in checkpoint.problem(newer)
    assert checkpoint.latest_checkpoint(tmp_path) == older
    assert f"passing over checkpoint {newer}" in capsys.readouterr().err.replace("\n", "")


def test_a_checkpoint_of_an_earlier_release_still_resumes(tmp_path):
    """Before the number of writing processes was recorded, a two-process checkpoint had rng_state_0/_1 and
    no count: it must not be passed over (the run would start afresh)."""
    published = checkpoint.publish(
        staged_checkpoint(tmp_path, 4, processes=2), tmp_path, 4, None, processes=2
    )
    info = published / checkpoint.INFO_FILE
    info.write_text(json.dumps({"step": 4, "metric": None}))  # what earlier releases wrote
    assert checkpoint.problem(published) is None and checkpoint.latest_checkpoint(tmp_path) == published


def test_a_step_republished_up_to_its_second_rename_is_put_back(tmp_path):
    """Killed between renaming the old copy of a step aside and renaming the new one in: the old copy is
    complete, and resume takes it; the half-done new one in staging is never read."""
    from r1kit.publish import old_dir

    published = checkpoint.publish(staged_checkpoint(tmp_path, 6), tmp_path, 6, None)
    published.rename(old_dir(published))  # the first rename of a re-publishing, then the kill
    assert checkpoint.complete_checkpoints(tmp_path) == {}
    assert checkpoint.latest_checkpoint(tmp_path) == published and checkpoint.problem(published) is None


def test_the_best_checkpoint_skips_nan_and_keeps_its_recorded_direction(tmp_path):
    for step, metric in [(1, 0.5), (2, float("nan")), (3, 0.7), (4, None)]:
        checkpoint.publish(
            staged_checkpoint(tmp_path, step),
            tmp_path,
            step,
            metric,
            metric_name="eval_accuracy",
            greater_is_better=True,
        )
    assert checkpoint.best_checkpoint(tmp_path, greater_is_better=False).name == "3"  # as recorded: higher
    assert checkpoint.metric_of(checkpoint.complete_checkpoints(tmp_path)[2]) is None


def test_stop_at_metric_fires_for_the_unprefixed_name():
    """`train.metric_for_best_model: accuracy` is logged as eval_accuracy; the stop once never fired on it."""
    from transformers import TrainerControl

    from r1kit.train.callbacks import StopAtMetric

    control = TrainerControl()
    StopAtMetric("accuracy", 0.5, greater_is_better=True).on_evaluate(
        None, FakeState(), control, metrics={"eval_accuracy": 0.6}
    )
    assert control.should_training_stop and control.should_save


def test_a_resumed_run_records_each_step_once(tmp_path):
    """metrics.jsonl after a crash at step 7 and a resume from the step-5 checkpoint: steps 6 and 7 are redone,
    and recorded once, not twice."""
    from r1kit.train.callbacks import MetricsLogger

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "split": "train", "loss": s}) + "\n" for s in range(8)))
    state = FakeState()
    state.global_step, state.num_input_tokens_seen = 5, 0
    logger = MetricsLogger(path, {"mode": "sft"})
    logger.on_train_begin(None, state, None)
    for step in (6, 7):
        state.global_step = step
        logger.on_log(None, state, None, logs={"loss": step + 0.5})
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if "loss" in line]
    assert steps == [0, 1, 2, 3, 4, 5, 6, 7]


def test_an_unknown_metric_is_refused_with_the_known_ones():
    from r1kit.config import greater_is_better, load_recipe

    with pytest.raises(UserError, match="not a metric r1kit logs; one of loss, perplexity, accuracy"):
        load_recipe(None, ["train.metric_for_best_model=bleu"])
    assert greater_is_better("accuracy") and greater_is_better("eval_mixed_groups")
    assert not greater_is_better("perplexity") and not greater_is_better("eval_loss")


def test_precision_choice(monkeypatch):
    import torch

    import r1kit.hardware as hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    assert choose_precision("auto") == "bf16"
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    assert choose_precision("auto") == "fp32"
    assert choose_precision("bf16") == "bf16"
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        choose_precision("fp16")


class FakeState:
    global_step = 0


class FakeModel:
    def __init__(self):
        self.zeroed = 0

    def zero_grad(self, set_to_none=True):
        self.zeroed += 1


class FakeTrainer:
    def __init__(self, losses):
        self.state = FakeState()
        self._losses = iter(losses)

    def training_step(self, model, inputs):
        import torch

        return torch.tensor(next(self._losses))


class FakeDeepSpeedEngine:
    """Steps inside the training step, as DeepSpeed does in backward; skips the step or not."""

    def __init__(self, skips: bool):
        self.global_steps, self.skips = 0, skips

    def was_step_applied(self) -> bool:
        return not self.skips


@pytest.mark.parametrize("engine", ["deepspeed skips", "deepspeed applies", "fp16 scaler"])
def test_nonfinite_steps_where_the_engine_steps_or_skips_itself(engine):
    """DeepSpeed steps inside backward and skips overflowing steps itself; AMP's fp16 scaler skips them at the
    optimizer step (and would fail on dropped gradients): the guard counts and leaves the gradients alone,
    and stops the run at once if DeepSpeed applied a non-finite step after all."""
    import types

    trainer = FakeTrainer([1.0, float("nan"), 0.5])
    trainer.is_deepspeed_enabled = engine.startswith("deepspeed")
    trainer.args = types.SimpleNamespace(fp16=engine == "fp16 scaler")
    trainer.accelerator = types.SimpleNamespace(scaler=object() if engine == "fp16 scaler" else None)
    trainer.model_wrapped = FakeDeepSpeedEngine(skips=engine == "deepspeed skips")
    step = trainer.training_step

    def stepping(model, inputs):  # the engine's optimizer step runs inside each (one micro-step per step)
        trainer.model_wrapped.global_steps += 1
        return step(model, inputs)

    trainer.training_step = stepping
    guard = NonFiniteGuard(trainer, max_in_a_row=3)
    model = FakeModel()
    assert float(trainer.training_step(model, {})) == 1.0
    trainer.state.global_step = 1
    if engine == "deepspeed applies":
        with pytest.raises(UserError, match="DeepSpeed applied the step"):
            trainer.training_step(model, {})
        return
    assert math.isnan(float(trainer.training_step(model, {})))  # counted, left to the engine
    trainer.state.global_step = 2
    assert float(trainer.training_step(model, {})) == 0.5
    assert guard.skipped == 1 and model.zeroed == 0


def test_nonfinite_steps_are_skipped_then_stop():
    nan = float("nan")
    # Two micro-steps per optimizer step.
    trainer = FakeTrainer([1.0, nan, 0.5, 0.4, nan, 0.3, nan, 0.1])
    guard = NonFiniteGuard(trainer, max_in_a_row=2)
    model = FakeModel()
    results = []
    for step, _micro in [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]:
        trainer.state.global_step = step
        results.append(float(trainer.training_step(model, {})))
    # Step 0: the NaN in its 2nd micro-step skips it; step 1 is clean; step 2 skipped from its 1st micro-step on.
    assert results == pytest.approx([1.0, 0.0, 0.5, 0.4, 0.0, 0.0])
    assert guard.skipped == 2 and guard.in_a_row == 1 and model.zeroed == 3
    trainer.state.global_step = 3
    with pytest.raises(UserError, match="2 optimizer steps in a row had a NaN/inf loss"):
        trainer.training_step(model, {})  # step 3 also non-finite, right after step 2


class Payload:
    """What a tampered checkpoint could carry: unpickling it would run code."""

    def __reduce__(self):
        return (print, ("unpickled",))


def test_zero_checkpoints_load_tensors_only(tmp_path):
    """DeepSpeed asks torch.load to unpickle anything; inside weights_only_loads it reads tensors, plain
    containers and DeepSpeed's loss scaler only."""
    import pickle

    import torch
    from deepspeed.runtime.fp16.loss_scaler import LossScaler

    from r1kit.models.load import weights_only_loads

    torch.save({"w": torch.ones(2), "scaler": LossScaler(1.0)}, tmp_path / "optim_states.pt")
    torch.save({"w": torch.ones(2), "payload": Payload()}, tmp_path / "tampered.pt")
    with weights_only_loads():
        loaded = torch.load(tmp_path / "optim_states.pt", weights_only=False)
        with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
            torch.load(tmp_path / "tampered.pt", weights_only=False)
    assert torch.equal(loaded["w"], torch.ones(2)) and isinstance(loaded["scaler"], LossScaler)
    assert "payload" in torch.load(tmp_path / "tampered.pt", weights_only=False)  # outside: as asked
