"""The GRPO learning proof: does GRPO beat continued SFT, against a random-reward control, in R1's setting?

R1's setting at toy scale (recipe: benchmarks/grpo_vs_sft.yaml): a few worked demonstrations (`--worked`
2-3-digit additions with their `<think>` steps) for the cold start; a much larger pool (`--pool` 2-3-digit
additions with only their final answer, plus the worked ones); and test problems as hard as the hardest in the
pool (`--test` additions of two 3-digit numbers). The cold start trains a new `mini-qwen2` on the demonstrations
alone, until its accuracy on the pool's validation problems stops rising (its plateau: the best checkpoint of
at most `--cold-steps`, once 4 validations in a row have not beaten it); then `r1kit experiment` gives each
arm the same seconds of training from it:

- `sft`: the cold start, unchanged;
- `sft-more`: SFT continued on everything supervised (the demonstrations and the answer-only problems);
- `sft-more-worked`: SFT continued on the worked demonstrations alone (the other SFT a user could have run:
  answer-only targets teach a model to answer without working), which shows whether the cold start had
  plateaued;
- `grpo`: GRPO on the pool, rewarded for the right final answer;
- `grpo-random`: GRPO rewarded by a coin flip of the same mean (control).

Every arm keeps its best checkpoint on 64 validation problems of the pool, and is scored on the test problems,
greedy and pass@1 (T = 0.6, top-p 0.95), with 95% bootstrap intervals; GRPO is compared with the better of the
two SFT arms. One command per seed; the run folder keeps every stage (a re-run skips the finished ones), the
experiments' own reports are in `06-experiment/` and `sft-more-worked/`, and the table is printed:

    python benchmarks/grpo_vs_sft.py --seed 0 [--amount 150] [--out runs/grpo-vs-sft]

`--seeds 0 1 2` runs several seeds one after another and prints the table over all of them.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

RECIPE = Path(__file__).with_name("grpo_vs_sft.yaml")


def write_problems(
    path: Path, n: int, digits: tuple[int, int], rng: random.Random, *, worked: bool, seen: set[str]
) -> list[dict]:
    """`n` additions whose numbers have `digits` digits and whose questions are not in `seen` (added to it),
    with their worked steps or with the final answer only, written as JSONL."""
    from r1kit.data.synth import answer_only
    from r1kit.tasks import DIFFICULTIES
    from r1kit.tasks.addition import generate

    records: list[dict] = []
    while len(records) < n:
        record = generate(rng, DIFFICULTIES["medium"], digits=digits)
        if record["question"] in seen:
            continue
        seen.add(record["question"])
        records.append(record if worked else answer_only(record))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return records


def stages(inputs: dict[str, Path], run_dir: Path) -> list[dict]:
    """The pipeline: clean the test set, the demonstrations and the pool; train the tokenizer; the cold start on
    the demonstrations (validated on the pool's validation problems: `cold_start_data`); the experiment."""
    test, worked, pool = (str(inputs[k]) for k in ("test", "worked", "pool"))
    return [
        {"stage": "data", "set": [f"data.inputs=[{test}]", "data.validation_fraction=0"]},
        {"stage": "data", "set": [f"data.inputs=[{worked}]"]},
        {"stage": "data", "set": [f"data.inputs=[{worked}, {pool}]"]},
        {"stage": "tokenizer", "set": [f"tokenizer.inputs=[{worked}, {pool}]"]},
        {"stage": "sft", "set": [f"train.dataset={run_dir / 'cold-start-data'}"]},
        {"stage": "experiment", "set": [f"experiment.test_dataset={run_dir / '01-data' / 'data'}"]},
    ]


def cold_start_data(run_dir: Path) -> Path:
    """A data folder of the demonstrations' train split and the pool's validation split: the cold start, and
    the SFT arm that continues it on the demonstrations, train on the one and are validated (and stopped, and
    their checkpoint chosen) on the same problems as every arm."""
    folder = run_dir / "cold-start-data"
    # copied on every run, over what is there: a run stopped mid-copy is completed by the next
    shutil.copytree(run_dir / "02-data" / "data" / "train", folder / "train", dirs_exist_ok=True)
    shutil.copytree(run_dir / "03-data" / "data" / "validation", folder / "validation", dirs_exist_ok=True)
    return folder


def run_seed(seed: int, args: argparse.Namespace) -> list[dict]:
    """The pipeline for one seed, then the worked-only SFT arm; returns every arm's run (report.json's)."""
    import yaml

    from r1kit.config import PipelineConfig, build_recipe, load_recipe
    from r1kit.experiment import run_experiment
    from r1kit.pipeline import run_pipeline

    run_dir = (args.out / f"seed-{seed}").resolve()
    rng, seen = random.Random(seed), set()
    inputs = {name: run_dir / "inputs" / f"{name}.jsonl" for name in ("worked", "pool", "test")}
    write_problems(inputs["worked"], args.worked, (2, 3), rng, worked=True, seen=seen)
    write_problems(inputs["pool"], args.pool, (2, 3), rng, worked=False, seen=seen)
    write_problems(inputs["test"], args.test, (3, 3), rng, worked=False, seen=seen)
    raw = yaml.safe_load(RECIPE.read_text())
    raw["pipeline"] = {"stages": stages(inputs, run_dir)}
    overrides = [
        f"seed={seed}",
        f"train.max_steps={args.cold_steps}",
        f"experiment.amount={args.amount}",
        *args.set,
    ]
    recipe = build_recipe(raw, str(RECIPE), overrides)
    data_only = recipe.model_copy(update={"pipeline": PipelineConfig(stages=recipe.pipeline.stages[:3])})
    run_pipeline(data_only, run_dir)
    worked_only = cold_start_data(run_dir)
    compared = run_pipeline(recipe, run_dir)[-1]
    report = json.loads((Path(compared.dir) / "report.json").read_text())

    # SFT continued on the demonstrations alone: where the cold start left off, on the same data
    out = run_dir / "sft-more-worked"
    if not (out / "report.json").is_file():
        sft_set = [*raw["experiment"]["sft_set"], f"train.dataset={worked_only}"]
        arm = load_recipe(
            Path(compared.dir) / "config.yaml",
            ["experiment.arms=[sft-more]", f"experiment.sft_set={json.dumps(sft_set)}"],
        )
        run_experiment(arm, out)
    worked = json.loads((out / "report.json").read_text())
    runs = report["runs"] + [{**r, "arm": "sft-more-worked"} for r in worked["runs"]]
    print(table([runs]), flush=True)
    return runs


ARMS = ["sft", "sft-more", "sft-more-worked", "grpo", "grpo-random"]


def table(per_seed: list[list[dict]]) -> str:
    """Each arm's greedy accuracy per seed and over all seeds (95% CI over problems and seeds), its training,
    and the paired differences: GRPO from the better SFT arm, each arm from the start."""
    from r1kit.eval.metrics import bootstrap_ci
    from r1kit.experiment import ArmRun, correctness

    runs = [ArmRun(**r) for seed_runs in per_seed for r in seed_runs]
    seeds = sorted({r.seed for r in runs})

    def matrix(arm: str, kind: str = "greedy"):
        return correctness(runs, arm, kind)

    def ci(values, sign: str = "") -> str:
        i = bootstrap_ci(values)
        return f"{100 * i.mean:{sign}.1f} ({100 * i.low:{sign}.1f} to {100 * i.high:{sign}.1f})"

    arms = [a for a in ARMS if any(r.arm == a for r in runs)]
    lines = [
        "| arm | " + " | ".join(f"seed {s}" for s in seeds) + " | greedy, all seeds (95% CI) | "
        "pass@1 at T=0.6 | seconds | steps |",
        "|---" * (len(seeds) + 5) + "|",
    ]
    for arm in arms:
        mine = sorted((r for r in runs if r.arm == arm), key=lambda r: r.seed)
        per = " | ".join(f"{100 * sum(r.greedy) / len(r.greedy):.1f}%" for r in mine)
        seconds = ", ".join(f"{r.train_seconds:.0f}" for r in mine)
        steps = ", ".join(str(r.steps) for r in mine)
        lines.append(
            f"| {arm} | {per} | {ci(matrix(arm))} | {ci(matrix(arm, 'sampled'))} | {seconds} | {steps} |"
        )
    lines.append("")
    sfts = [a for a in ("sft-more", "sft-more-worked") if a in arms]
    if "grpo" in arms and sfts:
        best = max(sfts, key=lambda a: matrix(a).mean())
        gain = bootstrap_ci(matrix("grpo") - matrix(best))
        word = "beats" if gain.low > 0 else ("does worse than" if gain.high < 0 else "does not beat")
        lines.append(
            f"GRPO {word} the better SFT arm ({best}): {ci(matrix('grpo') - matrix(best), '+')} points, "
            f"greedy, paired over {len(seeds)} seed(s) and the test problems."
        )
    for arm in arms[1:]:
        lines.append(f"{arm} - sft: {ci(matrix(arm) - matrix('sft'), '+')} points.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds, run one after another")
    parser.add_argument("--seed", type=int, dest="seeds", nargs=1, help="one seed (the same as --seeds N)")
    parser.add_argument("--worked", type=int, default=200, help="worked demonstrations (2-3 digits)")
    parser.add_argument("--pool", type=int, default=4000, help="answer-only problems (2-3 digits)")
    parser.add_argument("--test", type=int, default=300, help="test problems (3 digits + 3 digits)")
    parser.add_argument("--cold-steps", type=int, default=2000, help="most SFT steps of the cold start")
    parser.add_argument("--amount", type=float, default=150, help="seconds of training per arm")
    parser.add_argument("--set", action="append", default=[], help="a recipe override, e.g. grpo.beta=0.01")
    parser.add_argument("--out", type=Path, default=Path("runs/grpo-vs-sft"))
    args = parser.parse_args()
    if min(args.worked, args.pool, args.test, args.cold_steps) < 1 or args.amount <= 0:
        parser.error("--worked, --pool, --test, --cold-steps and --amount must be positive")
    per_seed = [run_seed(seed, args) for seed in args.seeds]
    if len(per_seed) > 1:
        print(table(per_seed))


if __name__ == "__main__":
    from r1kit.errors import UserError

    try:
        main()
    except UserError as error:
        sys.exit(f"error: {error}")
