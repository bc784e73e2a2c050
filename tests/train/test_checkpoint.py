import json

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


def test_only_published_checkpoints_are_visible(tmp_path):
    staging = checkpoint.checkpoint_dir(tmp_path) / checkpoint.STAGING
    (staging / "checkpoint-5").mkdir(parents=True)  # a save that never finished
    assert checkpoint.latest_checkpoint(tmp_path) is None
    published = checkpoint.publish(staging / "checkpoint-5", tmp_path, 5, 1.25)
    assert published == tmp_path / "checkpoints" / "5" and not (staging / "checkpoint-5").exists()
    assert checkpoint.latest_checkpoint(tmp_path) == published
    assert json.loads((published / checkpoint.INFO_FILE).read_text()) == {"step": 5, "metric": 1.25}


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
