"""Benchmark: the demo model's speed and held-out accuracy as each export runs it on this CPU, side by side.

Engines: the torch engine (r1kit's continuous-batching engine on the fp32 model, what `r1kit serve` runs by
default, and on its bf16 copy where the CPU has native bf16: the strongest torch baseline, which the ratios are
against), torchao int8 weight-only (what `--quantize int8` writes), the same under torch.compile, and llama.cpp
(llama-cpp-python) on the f16, q8_0 and q4_k_m GGUF files `r1kit export --format gguf` writes.

Model: the one `make demo` evaluated (runs/demo's eval report names it), or --model DIR. Problems: that eval's
held-out problems with its settings (greedy, its token budget), or --limit of them.

- speed: greedy tokens/s of one request of --tokens new tokens, whatever the model would say (export's measure:
  the median of 3 after a warm-up);
- accuracy: held-out accuracy, and on how many problems each engine's verdict differs from the torch engine's
  (a paired count: quantisation that changes answers shows there first).

    python benchmarks/quantized_speed.py [--demo runs/demo] [--model DIR --data DIR] [--limit N] [--tokens 128]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def answers_right(engine, tokenizer, problems, cfg) -> list[bool]:
    """Each problem answered once by `engine` with the eval's settings (greedy in the demo), checked as r1kit
    eval checks it."""
    from r1kit.engine.chats import Settings, complete_chats, sample_seed
    from r1kit.tasks import GoldProblems, check

    settings = Settings(cfg.temperature, cfg.top_p, cfg.max_new_tokens, 0)
    seeds = [sample_seed(0, i, 0) for i in range(len(problems))]
    samples = complete_chats(engine, tokenizer, [p.messages for p in problems], settings, seeds)
    gold = GoldProblems()
    return [bool(check(sample.answer, problem, gold)) for sample, problem in zip(samples, problems)]


def demo_inputs(demo: Path) -> tuple[Path, Path, object]:
    """(model folder, data folder, eval settings) of the demo's eval stage."""
    from r1kit.config import load_recipe

    reports = sorted(demo.glob("*-eval/eval/report.json"))
    if not reports:
        sys.exit(f"no eval report under {demo}: run `make demo` first, or pass --model and --data")
    report = json.loads(reports[-1].read_text())
    recipe = load_recipe(reports[-1].parent.parent / "config.yaml", [])
    return Path(report["model"]), Path(report["settings"]["dataset"]), recipe.eval


def candidates(model_dir: Path, workdir: Path, tokenizer):
    """(name, size in MiB, engine factory) for each engine; GGUF files are written first."""
    import torch

    from r1kit.engine.batching import TransformersEngine
    from r1kit.engine.llamacpp_engine import LlamaCppEngine
    from r1kit.export import load_quantized, quantized_mib, weights_mib
    from r1kit.gguf_export import write_gguf
    from r1kit.hardware import cpu_has_native_bf16
    from r1kit.models.load import load_model

    model = load_model(model_dir, dtype="float32")
    found = [("torch engine, fp32", weights_mib(model_dir), lambda: TransformersEngine(model, tokenizer))]
    if cpu_has_native_bf16():
        half = load_model(model_dir, dtype="bfloat16")
        found.append(
            ("torch engine, bf16", weights_mib(model_dir) / 2, lambda: TransformersEngine(half, tokenizer))
        )
    int8 = load_quantized(model_dir, "int8", False)
    found.append(("torchao int8", quantized_mib(int8), lambda: TransformersEngine(int8, tokenizer)))

    def compiled():
        compiled_model = load_quantized(model_dir, "int8", False)
        compiled_model.forward = torch.compile(compiled_model.forward, dynamic=True)
        return TransformersEngine(compiled_model, tokenizer)

    found.append(("torchao int8 + compile", quantized_mib(int8), compiled))
    for quant in ("f16", "q8_0", "q4_k_m"):
        path = write_gguf(model, tokenizer, workdir / f"model-{quant}.gguf", quant).path
        found.append(
            (f"llama.cpp {quant}", path.stat().st_size / 2**20, lambda p=path: LlamaCppEngine(p, tokenizer))
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--demo", type=Path, default=Path("runs/demo"))
    parser.add_argument("--model", type=Path)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()

    import r1kit  # noqa: F401  (sets OMP_WAIT_POLICY before torch is imported)
    from r1kit.config import EvalConfig
    from r1kit.eval import suites
    from r1kit.export import engine_speed
    from r1kit.models.load import load_tokenizer

    if args.model:
        if not args.data:
            sys.exit("--model needs --data (a cleaned data folder with a test split)")
        model_dir, data_dir, cfg = args.model, args.data, EvalConfig(temperature=0.0)
    else:
        model_dir, data_dir, cfg = demo_inputs(args.demo)
    problems = suites.heldout(str(data_dir), args.limit or cfg.limit)
    tokenizer = load_tokenizer(model_dir)
    print(f"model {model_dir}; {len(problems)} held-out problems, temperature {cfg.temperature}, "
          f"{cfg.max_new_tokens} new tokens at most; speed: {args.tokens} tokens, one request", flush=True)  # fmt: skip
    rows, base_right = [], None
    with tempfile.TemporaryDirectory() as scratch:
        for name, size, make in candidates(model_dir, Path(scratch), tokenizer):
            try:
                speed = engine_speed(make(), tokenizer, args.tokens)
                engine, start = make(), time.perf_counter()
                try:
                    right = answers_right(engine, tokenizer, problems, cfg)
                finally:
                    engine.shutdown()
            except Exception as error:  # noqa: BLE001 - a row that cannot run says why; the others still run
                rows.append((name, size, None, None, None, f"failed: {type(error).__name__}: {error}"[:160]))
                print(f"  {name}: {rows[-1][-1]}", flush=True)
                continue
            base_right = base_right or right
            differ = sum(a != b for a, b in zip(right, base_right))
            rows.append((name, size, speed, right, time.perf_counter() - start, differ))
            print(f"  {name}: {speed:.0f} tok/s, accuracy {100 * sum(right) / len(right):.1f}%", flush=True)
    base = max(speed for name, _, speed, *_ in rows if name.startswith("torch engine") and speed)
    print(f"\nratios against the fastest torch engine row: {base:,.0f} tokens/s")
    print()
    print(
        "| engine | size MiB | tokens/s | vs best torch | held-out accuracy (± s.e.) | verdicts unlike torch's | eval s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, size, speed, right, seconds, differ in rows:
        if speed is None:
            print(f"| {name} | {size:.1f} | {differ} | | | | |")
            continue
        n = len(right)
        accuracy = sum(right) / n
        error = (accuracy * (1 - accuracy) / n) ** 0.5
        print(f"| {name} | {size:.1f} | {speed:,.0f} | {speed / base:.2f}x | {100 * accuracy:.1f}% "
              f"(± {100 * error:.1f}) | {differ} of {n} | {seconds:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
