"""Benchmark: GRPO's rollouts through r1kit's batching engine against TRL's default generation.

The demo's GRPO (recipes/demo.yaml: a `mini-qwen2` cold-started by SFT on worked additions, 8 prompts x 8
completions per step, up to 112 completion tokens, temperature 1) with `grpo.rollout_engine: transformers`
(TRL's padded `generate`, the baseline) and `r1kit` (the engine), same model, problems, seed, group size and
completion length. Each run is a fresh `r1kit train grpo` process; the two alternate over `--rounds` rounds,
round r with seed r for both, so that a noisy, shared machine hurts both alike.

Printed side by side, as medians over rounds with their ratio: rollout tokens per second (completion tokens
over the seconds spent generating), GRPO steps per minute (steps over rollout plus training seconds; start-up
not counted), MFU as r1kit's training metrics log it (train/utilisation.py: each token's training and rollout
FLOPs over the matmul peak of the training precision, measured when the run starts), and the mean reward of
the last `--steps`/2 steps with its 95% interval over rounds, with the paired difference: same seeds should
give statistically indistinguishable rewards (the two sample with different random streams, so not the same
completions). Targets (issue 35): >= 2x rollout tokens/s and >= 1.5x steps per minute.

Figures measured with it are in research/benchmark-figures.md.

    python benchmarks/grpo_throughput.py [--rounds 3] [--steps 10] [--out runs/grpo-throughput]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from r1kit.demo import recipe_path

ENGINES = ("transformers", "r1kit")
DEMO = recipe_path()
COLD_START = [  # the demo's synth, data, tokenizer and SFT, shorter and without validation
    "pipeline.stages=[synth, data, tokenizer, sft]",
    "synth.problems=4000",
    "train.max_steps=700",
    "train.eval_delay=0",
    "eval.during_training=false",
    "train.stop_at_metric=null",
    "train.metric_for_best_model=eval_loss",
    "train.save_steps=700",
]
GRPO = [  # the demo's GRPO arm (experiment.grpo_set), logging every step, no validation
    "train.per_device_batch_size=64",
    "train.gradient_accumulation_steps=1",
    "train.lr_scheduler=constant",
    "train.warmup_ratio=0",
    "train.logging_steps=1",
    "train.tensorboard=false",
    "eval.during_training=false",
    "train.metric_for_best_model=eval_loss",
    "train.keep_best=0",
]


def r1kit(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "r1kit", *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"r1kit {' '.join(args[:3])} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")


def cold_start(out: Path) -> tuple[Path, Path]:
    """(the SFT model, the cleaned problems), made once and kept in `out` (a re-run reuses them)."""

    def stages() -> dict[str, Path]:
        return {
            json.loads(p.read_text())["stage"]: p.parent for p in (out / "cold-start").glob("*/stage.json")
        }

    if "sft" not in stages():
        r1kit(
            "pipeline",
            str(DEMO),
            "--out",
            str(out / "cold-start"),
            *[a for s in COLD_START for a in ("--set", s)],
        )
    return stages()["sft"] / "final", stages()["data"] / "data"


def grpo_run(out: Path, model: Path, data: Path, engine: str, seed: int, steps: int) -> dict:
    run = out / f"{engine}-seed{seed}"
    overrides = [
        f"model.path={model}",
        "model.preset=null",
        f"train.dataset={data}",
        f"grpo.rollout_engine={engine}",
        f"seed={seed}",
        f"train.max_steps={steps}",
        f"train.save_steps={steps}",
        f"train.eval_steps={steps}",
        *GRPO,
    ]
    if not (run / "final").is_dir():
        r1kit("train", "grpo", str(DEMO), "--out", str(run), *[a for s in overrides for a in ("--set", s)])
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps_logged = [r for r in logged if r.get("split") == "train" and "reward" in r]
    batch = 64
    rollout = sum(r["rollout_seconds"] for r in steps_logged)
    tokens = sum(r["completions/mean_length"] * batch for r in steps_logged)
    busy = rollout + sum(r["train_seconds"] for r in steps_logged)
    late = steps_logged[len(steps_logged) // 2 :]
    return {
        "rollout_tokens_per_s": tokens / rollout,
        "steps_per_min": len(steps_logged) / busy * 60,
        "rollout_share": rollout / busy,
        "late_reward": statistics.fmean(r["reward"] for r in late),
        "mean_length": statistics.fmean(r["completions/mean_length"] for r in steps_logged),
        "mfu": statistics.median(r["mfu"] for r in steps_logged if "mfu" in r),
    }


def interval(values: list[float]) -> str:
    """mean ± the 95% t-interval's half-width over rounds."""
    if len(values) < 2:
        return f"{values[0]:.3f}"
    t95 = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26}.get(
        len(values), 2.0
    )
    half = t95 * statistics.stdev(values) / len(values) ** 0.5
    return f"{statistics.fmean(values):.3f} ± {half:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("runs/grpo-throughput"))
    args = parser.parse_args()
    model, data = cold_start(args.out)
    results: dict[str, list[dict]] = {engine: [] for engine in ENGINES}
    for seed in range(args.rounds):
        for engine in ENGINES if seed % 2 == 0 else ENGINES[::-1]:
            results[engine].append(grpo_run(args.out, model, data, engine, seed, args.steps))
            print(f"seed {seed} {engine}: {json.dumps(results[engine][-1])}", file=sys.stderr)

    def median(engine: str, key: str) -> float:
        return statistics.median(r[key] for r in results[engine])

    base, ours = ENGINES
    print(f"GRPO, demo settings, {args.steps} steps, {args.rounds} rounds (medians)")
    print(f"{'':28}{'transformers':>14}{'r1kit engine':>14}{'ratio':>8}")
    for key, label in [
        ("rollout_tokens_per_s", "rollout tokens/s"),
        ("steps_per_min", "GRPO steps/min"),
        ("rollout_share", "rollout share of a step"),
        ("mean_length", "mean completion tokens"),
        ("mfu", "MFU (train/utilisation.py)"),
    ]:
        a, b = median(base, key), median(ours, key)
        shown = "14.1%" if key == "mfu" else "14.2f"
        print(f"{label:28}{a:{shown}}{b:{shown}}{b / a:8.2f}x")
    rewards = {engine: [r["late_reward"] for r in results[engine]] for engine in ENGINES}
    print(f"{'reward, last half (mean ± 95%)':32}{interval(rewards[base]):>20}{interval(rewards[ours]):>20}")
    differences = [b - a for a, b in zip(rewards[base], rewards[ours])]
    print(f"{'paired difference (engine - transformers)':44}{interval(differences):>20}")


if __name__ == "__main__":
    main()
