"""`r1kit experiment`: the same budget and decoding for every arm, a control reward of the same mean, intervals
with known answers, and a verdict computed from the figures."""

import json
import random
import re

import numpy as np
import pytest

from r1kit.eval.metrics import bootstrap_ci
from r1kit.experiment import verdict
from r1kit.train.rewards import accuracy, coin_flip


def test_bootstrap_intervals_with_known_answers():
    assert bootstrap_ci(np.ones((3, 50))).to_dict() == {"mean": 1.0, "low": 1.0, "high": 1.0, "level": 0.95}
    # One seed, 400 problems half right: the normal approximation's half-width is 1.96 * sqrt(0.25 / 400).
    half = bootstrap_ci(np.tile([0.0, 1.0], 200))
    assert half.mean == 0.5 and half.low == pytest.approx(0.451, abs=0.012)
    assert half.high == pytest.approx(0.549, abs=0.012)
    # Seeds that disagree widen the interval: three seeds at 20%, 60% and 40% on every problem.
    spread = bootstrap_ci(np.stack([np.full(100, 0.2), np.full(100, 0.6), np.full(100, 0.4)]))
    assert (
        spread.mean == pytest.approx(0.4)
        and spread.low == pytest.approx(0.2)
        and spread.high == pytest.approx(0.6)
    )
    with pytest.raises(ValueError):
        bootstrap_ci(np.zeros((2, 2, 2)))


def interval(mean, low, high):
    return {"mean": mean, "low": low, "high": high, "level": 0.95}


def test_the_verdict_is_computed_from_the_differences():
    wins = {
        "grpo - sft-more": {"greedy": interval(0.234, 0.198, 0.270)},
        "grpo-random - sft": {"greedy": interval(-0.006, -0.03, 0.02)},
    }
    assert verdict(wins, 3) == (
        "GRPO beats continued SFT by +23.4 points (95% CI +19.8 to +27.0) on 3 seeds; the random-reward "
        "control moved -0.6 points (95% CI -3.0 to +2.0)."
    )
    tie = {"grpo - sft-more": {"greedy": interval(0.013, -0.02, 0.05)}}
    assert verdict(tie, 1).startswith("GRPO does not beat continued SFT: +1.3 points")
    loses = {"grpo - sft": {"greedy": interval(-0.1, -0.15, -0.05)}}
    assert (
        verdict(loses, 2)
        == "GRPO does worse than the SFT start: -10.0 points (95% CI -15.0 to -5.0) on 2 seeds."
    )


def test_the_random_reward_pays_as_much_as_accuracy_on_random_completions():
    rng = random.Random(0)
    landed_on_right = paid = 0
    for _ in range(200):
        answers = [str(rng.randint(0, 9)) for _ in range(8)]
        completions = [f"<think>x</think> \\boxed{{{rng.choice([a, '99'])}}}" for a in answers]
        real = accuracy([None] * 8, completions, answer=answers)
        fake = coin_flip([None] * 8, completions, answer=answers)
        assert sum(fake) == sum(real) and set(fake) <= {0.0, 1.0}  # the batch's mean, exactly
        assert fake == coin_flip([None] * 8, completions, answer=answers)  # seeded by the batch
        landed_on_right += sum(f * r for f, r in zip(fake, real))
        paid += sum(fake)
    assert 0.4 < landed_on_right / paid < 0.6  # about half the right completions are paid: no signal


@pytest.fixture(scope="module")
def start(recipe_for, tmp_path_factory):
    from r1kit.train.sft import train_sft

    run = tmp_path_factory.mktemp("start")
    return train_sft(
        recipe_for("train.max_steps=2", "train.save_steps=2", "train.eval_steps=2"), run
    ).final_dir


def experiment_recipe(recipe_for, start, *overrides):
    return recipe_for(
        f"model.path={start}",
        "model.preset=null",
        "model.tokenizer=null",
        "eval.during_training_problems=8",
        "eval.max_new_tokens=8",
        "eval.concurrency=64",
        "grpo.max_completion_length=8",
        "grpo.num_generations=4",
        "experiment.samples=2",
        "experiment.grpo_set=[train.per_device_batch_size=8]",
        "train.eval_steps=1",
        *overrides,
    )


def test_every_arm_gets_the_same_steps_and_decoding(recipe_for, start, tmp_path):
    from r1kit.experiment import run_experiment

    recipe = experiment_recipe(
        recipe_for, start, "experiment.budget=steps", "experiment.amount=2",
        "experiment.arms=[sft, sft-more, grpo, grpo-random]",
    )  # fmt: skip
    report = run_experiment(recipe, tmp_path / "x")
    assert report == json.loads((tmp_path / "x" / "report.json").read_text())
    runs = report["runs"]
    assert [r["arm"] for r in runs] == ["sft", "sft-more", "grpo", "grpo-random"]
    trained = [r for r in runs if r["arm"] != "sft"]
    assert [r["steps"] for r in trained] == [2, 2, 2]  # the budget, from each arm's own clock
    for r in trained:
        clock = json.loads((tmp_path / "x" / r["arm"] / "seed-42" / "train_clock.json").read_text())
        assert clock["steps"] == 2 and r["train_seconds"] == clock["train_seconds"] > 0
    assert all(r["decoding"] == runs[0]["decoding"] for r in runs)
    assert runs[0]["decoding"]["greedy"]["temperature"] == 0.0
    assert runs[0]["decoding"]["sampled"]["temperature"] == 0.6 and runs[0]["decoding"]["samples"] == 2
    problems = report["test_problems"]
    assert problems > 0 and all(len(r["greedy"]) == problems and len(r["sampled"]) == problems for r in runs)
    # the figures are those of the answers: greedy accuracy is the share of right greedy answers
    for arm, figures in report["arms"].items():
        (run,) = [r for r in runs if r["arm"] == arm]
        assert figures["greedy"]["mean"] == pytest.approx(sum(run["greedy"]) / problems)
    grpo_random = (tmp_path / "x" / "grpo-random" / "seed-42" / "config.yaml").read_text()
    assert "random: 1.0" in grpo_random and f"path: {start}" in grpo_random
    assert report["verdict"] == verdict(report["differences"], 1)
    markdown = (tmp_path / "x" / "report.md").read_text()
    assert report["verdict"] in markdown and "| grpo-random |" in markdown
    assert (tmp_path / "x" / "accuracy_vs_time.png").stat().st_size > 0


def test_a_seconds_budget_stops_each_arm_at_the_first_step_past_it(recipe_for, start, tmp_path, capfd):
    from r1kit.experiment import run_experiment

    # a hundredth of a pass over the data takes less than 1.5 s: the arm must train on past it
    recipe = experiment_recipe(
        recipe_for, start, "experiment.budget=seconds", "experiment.amount=1.5", "experiment.arms=[sft-more]",
        "experiment.seeds=2", "train.max_steps=1000", "train.num_epochs=0.01",
    )  # fmt: skip
    report = run_experiment(recipe, tmp_path / "x")
    for seed in (42, 43):
        clock = json.loads((tmp_path / "x" / "sft-more" / f"seed-{seed}" / "train_clock.json").read_text())
        seconds = sorted(clock["at_step"].values())
        # train_clock.json rounds to the millisecond: a step that ended at 1.4996 s reads 1.5
        assert seconds[-1] >= 1.5 and (len(seconds) == 1 or seconds[-2] <= 1.5)
        assert 1 < clock["steps"] < 1000
    assert report["seeds"] == [42, 43] and len(report["arms"]["sft-more"]["train_seconds"]) == 2
    # the progress counts seconds against the budget, not steps against the endless epochs' ~1e9 x data
    progress = capfd.readouterr().err
    assert re.search(r"^sft  step \d+, [012]/2 training s  loss", progress, re.M), progress[-500:]
    assert not re.search(r"/\d{6,}", progress), progress[-500:]


def test_an_experiment_needs_a_start_and_test_problems(recipe_for, tmp_path):
    from r1kit.errors import UserError
    from r1kit.experiment import run_experiment

    with pytest.raises(UserError, match="experiment needs model.path"):
        run_experiment(recipe_for(), tmp_path / "x")
    with pytest.raises(UserError, match="no test problems are left"):
        run_experiment(
            recipe_for("model.path=/nowhere", "model.preset=null", "eval.during_training_problems=1000"),
            tmp_path / "x",
        )


def test_the_command_prints_the_arms_and_the_verdict(cli, recipe_for, start, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(experiment_recipe(recipe_for, start, "experiment.arms=[sft]").to_yaml())
    done = cli("experiment", str(recipe), "--out", str(tmp_path / "x"), check=True)
    assert "no verdict: the experiment has no grpo arm" in done.stdout and "sft" in done.stdout
    assert "difference" not in (tmp_path / "x" / "report.md").read_text()  # one arm: nothing to compare


def test_a_test_dataset_of_its_own(recipe_for, sft_inputs, tmp_path):
    from r1kit.errors import UserError
    from r1kit.experiment import problem_sets

    _, data_dir = sft_inputs
    recipe = recipe_for("eval.during_training_problems=8", f"experiment.test_dataset={data_dir}")
    chosen_on, test = problem_sets(recipe)
    assert len(chosen_on) == 8 and len(test) > 250  # both splits of the folder
    # the problems the arms are chosen on are those their training validates on, whatever eval.dataset says
    elsewhere = problem_sets(recipe_for("eval.during_training_problems=8", f"eval.dataset={tmp_path}"))[0]
    assert [p.messages for p in elsewhere] == [p.messages for p in chosen_on]
    assert not {p.messages[-1]["content"] for p in chosen_on} - {p.messages[-1]["content"] for p in test}
    with pytest.raises(UserError, match="no train/ or validation/ Parquet shards"):
        problem_sets(recipe_for(f"experiment.test_dataset={tmp_path}"))


def test_a_pipeline_stage_hands_on_the_chosen_arms_model(recipe_for, start, tmp_path):
    from r1kit.errors import UserError
    from r1kit.pipeline import run_pipeline

    recipe = experiment_recipe(
        recipe_for, start, "experiment.budget=steps", "experiment.amount=1", "experiment.arms=[sft, sft-more]",
        "experiment.next_model=sft-more", "pipeline.stages=[experiment]",
    )  # fmt: skip
    (record,) = run_pipeline(recipe, tmp_path / "run")
    report = json.loads((tmp_path / "run" / "01-experiment" / "report.json").read_text())
    assert record.current.model == report["runs"][1]["model_dir"] != str(start)
    assert record.summary["verdict"] == report["verdict"]
    # unset, the GRPO arm's model goes on, or with no GRPO arm the start; an arm that is not run is refused
    unset = experiment_recipe(recipe_for, start, "experiment.arms=[sft]", "pipeline.stages=[experiment]")
    assert run_pipeline(unset, tmp_path / "other")[0].current.model == str(start)
    with pytest.raises(UserError, match="next_model 'grpo' is not one of the arms"):
        experiment_recipe(recipe_for, start, "experiment.arms=[sft, sft-more]", "experiment.next_model=grpo")
