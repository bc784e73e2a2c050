"""GRPO on CPU with the tiny presets: runs with and without a reference model, learns a simple reward, and
reports RL health with alerts."""

import json

import pytest

from r1kit.config import RLAlertConfig
from r1kit.errors import UserError
from r1kit.train.grpo import train_grpo
from r1kit.train.rl_health import check_alerts


def grpo_recipe(recipe_for, *overrides):
    return recipe_for(
        "train.per_device_batch_size=8",
        "grpo.num_generations=4",
        "grpo.max_completion_length=24",
        "train.max_steps=4",
        "train.save_steps=2",
        "train.eval_steps=2",
        *overrides,
    )


def records(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == "train" and "reward" in r]


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_runs_with_and_without_a_reference_model(recipe_for, tmp_path, beta):
    from transformers import AutoModelForCausalLM, TrainerCallback

    seen = []

    class Steps(TrainerCallback):  # a caller's own callback (the learning benchmark evaluates with one)
        def on_step_end(self, args, state, control, model=None, **kwargs):
            seen.append((state.global_step, model is not None))

    result = train_grpo(
        grpo_recipe(
            recipe_for,
            f"grpo.beta={beta}",
            "grpo.rewards={accuracy: 1.0, format: 0.2, tag_count: 0.1, length: 0.1, repetition: 0.1}",
        ),
        tmp_path / "run",
        callbacks=[Steps()],
    )
    assert result.global_step == 4
    assert seen == [(1, True), (2, True), (3, True), (4, True)]
    logged = records(tmp_path / "run")
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    for name in ("accuracy", "format", "tag_count", "length", "repetition"):
        assert f"rewards/{name}/mean" in logged[-1]
    for key in (
        "frac_reward_zero_std",
        "completions/mean_length",
        "completions/clipped_ratio",
        "entropy",
        "rollout_seconds",
        "train_seconds",
        "mfu",
    ):
        assert key in logged[-1], key
    assert ("kl" in logged[-1]) == (beta > 0)
    assert logged[-1]["rollout_seconds"] > 0
    assert AutoModelForCausalLM.from_pretrained(result.final_dir) is not None
    assert {p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit()} == {"4"}


def test_mean_reward_rises(recipe_for, tmp_path):
    """A learnable reward (the share of digits in the completion, a user function by import path)."""
    train_grpo(
        grpo_recipe(
            recipe_for,
            "train.max_steps=40",
            "train.save_steps=40",
            "train.eval_steps=40",
            "grpo.rewards={reward_fixtures:digit_share: 1.0}",
            "grpo.learning_rate=1e-2",
            "train.lr_scheduler=constant",
        ),
        tmp_path / "run",
    )
    rewards = [r["reward"] for r in records(tmp_path / "run")]
    assert len(rewards) == 40
    first, last = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    assert last > first + 0.3, (first, last)


def test_validation_answers_problems_and_ranks_checkpoints_by_accuracy(recipe_for, tmp_path):
    from r1kit.train import checkpoint

    validated = [
        "eval.during_training=true",
        "eval.during_training_problems=4",
        "eval.during_training_samples=2",
        "eval.max_new_tokens=16",
        "train.metric_for_best_model=eval_accuracy",
        "train.keep_best=1",
        "train.early_stopping_patience=null",
    ]
    run_dir = tmp_path / "run"
    result = train_grpo(grpo_recipe(recipe_for, *validated, "train.final_model=best"), run_dir)
    assert result.global_step == 4
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4]
    for r in evals:  # r1kit's answers, not TRL's sampled loss and rewards
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["sampled_accuracy"] <= 1.0, r
        assert "loss" not in r and "reward" not in r, r
    published = checkpoint.complete_checkpoints(run_dir)
    assert {s: checkpoint.metric_of(p) for s, p in published.items()} == {
        r["step"]: r["accuracy"] for r in evals
    }
    assert [r["step"] for r in records(run_dir)] == [1, 2, 3, 4]  # training logs are still train's

    # a target reached at the first validation ends the run there
    stopped = train_grpo(grpo_recipe(recipe_for, *validated, "train.stop_at_metric=0.0"), tmp_path / "stop")
    assert stopped.global_step == 2
    with pytest.raises(UserError, match="eval_loss is not logged by GRPO"):
        train_grpo(grpo_recipe(recipe_for, *validated[:-3]), tmp_path / "loss")


def test_alerts_fire_on_crafted_logs():
    thresholds = RLAlertConfig(window=3)
    healthy = {
        "entropy": 1.2,
        "frac_reward_zero_std": 0.1,
        "completions/clipped_ratio": 0.0,
        "rewards/format/mean": 0.5,
        "rewards/accuracy/mean": 0.5,
    }
    assert check_alerts([healthy], thresholds) == []
    assert check_alerts([{**healthy, "entropy": 0.01}], thresholds) == ["entropy_collapse"]
    assert check_alerts([{**healthy, "frac_reward_zero_std": 0.75}], thresholds) == ["zero_variance"]
    assert check_alerts([{**healthy, "completions/clipped_ratio": 0.5}], thresholds) == ["truncation"]
    hacking = [
        {**healthy, "rewards/format/mean": f, "rewards/accuracy/mean": 0.1}
        for f in (0.1, 0.1, 0.2, 0.6, 0.7, 0.8)
    ]
    assert check_alerts(hacking, thresholds) == ["reward_hacking"]
    learning = [{**h, "rewards/accuracy/mean": a} for h, a in zip(hacking, (0.1, 0.1, 0.2, 0.4, 0.5, 0.6))]
    assert check_alerts(learning, thresholds) == []


def test_alerts_reach_the_metrics_file(recipe_for, tmp_path):
    train_grpo(
        grpo_recipe(
            recipe_for, "train.max_steps=2", "grpo.alerts.max_truncation=0.0", "grpo.max_completion_length=8"
        ),
        tmp_path / "run",
    )
    assert all(r.get("alert/truncation") == 1.0 for r in records(tmp_path / "run"))


def test_refusals(recipe_for, tmp_path):
    with pytest.raises(UserError, match="multiple of grpo.num_generations"):
        train_grpo(grpo_recipe(recipe_for, "train.per_device_batch_size=6"), tmp_path / "a")
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        train_grpo(grpo_recipe(recipe_for, "grpo.rollout_engine=vllm_colocate"), tmp_path / "b")


def test_problems_carry_their_worked_steps_for_the_steps_reward(recipe_for, tmp_path):
    from transformers import AutoTokenizer

    from r1kit.train.grpo import problem_dataset
    from r1kit.train.rewards import steps

    recipe = grpo_recipe(recipe_for)
    dataset, dropped, _ = problem_dataset(
        recipe, tmp_path, AutoTokenizer.from_pretrained(recipe.model.tokenizer)
    )
    assert dropped == 0 and all(dataset["reasoning"])  # the arithmetic problems all have worked solutions
    worked = [
        f"<think>\n{r}\n</think>\n\n\\boxed{{{a}}}" for r, a in zip(dataset["reasoning"], dataset["answer"])
    ]
    assert steps(dataset["prompt"], worked, **{k: dataset[k] for k in ("answer", "reasoning")}) == [
        1.0
    ] * len(worked)
    assert steps(
        dataset["prompt"], ["<think>\n</think> 0"] * len(worked), reasoning=dataset["reasoning"]
    ) == [0.0] * len(worked)


def test_a_crash_while_saving_the_final_model_is_redone_by_a_rerun(recipe_for, tmp_path, monkeypatch):
    import r1kit.train.run

    recipe = grpo_recipe(recipe_for, "train.max_steps=2")
    run_dir = tmp_path / "run"

    def disk_full(model, tokenizer, out_dir, *args, **kwargs):
        model.config.save_pretrained(out_dir)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(r1kit.train.run, "_write_final", disk_full)
    with pytest.raises(OSError, match="No space left"):
        train_grpo(recipe, run_dir)
    assert not (run_dir / "final").exists() and (run_dir / "checkpoints" / "2").is_dir()

    monkeypatch.undo()
    result = train_grpo(recipe, run_dir, resume="auto")
    assert result.global_step == 2 and (result.final_dir / "model.safetensors").is_file()
    assert [r["step"] for r in records(run_dir)] == [1, 2]  # no step beyond the last
    with pytest.raises(UserError, match="is complete"):
        train_grpo(recipe, run_dir, resume="auto")
