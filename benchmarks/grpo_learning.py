"""The GRPO learning proof: cold-start SFT, then GRPO, on 2-4-digit addition, with held-out accuracy before and
after RL, on a CPU.

The recipe is the demo's (`r1kit.demo.demo_recipe`), run longer:
- data: 4,000 `addition` problems, each with its worked `<think>` solution (one column per line, naming the
  numbers still to add); 500 held-out problems, disjoint from training;
- model: a new `mini-qwen2` (~3.3M parameters) with a 512-token tokenizer (digits are single tokens);
- cold-start SFT: packed rows of 512 tokens, 2 per step, constant learning rate 1e-3, bf16 autocast where the
  CPU has it, stopped once greedy accuracy on 64 validation problems reaches `--sft-target`
  (`train.stop_at_metric`): enough for most GRPO groups to hold both right and wrong answers;
- GRPO: 8 prompts x 8 completions, temperature 1.0, no KL (beta 0), the DAPO loss, the correctness reward only,
  a constant learning rate of 5e-5 (the demo's 1.5e-4 suits its 20 steps from its own cold start; from weaker
  ones it stalled or collapsed over longer runs: docs/grpo-learning.md).

Printed: greedy exact-answer accuracy on the 500 held-out problems after SFT and every `--eval-every` GRPO steps,
the gain, and the wall time a run stopping there would have taken (data, SFT, its evaluation, GRPO so far and one
evaluation; the evaluations in between are not counted). GRPO runs in pieces of `--eval-every` steps, each
resuming the last one's checkpoint (optimizer, scheduler and random state), so the curve is that of one run.
Everything runs in this process; the run folder is kept with `--keep DIR`.

    python benchmarks/grpo_learning.py [--seed 0] [--grpo-steps 200] [--eval-every 50] [--keep runs/grpo-proof]
        [--sft-target 0.25 --grpo-learning-rate 1.5e-4 --steps-reward 1]  # the fifth round's settings
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def held_out_problems(path: Path):
    from r1kit.eval.suites import Problem

    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [
        Problem(f"held-out-{i}", [{"role": "user", "content": r["question"]}], r["answer"])
        for i, r in enumerate(rows)
    ]


def greedy_accuracy(model_dir: Path, problems, max_new_tokens: int) -> float:
    from r1kit.config import EvalConfig
    from r1kit.eval.backends import LocalBackend
    from r1kit.eval.runner import run_generation_suite

    backend = LocalBackend(model_dir, max_batch_size=64)
    try:
        cfg = EvalConfig(temperature=0.0, max_new_tokens=max_new_tokens)
        return run_generation_suite("held-out", problems, backend, cfg, seed=0)["accuracy"]
    finally:
        backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sft-target", type=float, default=0.3, help="validation accuracy that ends SFT")
    parser.add_argument("--grpo-steps", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=50, help="GRPO steps between held-out evaluations")
    parser.add_argument("--grpo-learning-rate", type=float, default=5e-5)
    parser.add_argument(
        "--steps-reward", type=float, default=0.0, help="weight of the `steps` reward beside accuracy (1.0)"
    )
    parser.add_argument("--keep", type=Path, help="keep the run folder here")
    args = parser.parse_args()
    if args.eval_every < 1 or args.grpo_steps < 1 or args.grpo_steps % args.eval_every:
        parser.error("--grpo-steps must be a positive multiple of --eval-every")

    from r1kit.data.clean import clean
    from r1kit.data.synth import synthesize
    from r1kit.demo import GRPO_STAGE, NUM_PROBLEMS, demo_recipe
    from r1kit.models.tokenizer import train_from_config
    from r1kit.pipeline import Current, stage_recipe
    from r1kit.train.grpo import train_grpo
    from r1kit.train.sft import train_sft

    work = args.keep or Path(tempfile.mkdtemp(prefix="grpo-proof-"))
    work.mkdir(parents=True, exist_ok=True)
    # a checkpoint every piece (the recipe wants save_steps to be a multiple of eval_steps; GRPO does not validate)
    grpo_set = [*GRPO_STAGE, f"train.save_steps={args.eval_every}", f"train.eval_steps={args.eval_every}"]
    recipe = demo_recipe(
        work,
        [
            f"seed={args.seed}",
            f"train.stop_at_metric={args.sft_target}",
            "train.max_steps=2000",
            f"grpo.learning_rate={args.grpo_learning_rate}",
            f"grpo.rewards={{accuracy: 1.0, steps: {args.steps_reward}}}"
            if args.steps_reward
            else "grpo.rewards={accuracy: 1.0}",
            f"pipeline.stages=[sft, {{stage: grpo, set: [{', '.join(grpo_set)}]}}]",
        ],
    )
    max_tokens = recipe.eval.max_new_tokens
    start = time.perf_counter()
    train_file = synthesize("addition", NUM_PROBLEMS, recipe.data.inputs[0], seed=args.seed)
    held = synthesize("addition", 700, work / "held.jsonl", seed=10_000 + args.seed)
    seen = {json.loads(line)["question"] for line in train_file.read_text().splitlines()}
    rows = [line for line in held.read_text().splitlines() if json.loads(line)["question"] not in seen][:500]
    held.write_text("\n".join(rows) + "\n")
    problems = held_out_problems(held)
    clean(recipe.data.inputs, recipe.train.dataset, recipe.data, seed=args.seed)
    train_from_config(recipe.tokenizer, recipe.model.tokenizer)
    prepared = time.perf_counter()

    sft_stage, grpo_stage = recipe.pipeline.stages
    sft_recipe = stage_recipe(recipe, sft_stage, Current(None, recipe.train.dataset), work / "sft")
    sft_result = train_sft(sft_recipe, work / "sft")
    sft_done = time.perf_counter()
    sft_accuracy = greedy_accuracy(sft_result.final_dir, problems, max_tokens)
    sft_eval_done = time.perf_counter()
    grpo = stage_recipe(
        recipe, grpo_stage, Current(str(sft_result.final_dir), recipe.train.dataset), work / "grpo"
    )
    before_grpo = sft_eval_done - start  # data, tokenizer, SFT and its evaluation
    sft_eval_seconds = sft_eval_done - sft_done
    print(
        f"\nseed {args.seed}: held-out greedy accuracy on {len(problems)} problems; after SFT "
        f"({sft_result.global_step} steps, {sft_done - prepared:.0f} s): {100 * sft_accuracy:.1f}%",
        flush=True,
    )
    grpo_seconds = 0.0
    for steps in range(args.eval_every, args.grpo_steps + 1, args.eval_every):
        grpo.train.max_steps = steps
        piece = time.perf_counter()
        result = train_grpo(grpo, work / "grpo", resume="auto")
        grpo_seconds += time.perf_counter() - piece
        accuracy = greedy_accuracy(result.final_dir, problems, max_tokens)
        print(
            f"  after {result.global_step} GRPO steps ({grpo_seconds:.0f} s): {100 * accuracy:.1f}% "
            f"({100 * (accuracy - sft_accuracy):+.1f} points); a run stopping here: "
            f"{before_grpo + grpo_seconds + sft_eval_seconds:.0f} s in all",
            flush=True,
        )
    print(f"  data and tokenizer {prepared - start:.0f} s; run folder {work}")


if __name__ == "__main__":
    main()
