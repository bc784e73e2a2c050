"""Benchmark: `r1kit plan`'s predicted peak memory against the measured peak RSS of real CPU training runs.

For each case (preset, method, row length, micro-batch, gradient checkpointing), a fresh `r1kit train sft`
process trains a few steps on packed rows of synthetic arithmetic chat data, and its peak resident memory is
read from the kernel (wait4's ru_maxrss); `r1kit plan --device cpu --json` predicts the same run in another
fresh process. Printed side by side with the ratio. Target from the scale-out issue: within +-25% on the tiny
and small presets.

    python benchmarks/plan_memory.py [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = [
    ("tiny-qwen2", "full", 512, 1, False),
    ("small-qwen2", "full", 1024, 2, False),
    ("small-qwen2", "full", 2048, 2, True),
    ("small-qwen2", "lora", 1024, 2, False),
    ("tiny-deepseek-v3", "full", 1024, 2, False),
]


def prepare(workdir: Path) -> None:
    from r1kit.config import DataConfig
    from r1kit.data.clean import clean
    from r1kit.data.synth import synthesize
    from r1kit.models.tokenizer import train_tokenizer

    data = synthesize("arithmetic", 3000, workdir / "data.jsonl", seed=0)
    train_tokenizer([data], workdir / "tok", vocab_size=8192)
    (workdir / "recipe.yaml").write_text("name: plan-memory\n")
    off = {"enabled": False}
    clean(
        [data],
        workdir / "clean",
        DataConfig(
            validation_fraction=0.0, semantic=off, quality=off, toxicity=off, decontam=off, near_dedup=off
        ),
    )


def settings(workdir: Path, preset: str, method: str, seq: int, batch: int, checkpointing: bool) -> list[str]:
    sets = [
        f"model.preset={preset}",
        f"model.tokenizer={workdir / 'tok'}",
        f"train.dataset={workdir / 'clean'}",
        f"train.method={method}",
        f"train.max_seq_length={seq}",
        f"train.per_device_batch_size={batch}",
        f"train.gradient_checkpointing={str(checkpointing).lower()}",
        "train.gradient_accumulation_steps=1",
        "train.tensorboard=false",
        "train.early_stopping_patience=null",
        "train.save_steps=1000",
        "train.eval_steps=1000",
    ]
    return [arg for s in sets for arg in ("--set", s)]


def measured_peak_gb(workdir: Path, sets: list[str], steps: int, name: str) -> float:
    """Peak RSS of a fresh training process, from the kernel's accounting of that child alone."""
    cmd = [
        sys.executable,
        "-m",
        "r1kit",
        "train",
        "sft",
        str(workdir / "recipe.yaml"),
        "--out",
        str(workdir / name),
        *sets,
        "--set",
        f"train.max_steps={steps}",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"training failed: {' '.join(cmd)}\n{proc.stderr.read()[-3000:]}")
    return usage.ru_maxrss * 1024 / 1e9


def predicted(workdir: Path, sets: list[str]) -> dict:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "r1kit",
            "plan",
            str(workdir / "recipe.yaml"),
            "--device",
            "cpu",
            "--json",
            *sets,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="plan-memory-"))
    prepare(workdir)
    print(f"{'case':<52} {'params':>8} {'predicted':>10} {'measured':>9} {'ratio':>6}")
    ratios = []
    for i, case in enumerate(CASES):
        preset, method, seq, batch, checkpointing = case
        sets = settings(workdir, *case)
        plan = predicted(workdir, sets)
        start = time.perf_counter()
        peak = measured_peak_gb(workdir, sets, args.steps, f"run{i}")
        ratio = plan["total_gb"] / peak
        ratios.append(ratio)
        label = f"{preset} {method} {batch}x{seq}" + (" checkpointing" if checkpointing else "")
        print(
            f"{label:<52} {plan['model']['total_params'] / 1e6:>7.1f}M {plan['total_gb']:>9.2f}G {peak:>8.2f}G "
            f"{ratio:>6.2f}  ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
        parts = ", ".join(f"{k} {v:.2f}" for k, v in plan["memory_gb"].items())
        print(f"    predicted: {parts}")
    worst = max(ratios, key=lambda r: abs(r - 1))
    print(
        f"\nworst ratio {worst:.2f} (target: within 0.75-1.25): "
        f"{'met' if all(0.75 <= r <= 1.25 for r in ratios) else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
