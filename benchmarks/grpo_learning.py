"""The GRPO learning proof on a CPU: cold-start SFT, a mixed phase, then GRPO, on 2-4-digit addition, with
greedy held-out accuracy after each phase and every `--eval-every` GRPO steps.

The recipe is the demo's (`r1kit.demo.demo_recipe`), run longer: 4,000 `addition` problems with worked `<think>`
solutions and 500 held-out ones; a new `mini-qwen2`; a cold start stopped at `--sft-target` greedy accuracy on
64 validation problems; `--mixed-steps` of SFT on a set where `--reasoning-share` of the solutions keep their
worked steps; GRPO for `--grpo-steps` with the accuracy and `steps` rewards. Each option's help gives its default.
Printed: accuracies, the gain, and the wall time a run stopping at each evaluation would have taken. What the
rounds measured, and why the gain counted from the mixed checkpoint overstates what RL adds, is in
research/grpo-learning.md.

    python benchmarks/grpo_learning.py [--seed 0] [--grpo-steps 50] [--eval-every 25] [--keep runs/grpo-proof]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import get_args

from r1kit.tasks.addition import AdditionForm


def held_out_problems(path: Path):
    from r1kit.tasks import Problem

    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [
        Problem(
            f"held-out-{i}", [{"role": "user", "content": r["question"]}], r["answer"], task=r["task"], meta=r
        )
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


def held_out_every(every: int, problems, max_new_tokens: int, snapshot: Path, report):
    """A transformers callback: greedy held-out accuracy every `every` steps of one GRPO run, so that one
    learning-rate schedule spans the evaluations. It reports (step, accuracy, seconds of GRPO so far, less its
    own) and restores the random generators, so the evaluations leave the run as it would be without them."""
    import random

    import numpy as np
    import torch
    from transformers import TrainerCallback

    class HeldOutEvery(TrainerCallback):
        def __init__(self):
            self.started = time.perf_counter()  # GRPO's set-up counts, as in a run stopping there
            self.evaluating = 0.0

        def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
            if state.global_step % every:
                return
            began = time.perf_counter()
            generators = random.getstate(), np.random.get_state(), torch.get_rng_state()
            model.save_pretrained(snapshot)
            processing_class.save_pretrained(snapshot)
            accuracy = greedy_accuracy(snapshot, problems, max_new_tokens)
            random.setstate(generators[0])
            np.random.set_state(generators[1])
            torch.set_rng_state(generators[2])
            report(state.global_step, accuracy, began - self.started - self.evaluating)
            self.evaluating += time.perf_counter() - began

    return HeldOutEvery()


def reasoning_profile(
    model_dir: Path, problems, max_new_tokens: int, samples: int = 4
) -> tuple[float, float]:
    """Sampled at T = 1, as GRPO samples: the share of completions that reason (a non-empty think block), and
    the accuracy of those. After a mixed phase, the greedy answer may skip a reasoning path that is right."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from r1kit.eval.during_training import Sampling, answers
    from r1kit.tasks import check

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    outputs = answers(model, tokenizer, problems, max_new_tokens, 256, Sampling(samples, 1.0, 1.0, seed=0))
    reasoned = [(o, p) for p, outs in zip(problems, outputs) for o in outs if o.reasoning]
    right = sum(check(output.answer, problem) for output, problem in reasoned)
    return len(reasoned) / (samples * len(problems)), right / max(1, len(reasoned))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sft-target", type=float, default=0.9, help="validation accuracy that ends SFT")
    parser.add_argument(
        "--sft-schedule",
        choices=["cosine", "constant"],
        default="cosine",
        help="the cold start's learning rate: decaying on a cosine to 0 at --sft-steps, or constant",
    )
    parser.add_argument(
        "--sft-steps", type=int, default=1200, help="most cold-start steps (the cosine's length)"
    )
    parser.add_argument(
        "--weight-decay", type=float, default=0.1, help="AdamW weight decay in every stage (0: none)"
    )
    parser.add_argument("--grpo-steps", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=25, help="GRPO steps between held-out evaluations")
    parser.add_argument("--grpo-learning-rate", type=float, default=1.5e-4)
    parser.add_argument(
        "--grpo-schedule",
        choices=["linear", "constant"],
        default="linear",
        help="GRPO's learning rate: decaying linearly to 0 at --grpo-steps (the default), or constant",
    )
    parser.add_argument(
        "--steps-reward", type=float, default=1.0, help="weight of the `steps` reward beside accuracy (1.0)"
    )
    parser.add_argument(
        "--mixed-steps",
        type=int,
        default=100,
        help="SFT steps on a mixed set of the same problems after the cold start (0: none)",
    )
    parser.add_argument("--mixed-learning-rate", type=float, default=3e-4)
    parser.add_argument(
        "--reasoning-share",
        type=float,
        default=0.25,
        help="share of the mixed set that keeps the worked steps",
    )
    parser.add_argument(
        "--task",
        choices=get_args(AdditionForm),
        default="addition",
        help="the worked form: the demo's (the default), each line lettered, or each line ending with the answer's "
        "digits so far",
    )
    parser.add_argument("--keep", type=Path, help="keep the run folder here")
    args = parser.parse_args()
    if args.eval_every < 1 or args.grpo_steps < 1 or args.grpo_steps % args.eval_every:
        parser.error("--grpo-steps must be a positive multiple of --eval-every")
    if args.sft_steps < 1 or args.weight_decay < 0:
        parser.error("--sft-steps must be at least 1 and --weight-decay at least 0")
    if args.mixed_steps < 0 or not 0.0 <= args.reasoning_share <= 1.0:
        parser.error("--mixed-steps must be at least 0 and --reasoning-share within [0, 1]")

    from r1kit.config import PipelineStage
    from r1kit.data.clean import clean
    from r1kit.data.synth import synthesize
    from r1kit.demo import GRPO_STAGE, NUM_PROBLEMS, demo_recipe
    from r1kit.models.tokenizer import train_from_config
    from r1kit.pipeline import Current, stage_recipe
    from r1kit.train.grpo import train_grpo
    from r1kit.train.sft import train_sft

    work = args.keep or Path(tempfile.mkdtemp(prefix="grpo-proof-"))
    work.mkdir(parents=True, exist_ok=True)
    grpo_set = [*GRPO_STAGE, f"train.max_steps={args.grpo_steps}", f"train.lr_scheduler={args.grpo_schedule}"]
    recipe = demo_recipe(
        work,
        [
            f"seed={args.seed}",
            f"train.stop_at_metric={args.sft_target}",
            f"train.max_steps={args.sft_steps}",
            f"train.lr_scheduler={args.sft_schedule}",
            f"train.weight_decay={args.weight_decay}",
            f"grpo.learning_rate={args.grpo_learning_rate}",
            f"grpo.rewards={{accuracy: 1.0, steps: {args.steps_reward}}}"
            if args.steps_reward
            else "grpo.rewards={accuracy: 1.0}",
            f"pipeline.stages=[sft, {{stage: grpo, set: [{', '.join(grpo_set)}]}}]",
        ],
    )
    max_tokens = recipe.eval.max_new_tokens
    start = time.perf_counter()
    train_file = synthesize(args.task, NUM_PROBLEMS, recipe.data.inputs[0], seed=args.seed)
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
    trained = time.perf_counter()
    cold_start_seconds = trained - start  # data, tokenizer and SFT
    cold_start = sft_result.final()
    sft_accuracy = greedy_accuracy(cold_start, problems, max_tokens)
    eval_seconds = time.perf_counter() - trained
    print(
        f"\nseed {args.seed}: held-out greedy accuracy on {len(problems)} problems; after SFT "
        f"({sft_result.global_step} steps, {trained - prepared:.0f} s): {100 * sft_accuracy:.1f}%",
        flush=True,
    )
    start_accuracy = sft_accuracy
    if args.mixed_steps:
        # the same problems, most of them answered after an empty think block: the model learns to skip
        # reasoning, and GRPO has to teach it when reasoning pays (as in R1's mixed cold start)
        started = time.perf_counter()
        mixed_file = synthesize(
            args.task,
            NUM_PROBLEMS,
            work / "mixed.jsonl",
            seed=args.seed,
            reasoning_share=args.reasoning_share,
        )
        clean([mixed_file], work / "mixed-data", recipe.data, seed=args.seed)
        n = args.mixed_steps
        mixed_stage = PipelineStage(
            stage="sft",
            set=[
                f"train.learning_rate={args.mixed_learning_rate}",
                f"train.max_steps={n}",
                "train.warmup_ratio=0",
                "train.stop_at_metric=null",
                f"train.save_steps={n}",
                f"train.eval_steps={n}",
                "train.metric_for_best_model=eval_loss",
                "eval.during_training=false",
            ],
        )
        mixed_recipe = stage_recipe(
            recipe, mixed_stage, Current(str(cold_start), str(work / "mixed-data")), work / "mixed"
        )
        cold_start = train_sft(mixed_recipe, work / "mixed").final()
        cold_start_seconds += time.perf_counter() - started  # not the all-worked checkpoint's evaluation
        start_accuracy = greedy_accuracy(cold_start, problems, max_tokens)
        share, accuracy = reasoning_profile(cold_start, problems[:200], max_tokens)
        print(
            f"  after {n} steps on the mixed set ({args.reasoning_share:.0%} worked): {100 * start_accuracy:.1f}%;"
            f" sampled at T = 1, {100 * share:.0f}% of the completions reason, {100 * accuracy:.1f}% of those "
            "right",
            flush=True,
        )
    before_grpo = cold_start_seconds + eval_seconds  # data, tokenizer, cold start and one evaluation
    grpo = stage_recipe(recipe, grpo_stage, Current(str(cold_start), recipe.train.dataset), work / "grpo")

    def report(step: int, accuracy: float, grpo_seconds: float) -> None:
        print(
            f"  after {step} GRPO steps ({grpo_seconds:.0f} s): {100 * accuracy:.1f}% "
            f"({100 * (accuracy - start_accuracy):+.1f} points); a run stopping here: "
            f"{before_grpo + grpo_seconds + eval_seconds:.0f} s in all",
            flush=True,
        )

    evaluate = held_out_every(args.eval_every, problems, max_tokens, work / "grpo-snapshot", report)
    train_grpo(grpo, work / "grpo", callbacks=[evaluate])
    print(f"  data and tokenizer {prepared - start:.0f} s; run folder {work}")


if __name__ == "__main__":
    from r1kit.errors import UserError

    try:
        main()
    except UserError as error:  # a bad recipe value, or a training stage stopped by a signal
        sys.exit(f"error: {error}")
