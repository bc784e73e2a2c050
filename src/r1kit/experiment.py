"""`r1kit experiment`: what GRPO adds over the best SFT the user could have had, against controls.

Every arm starts from the same SFT checkpoint (`model.path`, or the pipeline's current model) and spends the
same budget (`experiment.budget`: seconds of training steps by default, validations not counted; or optimizer
steps; or training rows), then answers the same test problems with the same decoding:

- `sft`: the starting checkpoint, unchanged;
- `sft-more`: SFT continued on the recipe's supervised data (`train.dataset`);
- `grpo`: GRPO with the recipe's rewards;
- `grpo-random`: GRPO with the `random` reward (as many 1s per batch as accuracy would pay, on random
  completions): what RL moves without a real signal;
- `grpo-format`: GRPO with the format reward alone.

Each trained arm validates during training on the first `eval.during_training_problems` problems of the
validation split and keeps its best validated checkpoint; the test problems are the rest of that split, or
`experiment.test_dataset`, and no arm is chosen on them. `--seeds N` trains every arm N times (seeds
`seed`, `seed+1`, ...). Accuracy is reported greedy and as pass@1 over `experiment.samples` completions at
temperature 0.6 / top-p 0.95 (R1's settings), each with a 95% bootstrap interval over problems and seeds; the
verdict line compares GRPO with continued SFT on paired differences, and says what the random-reward control
moved. Outputs: `report.json`, `report.md`, `accuracy_vs_time.png`, and each arm's run in `<arm>/seed-<k>`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from r1kit.config import Recipe, build_recipe
from r1kit.dist import print0, world_size
from r1kit.errors import UserError
from r1kit.eval.metrics import bootstrap_ci

ARMS = ("sft", "sft-more", "grpo", "grpo-random", "grpo-format")
REWARDS = {"grpo-random": {"random": 1.0}, "grpo-format": {"format": 1.0}}
"""The controls' rewards; `grpo` keeps the recipe's."""


@dataclass
class ArmRun:
    """One arm trained with one seed, and its answers to the test problems."""

    arm: str
    seed: int
    model_dir: str
    train_seconds: float
    steps: int
    greedy: list[bool]
    """Per test problem: the greedy answer is right."""
    sampled: list[list[bool]]
    """Per test problem: each sampled answer is right."""
    decoding: dict = field(default_factory=dict)
    """The decoding settings the answers were drawn with."""
    curve: list[list[float]] = field(default_factory=list)
    """[seconds of training, validation accuracy] at each validation."""


def arm_recipe(recipe: Recipe, arm: str, seed: int, arm_dir: Path) -> Recipe:
    """The recipe an arm trains with: the experiment's start, seed and budget, validation that keeps the best
    checkpoint, the arm's overrides (`experiment.sft_set` or `grpo_set`) and, for a control, its reward."""
    x, start = recipe.experiment, recipe.model.path
    chained = [
        f"output_dir={arm_dir}",
        f"model.path={start}",
        "model.preset=null",
        "model.tokenizer=null",
        f"seed={seed}",
        "eval.during_training=true",
        "train.metric_for_best_model=eval_accuracy",
        "train.final_model=best",
        "train.keep_best=1",
        "train.stop_at_metric=null",
        "train.early_stopping_patience=null",
        "train.curriculum=[]",
    ]
    chained += x.sft_set if arm == "sft-more" else x.grpo_set
    if arm in REWARDS:
        chained.append(f"grpo.rewards={json.dumps(REWARDS[arm])}")
    raw = recipe.model_dump(mode="json")
    raw["pipeline"] = {"stages": []}
    resolved = build_recipe(raw, f"experiment arm {arm}", chained)
    t = resolved.train
    budget = [f"train.save_steps={t.eval_steps}"]  # any validated step can be the one kept
    if x.budget == "seconds":  # as many passes over the data as the time allows: the clock stops the arm
        budget += [f"train.max_train_seconds={x.amount}", "train.max_steps=null", f"train.num_epochs={1e9:g}"]
    else:
        rows_per_step = t.per_device_batch_size * t.gradient_accumulation_steps * world_size()
        steps = int(x.amount) if x.budget == "steps" else math.ceil(x.amount / rows_per_step)
        budget += [f"train.max_steps={steps}", "train.max_train_seconds=null"]
    return build_recipe(resolved.model_dump(mode="json"), f"experiment arm {arm}", budget)


def problem_sets(recipe: Recipe):
    """(validation problems the arms are chosen on, test problems they are scored on)."""
    from r1kit.eval.suites import heldout

    data_dir = recipe.train.dataset  # what the arms validate on during training (not eval.dataset)
    if data_dir is None:
        raise UserError(
            "experiment needs train.dataset: the `data clean` folder the arms train and validate on"
        )
    validation = heldout(data_dir)
    chosen_on = validation[: recipe.eval.during_training_problems]
    if recipe.experiment.test_dataset is not None:
        folder = Path(recipe.experiment.test_dataset)
        splits = [s for s in ("train", "validation") if list((folder / s).glob("*.parquet"))]
        if not splits:
            raise UserError(f"experiment.test_dataset {folder}: no train/ or validation/ Parquet shards")
        test = [p for split in splits for p in heldout(folder, split=split)]
    else:
        test = validation[recipe.eval.during_training_problems :]
    if not test:
        raise UserError(
            f"{data_dir}: no test problems are left once the first {len(chosen_on)} validation problems are "
            "kept for choosing checkpoints; set experiment.test_dataset or a larger data.validation_fraction"
        )
    return chosen_on, test


def decoding(recipe: Recipe) -> dict:
    """The decoding every arm is scored with (the same for all, recorded in the report)."""
    x = recipe.experiment
    return {
        "greedy": {"temperature": 0.0, "top_p": 1.0},
        "sampled": {"temperature": x.temperature, "top_p": x.top_p, "samples": x.samples},
        "max_new_tokens": recipe.eval.max_new_tokens,
        "seed": recipe.seed,
    }


def score(model_dir: str | Path, problems, recipe: Recipe) -> tuple[list[bool], list[list[bool]], dict]:
    """Greedy and sampled correctness of a model on `problems`, decoded per `decoding(recipe)`, and the
    settings used."""
    from r1kit.engine.chats import Settings, sample_seed
    from r1kit.eval.backends import LocalBackend
    from r1kit.tasks import GoldProblems, check

    d, n = decoding(recipe), recipe.experiment.samples
    backend = LocalBackend(
        model_dir, max_batch_size=recipe.eval.concurrency, trust_remote_code=recipe.model.trust_remote_code
    )
    try:
        greedy_settings = Settings(0.0, 1.0, d["max_new_tokens"], d["seed"])
        greedy = backend.complete(
            [p.messages for p in problems],
            greedy_settings,
            [sample_seed(d["seed"], i, 0) for i in range(len(problems))],
        )
        sampled_settings = Settings(
            d["sampled"]["temperature"], d["sampled"]["top_p"], d["max_new_tokens"], d["seed"]
        )
        chats = [p.messages for p in problems for _ in range(n)]
        seeds = [sample_seed(d["seed"], i, j) for i in range(len(problems)) for j in range(n)]
        sampled = backend.complete(chats, sampled_settings, seeds)
    finally:
        backend.close()
    golds = GoldProblems()
    right_greedy = [check(s.answer, p, golds) for s, p in zip(greedy, problems)]
    right_sampled = [
        [check(s.answer, p, golds) for s in sampled[i * n : (i + 1) * n]] for i, p in enumerate(problems)
    ]
    used = {"greedy": asdict(greedy_settings), "sampled": asdict(sampled_settings), "samples": n}
    return right_greedy, right_sampled, used


def _curve(run_dir: Path) -> list[list[float]]:
    clock = json.loads((run_dir / "train_clock.json").read_text())
    at_step = {int(k): v for k, v in clock["at_step"].items()}
    points = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event.get("split") == "eval" and "accuracy" in event and event["step"] in at_step:
            points.append([at_step[event["step"]], event["accuracy"]])
    return points


def run_arm(recipe: Recipe, arm: str, seed: int, arm_dir: Path, test) -> ArmRun:
    if arm == "sft":
        start = recipe.model.path
        greedy, sampled, used = score(start, test, recipe)
        return ArmRun(arm, seed, str(start), 0.0, 0, greedy, sampled, used)
    resolved = arm_recipe(recipe, arm, seed, arm_dir)
    if arm == "sft-more":
        from r1kit.train.sft import train_sft

        result = train_sft(resolved, arm_dir)
    else:
        from r1kit.train.grpo import train_grpo

        result = train_grpo(resolved, arm_dir)
    model_dir = result.final("run the experiment again")
    clock = json.loads((arm_dir / "train_clock.json").read_text())
    greedy, sampled, used = score(model_dir, test, recipe)
    return ArmRun(
        arm,
        seed,
        str(model_dir),
        clock["train_seconds"],
        clock["steps"],
        greedy,
        sampled,
        used,
        _curve(arm_dir),
    )


def correctness(runs: list[ArmRun], arm: str, kind: str = "greedy"):
    """An arm's answers as a (seeds, problems) array, seeds in order: 1.0 where the greedy answer is right, or
    the share of right sampled answers (`kind="sampled"`). Paired differences subtract two of these."""
    import numpy as np

    rows = sorted((r for r in runs if r.arm == arm), key=lambda r: r.seed)
    if kind == "greedy":
        return np.array([r.greedy for r in rows], dtype=float)
    return np.array([[sum(s) / len(s) for s in r.sampled] for r in rows], dtype=float)


def summarize(runs: list[ArmRun], arms: list[str]) -> dict:
    """Per arm: greedy and sampled accuracy with 95% intervals over problems and seeds; the paired differences
    of each arm from `sft` and of `grpo` from `sft-more`; and the verdict."""

    def matrix(arm: str, kind: str):
        return correctness(runs, arm, kind)

    figures: dict = {"arms": {}, "differences": {}}
    for arm in arms:
        mine = [r for r in runs if r.arm == arm]
        figures["arms"][arm] = {
            "greedy": bootstrap_ci(matrix(arm, "greedy")).to_dict(),
            "sampled": bootstrap_ci(matrix(arm, "sampled")).to_dict(),
            "train_seconds": [r.train_seconds for r in mine],
            "steps": [r.steps for r in mine],
        }
    pairs = [(arm, "sft") for arm in arms if arm != "sft" and "sft" in arms]
    if "grpo" in arms and "sft-more" in arms:
        pairs.append(("grpo", "sft-more"))
    for a, b in pairs:
        figures["differences"][f"{a} - {b}"] = {
            kind: bootstrap_ci(matrix(a, kind) - matrix(b, kind)).to_dict() for kind in ("greedy", "sampled")
        }
    figures["verdict"] = verdict(figures["differences"], len({r.seed for r in runs}))
    return figures


def _points(interval: dict) -> str:
    return f"{100 * interval['mean']:+.1f} points (95% CI {100 * interval['low']:+.1f} to {100 * interval['high']:+.1f})"


def verdict(differences: dict, seeds: int) -> str:
    """One line, computed from the greedy paired differences: does GRPO beat continued SFT (or, without that
    arm, the SFT start), and what did the random-reward control move?"""
    baseline = "sft-more" if "grpo - sft-more" in differences else "sft"
    key = f"grpo - {baseline}"
    if key not in differences:
        return "no verdict: the experiment has no grpo arm"
    name = "continued SFT" if baseline == "sft-more" else "the SFT start"
    d = differences[key]["greedy"]
    runs = f"{seeds} seed{'s' if seeds != 1 else ''}"
    if d["low"] > 0:
        line = f"GRPO beats {name} by {_points(d)} on {runs}"
    elif d["high"] < 0:
        line = f"GRPO does worse than {name}: {_points(d)} on {runs}"
    else:
        line = f"GRPO does not beat {name}: {_points(d)}, an interval that holds 0, on {runs}"
    if "grpo-random - sft" in differences:
        line += f"; the random-reward control moved {_points(differences['grpo-random - sft']['greedy'])}"
    return line + "."


def run_experiment(recipe: Recipe, out_dir: str | Path | None = None) -> dict:
    """Train and score every arm for every seed, write the report; returns report.json's contents."""
    x = recipe.experiment
    if recipe.model.path is None:
        raise UserError(
            "experiment needs model.path: the SFT checkpoint every arm starts from (in a pipeline, put an sft "
            "stage before it)"
        )
    out_dir = Path(out_dir) if out_dir else recipe.run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    _, test = problem_sets(recipe)
    runs = []
    for k in range(x.seeds):
        seed = recipe.seed + k
        for arm in x.arms:
            if arm == "sft" and k > 0:  # the start does not depend on the seed
                runs.append(ArmRun(**{**asdict(runs[[r.arm for r in runs].index("sft")]), "seed": seed}))
                continue
            print0(f"[bold]experiment: {arm}, seed {seed}[/bold]")
            runs.append(run_arm(recipe, arm, seed, out_dir / arm / f"seed-{seed}", test))
    report = {
        "start": recipe.model.path,
        "budget": {"kind": x.budget, "amount": x.amount},
        "seeds": [recipe.seed + k for k in range(x.seeds)],
        "test_problems": len(test),
        "decoding": decoding(recipe),
        **summarize(runs, list(x.arms)),
        "runs": [asdict(r) for r in runs],
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(runs, report, out_dir / "accuracy_vs_time.png")
    (out_dir / "report.md").write_text(_markdown(report), encoding="utf-8")
    return report


def _plot(runs: list[ArmRun], report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for arm in report["arms"]:
        for i, run in enumerate(r for r in runs if r.arm == arm):
            if run.curve:
                seconds, accuracy = zip(*run.curve)
                ax.plot(
                    seconds,
                    accuracy,
                    marker="o",
                    label=arm if i == 0 else None,
                    color=f"C{list(report['arms']).index(arm)}",
                )
    if "sft" in report["arms"]:
        ax.axhline(report["arms"]["sft"]["greedy"]["mean"], linestyle="--", color="gray", label="sft (test)")
    ax.set_xlabel("seconds of training")
    ax.set_ylabel("validation accuracy (greedy)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _markdown(report: dict) -> str:
    def cell(interval: dict) -> str:
        return f"{100 * interval['mean']:.1f}% ({100 * interval['low']:.1f}–{100 * interval['high']:.1f})"

    budget = report["budget"]
    lines = [
        "# Experiment: what GRPO adds over SFT",
        "",
        f"**{report['verdict']}**",
        "",
        f"Every arm starts from `{report['start']}` and spends the same budget ({budget['amount']:g} "
        f"{budget['kind']}); seeds {', '.join(map(str, report['seeds']))}; {report['test_problems']} test problems "
        "no arm was chosen on. Accuracy with its 95% bootstrap interval over problems and seeds.",
        "",
        f"| arm | greedy | pass@1 (T={report['decoding']['sampled']['temperature']}, "
        f"{report['decoding']['sampled']['samples']} samples) | seconds of training | steps |",
        "|---|---|---|---|---|",
    ]
    for arm, figures in report["arms"].items():
        seconds = ", ".join(f"{s:.0f}" for s in figures["train_seconds"])
        steps = ", ".join(str(s) for s in figures["steps"])
        lines.append(
            f"| {arm} | {cell(figures['greedy'])} | {cell(figures['sampled'])} | {seconds} | {steps} |"
        )
    if report["differences"]:
        lines += ["", "| difference (paired) | greedy | pass@1 |", "|---|---|---|"]
        for name, d in report["differences"].items():
            lines.append(f"| {name} | {_points(d['greedy'])} | {_points(d['sampled'])} |")
    lines += ["", "![validation accuracy against seconds of training](accuracy_vs_time.png)", ""]
    return "\n".join(lines)
