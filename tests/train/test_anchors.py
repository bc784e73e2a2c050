"""Regression anchors: tiny SFT and GRPO runs with fixed seeds, in fp32, whose first figures are pinned. A release
of torch, transformers or TRL that changes what training computes (a loss normalisation, a default, the data
order, sampling) fails here loudly instead of passing every behavioural test.

Tolerance: 1e-3 relative for losses (fp32 matrix products differ in their last bits between CPUs with different
vector units; three steps do not amplify that past ~1e-5), exact for what is counted (tokens, rewards of sampled
completions). When a change is intended, rerun with R1KIT_PRINT_ANCHORS=1 to print the new figures and say why
they moved in the commit.
"""

import json
import os

import pytest

ANCHOR_SETTINGS = ("train.precision=fp32", "train.eval_steps=1000", "train.save_steps=1000", "seed=7")
SFT_LOSSES = [5.83983850479126, 5.866213321685791, 5.536263465881348]
GRPO = {  # by rollout engine: TRL's own generation, and r1kit's engine (train/rollouts.py, the default)
    "transformers": {
        "loss": [0.0, 0.06096341460943222],
        "reward": [-1.0, -0.875],
        "completions/mean_length": [16.0, 15.375],
        "entropy": [5.797881126403809, 5.797909259796143],
    },
    "r1kit": {
        "loss": [-1.862645149230957e-08, 3.725290298461914e-09],
        "reward": [0.010037878528237343, 0.00962837878614664],
        "completions/mean_length": [16.0, 16.0],
        "entropy": [5.797823905944824, 5.79786491394043],
    },
}
REWARDS = {  # rewards that vary among the untrained model's samples (the built-in others are all 0)
    "transformers": "{length: 1.0}",  # some of transformers' samples end early
    "r1kit": "{reward_fixtures:digit_share: 1.0}",  # the engine's all run to the limit: score their tokens
}


def train_records(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("split") == "train" and "loss" in r]


def show(name, value):
    if os.environ.get("R1KIT_PRINT_ANCHORS"):
        print(f"\n{name} = {value!r}")


def test_sft_losses_are_pinned(recipe_for, tmp_path):
    from r1kit.train.sft import train_sft

    train_sft(recipe_for(*ANCHOR_SETTINGS, "train.max_steps=3"), tmp_path / "run")
    losses = [r["loss"] for r in train_records(tmp_path / "run")]
    show("SFT_LOSSES", losses)
    assert losses == pytest.approx(SFT_LOSSES, rel=1e-3)


@pytest.mark.parametrize("engine", list(GRPO))
def test_grpo_figures_are_pinned(recipe_for, tmp_path, engine):
    from r1kit.train.grpo import train_grpo

    recipe = recipe_for(
        *ANCHOR_SETTINGS,
        f"grpo.rollout_engine={engine}",
        "train.max_steps=2",
        "train.per_device_batch_size=8",
        "grpo.num_generations=4",
        "grpo.max_completion_length=16",
        f"grpo.rewards={REWARDS[engine]}",
    )
    train_grpo(recipe, tmp_path / "run")
    records = train_records(tmp_path / "run")
    expected = GRPO[engine]
    figures = {name: [r[name] for r in records] for name in expected}
    show(f"GRPO[{engine!r}]", figures)
    assert figures["loss"] == pytest.approx(expected["loss"], rel=1e-3, abs=1e-6)
    assert figures["entropy"] == pytest.approx(expected["entropy"], rel=1e-3)
    assert figures["reward"] == expected["reward"]
    assert figures["completions/mean_length"] == expected["completions/mean_length"]
