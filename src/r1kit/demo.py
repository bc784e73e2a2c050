"""`r1kit demo`: the stages that exist so far, run end to end on this machine from one recipe.

Today: doctor → tokenizer training on GSM8K text → a new small Qwen2 model (the R1-Distill architecture) →
a short generation. The model is untrained, so its text is noise: the demo shows the plumbing works and how
fast this machine generates, and says so. Later stages join as they land.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from r1kit.config import Recipe, build_recipe
from r1kit.dist import print0
from r1kit.doctor import FAIL, Check, run_checks
from r1kit.errors import UserError
from r1kit.generate import Completion, generate
from r1kit.models.create import InitResult, init_model
from r1kit.models.tokenizer import TokenizerResult, train_from_config
from r1kit.paths import shared_data_dir


@dataclass
class DemoResult:
    recipe: Recipe
    checks: list[Check]
    tokenizer: TokenizerResult
    model: InitResult
    completions: list[Completion]


def demo_recipe(out_dir: Path, overrides: list[str] = ()) -> Recipe:
    gsm8k = shared_data_dir() / "gsm8k" / "test.jsonl"
    raw = {
        "name": "demo",
        "output_dir": str(out_dir),
        "model": {"preset": "small-qwen2"},
        "tokenizer": {"type": "bpe", "vocab_size": 8192, "inputs": [str(gsm8k)]},
        "eval": {"max_new_tokens": 48},
    }
    return build_recipe(raw, "demo recipe", overrides)


def run_demo(out_dir: str | Path, overrides: list[str] = ()) -> DemoResult:
    out_dir = Path(out_dir)
    recipe = demo_recipe(out_dir, overrides)
    recipe.save(out_dir)

    print0("[bold]1/4 doctor[/bold]")
    checks = run_checks(out_dir.parent if not out_dir.exists() else out_dir)
    failed = [c for c in checks if c.status == FAIL]
    if failed:
        raise UserError("doctor found problems: " + "; ".join(f"{c.name}: {c.detail} ({c.fix})" for c in failed))

    print0("[bold]2/4 tokenizer[/bold] training on " + ", ".join(recipe.tokenizer.inputs))
    tokenizer = train_from_config(recipe.tokenizer, out_dir / "tokenizer")

    print0(f"[bold]3/4 model[/bold] {recipe.model.preset} from preset (random weights)")
    model = init_model(recipe.model.preset, tokenizer.out_dir, out_dir / "model", seed=recipe.seed)

    print0("[bold]4/4 generate[/bold] (untrained model: expect noise)")
    questions = [json.loads(line)["question"] for line in gsm8k_lines(recipe.tokenizer.inputs[0], 2)]
    completions = generate(
        model.out_dir, questions, max_new_tokens=recipe.eval.max_new_tokens,
        temperature=recipe.eval.temperature, top_p=recipe.eval.top_p, seed=recipe.seed,
    )
    return DemoResult(recipe, checks, tokenizer, model, completions)


def gsm8k_lines(path: str | Path, count: int) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [next(f) for _ in range(count)]
