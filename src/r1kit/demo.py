"""`r1kit demo`: the stages end to end on this machine, from one recipe.

doctor → synthetic arithmetic problems with worked solutions → data cleaning (with its report) → tokenizer →
SFT of a new small Qwen2 model (the R1-Distill architecture) → answers to held-out problems, reasoning shown
apart and checked against the gold answer → evaluation (held-out accuracy, speed, report with plots) → int8
export for CPU inference → the server started, asked one question through the official OpenAI client, and
stopped. A few minutes on 2 CPU cores: the model learns the R1 format (think, then a boxed answer) long
before it learns to add, and the demo says which answers are right. GRPO joins once its CPU recipe learns
reliably within the demo's time (benchmarks/grpo_learning.py).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from r1kit.config import Recipe, build_recipe
from r1kit.data.clean import CleanResult, clean
from r1kit.data.synth import synthesize
from r1kit.data.tokenize import load_split
from r1kit.dist import print0
from r1kit.doctor import FAIL, Check, run_checks
from r1kit.errors import UserError
from r1kit.eval.answers import last_boxed
from r1kit.generate import Completion, generate
from r1kit.models.tokenizer import TokenizerResult, train_from_config
from r1kit.train.sft import TrainResult, train_sft

NUM_PROBLEMS = 3000


@dataclass
class DemoResult:
    recipe: Recipe
    checks: list[Check]
    data: CleanResult
    tokenizer: TokenizerResult
    training: TrainResult
    completions: list[tuple[Completion, str]]
    """Answers to held-out problems, each with its gold answer."""
    evaluation: dict
    """The evaluation report (report.json)."""
    export: object
    """The export result (sizes and speeds before and after)."""
    served: dict
    """The question asked of the server, and its reasoning and answer."""


def demo_recipe(out_dir: Path, overrides: list[str] = ()) -> Recipe:
    problems = out_dir / "problems.jsonl"
    raw = {
        "name": "demo",
        "output_dir": str(out_dir),
        "model": {"preset": "small-qwen2", "tokenizer": str(out_dir / "tokenizer")},
        "tokenizer": {"vocab_size": 1024, "inputs": [str(problems)]},
        # Synthetic problems: nothing for the embedding check to find, and no overlap with GSM8K to look for.
        "data": {"inputs": [str(problems)], "validation_fraction": 0.05, "semantic": {"enabled": False}},
        "train": {
            "learning_rate": 1e-3,
            "per_device_batch_size": 1,
            "gradient_accumulation_steps": 2,
            "max_steps": 150,
            "max_seq_length": 512,
            "logging_steps": 10,
            "eval_steps": 50,
            "save_steps": 150,
            "dataset": str(out_dir / "data"),
        },
        "eval": {
            "max_new_tokens": 160,
            "temperature": 0.0,
            "suites": ["heldout", "speed"],
            "limit": 50,
            "speed_requests": 4,
        },
        "export": {"quantize": "int8-dynamic"},
    }
    return build_recipe(raw, "demo recipe", overrides)


def run_demo(out_dir: str | Path, overrides: list[str] = ()) -> DemoResult:
    out_dir = Path(out_dir)
    recipe = demo_recipe(out_dir, overrides)
    out_dir.mkdir(parents=True, exist_ok=True)
    recipe.save(out_dir)

    print0("[bold]1/9 doctor[/bold]")
    checks = run_checks(out_dir)
    failed = [c for c in checks if c.status == FAIL]
    if failed:
        raise UserError(
            "doctor found problems: " + "; ".join(f"{c.name}: {c.detail} ({c.fix})" for c in failed)
        )

    print0(f"[bold]2/9 data[/bold]: {NUM_PROBLEMS} synthetic arithmetic problems, cleaned")
    synthesize("arithmetic", NUM_PROBLEMS, recipe.data.inputs[0], difficulty="medium", seed=recipe.seed)
    data = clean(recipe.data.inputs, recipe.train.dataset, recipe.data, seed=recipe.seed)

    print0("[bold]3/9 tokenizer[/bold]")
    tokenizer = train_from_config(recipe.tokenizer, recipe.model.tokenizer)

    print0(
        f"[bold]4/9 model[/bold]: a new {recipe.model.preset}; [bold]5/9 SFT[/bold] for "
        f"{recipe.train.max_steps} steps"
    )
    run_dir = out_dir / "sft"
    if run_dir.exists():  # the demo's own folder from an earlier demo: each demo trains afresh
        shutil.rmtree(run_dir)
    training = train_sft(recipe, run_dir)
    if training.final_dir is None:
        raise UserError(f"training stopped by {training.stopped_by} at step {training.global_step}")

    print0("[bold]6/9 answers[/bold] to held-out problems")
    held_out = load_split(recipe.train.dataset, "validation").select(range(3))
    completions = generate(
        training.final_dir,
        [row["messages"][0]["content"] for row in held_out],
        max_new_tokens=recipe.eval.max_new_tokens,
        temperature=recipe.eval.temperature,
        seed=recipe.seed,
    )
    print0("[bold]7/9 evaluation[/bold]: held-out accuracy and speed")
    from r1kit.eval.runner import run_eval

    evaluation = run_eval(recipe, out_dir / "eval", model_dir=training.final_dir, curves_from=run_dir)

    print0(f"[bold]8/9 export[/bold]: {recipe.export.quantize}")
    from r1kit.export import export

    shutil.rmtree(out_dir / "model-int8", ignore_errors=True)
    exported = export(
        training.final_dir, out_dir / "model-int8", quantize=recipe.export.quantize, speed_tokens=16
    )

    print0("[bold]9/9 serve[/bold]: one question through the OpenAI API")
    question = held_out[0]["messages"][0]["content"]
    served = ask_server(training.final_dir, question, recipe.eval.max_new_tokens)
    return DemoResult(
        recipe,
        checks,
        data,
        tokenizer,
        training,
        list(zip(completions, [row["answer"] for row in held_out])),
        evaluation,
        exported,
        served,
    )


def ask_server(model_dir: Path, question: str, max_tokens: int) -> dict:
    """Start `r1kit serve` on a free loopback port, ask `question` with the official OpenAI client, stop it
    with SIGTERM (it drains, then exits 0)."""
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from openai import OpenAI

    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "r1kit",
            "serve",
            "--model",
            str(model_dir),
            "--port",
            "0",
            "--model-name",
            "demo",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = server.stdout.readline()
        if not line.startswith("r1kit serve: "):
            raise UserError(f"the server did not start: {line.strip()}")
        url = line.split()[2]
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise UserError("the server did not answer /health within 60 s") from None
                time.sleep(0.2)
        client = OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        reply = client.chat.completions.create(
            model="demo",
            messages=[{"role": "user", "content": question}],
            max_tokens=max_tokens,
            temperature=0,
        )
        message = reply.choices[0].message
        return {
            "url": url,
            "question": question,
            "reasoning": getattr(message, "reasoning_content", None),
            "answer": message.content,
            "completion_tokens": reply.usage.completion_tokens,
        }
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)


def is_correct(completion: Completion, gold: str) -> bool:
    return (last_boxed(completion.answer) or completion.answer).strip() == gold.strip()
