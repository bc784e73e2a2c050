"""The GRPO learning proof: cold-start SFT, then GRPO, on 2-4-digit addition, with held-out accuracy before and
after RL, on a CPU.

Recipe (the R1 recipe at small scale; the reasons are in the RL issue):
- data: `addition` problems with compact column-by-column reasoning; a *mixed* cold-start set, 40% with the
  worked `<think>` block and 60% with an empty one and the answer, so that RL can teach the model to reason
  before answering; 500 held-out problems, disjoint from training;
- model: a new `mini-qwen2` (~3M parameters) with a near character-level tokenizer (digits are single tokens);
- SFT: packed rows, bf16 autocast where the CPU has it, stopped by greedy validation accuracy
  (`eval.during_training`, early stopping on `eval_accuracy`, the best checkpoint kept as final);
- GRPO: 8 prompts x 8 completions, temperature 1.0, no KL (beta 0), the DAPO loss, the correctness reward
  only, a constant learning rate of 1e-5.

Printed: greedy exact-answer accuracy on the 500 held-out problems after SFT and after GRPO, the gain, and the
wall time of each stage. Everything runs in this process; the run folder is kept with `--keep DIR`.

    python benchmarks/grpo_learning.py [--seed 0] [--grpo-steps 300] [--keep runs/grpo-proof]
"""

from __future__ import annotations

import argparse
import json
import sys
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
    parser.add_argument("--train-problems", type=int, default=4000)
    parser.add_argument("--sft-max-steps", type=int, default=1500)
    parser.add_argument("--grpo-steps", type=int, default=300)
    parser.add_argument("--grpo-learning-rate", type=float, default=1e-5)
    parser.add_argument("--sft-learning-rate", type=float, default=2e-3)
    parser.add_argument("--sft-patience", type=int, default=6)
    parser.add_argument("--sft-eval-steps", type=int, default=100)
    parser.add_argument("--sft-only", action="store_true", help="stop after SFT (for tuning it)")
    parser.add_argument("--keep", type=Path, help="keep the run folder here")
    args = parser.parse_args()

    from r1kit.config import DataConfig, load_recipe
    from r1kit.data.clean import clean
    from r1kit.data.synth import synthesize
    from r1kit.models.tokenizer import train_tokenizer
    from r1kit.train.grpo import train_grpo
    from r1kit.train.sft import train_sft

    work = args.keep or Path(tempfile.mkdtemp(prefix="grpo-proof-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    train_file = synthesize(
        "addition", args.train_problems, work / "train.jsonl", seed=args.seed, reasoning_share=0.4
    )
    held = synthesize("addition", 700, work / "held.jsonl", seed=10_000 + args.seed)
    seen = {json.loads(line)["question"] for line in train_file.read_text().splitlines()}
    rows = [line for line in held.read_text().splitlines() if json.loads(line)["question"] not in seen][:500]
    held.write_text("\n".join(rows) + "\n")
    problems = held_out_problems(held)
    train_tokenizer([train_file], work / "tok", vocab_size=512)
    off = {"enabled": False}
    clean(
        [train_file],
        work / "data",
        DataConfig(
            validation_fraction=0.05, semantic=off, near_dedup=off, quality=off, toxicity=off, decontam=off
        ),
        seed=args.seed,
    )
    prepared = time.perf_counter()

    common = [
        f"seed={args.seed}",
        f"model.tokenizer={work / 'tok'}",
        f"train.dataset={work / 'data'}",
        "train.logging_steps=10",
        "train.tensorboard=false",
    ]
    sft = load_recipe(
        None,
        common
        + [
            "name=sft",
            "model.preset=mini-qwen2",
            "train.max_seq_length=512",
            "train.per_device_batch_size=1",
            "train.gradient_accumulation_steps=1",
            f"train.learning_rate={args.sft_learning_rate}",
            "train.lr_scheduler=cosine",
            "train.warmup_ratio=0.02",
            f"train.max_steps={args.sft_max_steps}",
            "train.num_epochs=20",
            f"train.eval_steps={args.sft_eval_steps}",
            f"train.save_steps={args.sft_eval_steps}",
            "train.metric_for_best_model=eval_accuracy",
            f"train.early_stopping_patience={args.sft_patience}",
            "train.keep_best=1",
            "train.final_model=best",
            "eval.during_training=true",
            "eval.during_training_problems=100",
            "eval.max_new_tokens=48",
        ],
    )
    sft_result = train_sft(sft, work / "sft")
    sft_done = time.perf_counter()
    sft_accuracy = greedy_accuracy(sft_result.final_dir, problems, 48)
    sft_eval_done = time.perf_counter()
    if args.sft_only:
        print(
            f"after SFT ({sft_result.global_step} steps, {sft_done - prepared:.0f} s): {100 * sft_accuracy:.1f}%"
        )
        return

    grpo = load_recipe(
        None,
        common
        + [
            "name=grpo",
            f"model.path={sft_result.final_dir}",
            "train.per_device_batch_size=64",
            "train.gradient_accumulation_steps=1",
            f"train.max_steps={args.grpo_steps}",
            "train.lr_scheduler=constant",
            "train.warmup_ratio=0",
            f"train.save_steps={args.grpo_steps}",
            f"train.eval_steps={args.grpo_steps}",
            "grpo.num_generations=8",
            "grpo.temperature=1.0",
            "grpo.top_p=1.0",
            "grpo.beta=0",
            "grpo.loss_type=dapo",
            f"grpo.learning_rate={args.grpo_learning_rate}",
            "grpo.max_completion_length=48",
            "grpo.rewards={accuracy: 1.0}",
        ],
    )
    grpo_result = train_grpo(grpo, work / "grpo")
    grpo_done = time.perf_counter()
    grpo_accuracy = greedy_accuracy(grpo_result.final_dir, problems, 48)
    end = time.perf_counter()

    print(f"\nseed {args.seed}: held-out greedy accuracy on {len(problems)} problems")
    print(
        f"  after SFT  ({sft_result.global_step} steps, {sft_done - prepared:.0f} s): {100 * sft_accuracy:.1f}%"
    )
    print(
        f"  after GRPO ({grpo_result.global_step} steps, {grpo_done - sft_eval_done:.0f} s): "
        f"{100 * grpo_accuracy:.1f}%  ({100 * (grpo_accuracy - sft_accuracy):+.1f} points)"
    )
    print(
        f"  wall time {end - start:.0f} s (data {prepared - start:.0f} s, evaluations "
        f"{sft_eval_done - sft_done + end - grpo_done:.0f} s); run folder {work}"
    )
    json.dump(
        {
            "seed": args.seed,
            "sft_accuracy": sft_accuracy,
            "grpo_accuracy": grpo_accuracy,
            "sft_steps": sft_result.global_step,
            "grpo_steps": grpo_result.global_step,
            "seconds": end - start,
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
