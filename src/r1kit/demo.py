"""`r1kit demo`: the R1 recipe end to end on this machine, from one recipe, in a few minutes on 2 CPU cores.

doctor → 4,000 synthetic addition problems with worked solutions → cleaning (with its report) → tokenizer → a
new mini Qwen2 (the R1-Distill architecture) → cold-start SFT, stopped once a quarter of the validation problems
come out right → held-out accuracy → GRPO with the accuracy reward → held-out accuracy, speed and plots → int8
export → the server, asked one question through the official OpenAI client, then stopped → `report.md`, where
every figure is measured in this run. `benchmarks/grpo_learning.py` runs this recipe longer, with weight decay
and a decaying rate in the cold start and a mixed phase before GRPO.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from r1kit.config import Recipe, build_recipe
from r1kit.data.clean import CleanResult, clean
from r1kit.data.synth import synthesize
from r1kit.dist import print0
from r1kit.doctor import FAIL, Check, run_checks
from r1kit.errors import UserError
from r1kit.eval.report import pct
from r1kit.models.tokenizer import TokenizerResult, train_from_config
from r1kit.pipeline import Current, stage_recipe
from r1kit.r1format import last_boxed
from r1kit.train.run import TrainResult

NUM_PROBLEMS = 4000
DISK_NEED_GIB = 1  # a finished demo folder holds about 100 MB; its checkpoints come and go within that margin
STEPS = ["doctor", "data", "tokenizer", "SFT", "eval after SFT", "GRPO", "eval after GRPO", "export", "serve"]

GRPO_STAGE = [
    "train.per_device_batch_size=64",  # 8 prompts x 8 completions per step
    "train.gradient_accumulation_steps=1",
    "train.max_steps=20",
    "train.lr_scheduler=constant",
    "train.warmup_ratio=0",
    "train.stop_at_metric=null",  # the cold start's target: GRPO runs all its steps
]
"""The GRPO stage's overrides of the SFT settings (`pipeline.stages` in the demo's recipe)."""

AFRESH = "run the demo again (it trains afresh)"
"""What to do after a training stage of the demo was stopped by a signal."""


@dataclass
class DemoResult:
    recipe: Recipe
    checks: list[Check]
    data: CleanResult
    tokenizer: TokenizerResult
    sft: TrainResult
    before: dict
    """The held-out evaluation of the SFT model (report.json)."""
    grpo: TrainResult
    evaluation: dict
    """The evaluation of the GRPO model: held-out accuracy and speed (report.json)."""
    examples: list[dict]
    """The GRPO model's answers to the first held-out problems, from its evaluation's own samples: prompt,
    reasoning, answer, gold and whether it is correct."""
    export: object
    """The export result (sizes and speeds before and after)."""
    served: dict
    """The question asked of the server, and its reasoning and answer."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each step."""
    report: Path | None = None


def demo_recipe(out_dir: Path, overrides: list[str] = ()) -> Recipe:
    problems = out_dir / "problems.jsonl"
    raw = {
        "name": "demo",
        "output_dir": str(out_dir),
        "model": {"preset": "mini-qwen2", "tokenizer": str(out_dir / "tokenizer")},
        "tokenizer": {"vocab_size": 512, "inputs": [str(problems)]},
        # Synthetic problems: nothing for the embedding check to find, and no overlap with GSM8K to look for.
        "data": {"inputs": [str(problems)], "validation_fraction": 0.05, "semantic": {"enabled": False}},
        "train": {
            "learning_rate": 1e-3,
            "lr_scheduler": "constant",
            "warmup_ratio": 0.02,
            "per_device_batch_size": 1,
            "gradient_accumulation_steps": 2,
            "max_steps": 750,  # keeps `make demo` under 10 minutes on 2 cores
            "max_seq_length": 512,
            "logging_steps": 10,
            "eval_steps": 100,
            "eval_delay": 450,  # from step 500: up to 400, none of the validation problems came out right
            "save_steps": 100,
            "metric_for_best_model": "eval_accuracy",
            "stop_at_metric": 0.25,
            "early_stopping_patience": None,
            "keep_best": 0,
            "dataset": str(out_dir / "data"),
        },
        "grpo": {
            "num_generations": 8,
            "temperature": 1.0,
            "top_p": 1.0,
            "beta": 0.0,
            "loss_type": "dapo",
            # 20 steps at 1.5e-4 gain most of what 30 at 1e-4 and 50 at 5e-5 do, in 10 and 30 fewer steps
            # (research/grpo-learning.md)
            "learning_rate": 1.5e-4,
            "max_completion_length": 112,
            "rewards": {"accuracy": 1.0},
        },
        "pipeline": {"stages": ["sft", {"stage": "grpo", "set": GRPO_STAGE}]},
        "eval": {
            "max_new_tokens": 112,
            "temperature": 0.0,
            "suites": ["heldout", "speed"],
            "speed_requests": 4,
            "during_training": True,
            "during_training_problems": 64,
            # the 225 held-out problems in one batch: 9-10 s against 14-19 s in batches of 64 here (and 64 in
            # half the time of four batches of 16)
            "concurrency": 256,
        },
        "export": {"quantize": "int8-dynamic"},
    }
    recipe = build_recipe(raw, "demo recipe", overrides)
    if [s.stage for s in recipe.pipeline.stages] != ["sft", "grpo"]:
        raise UserError("the demo runs pipeline.stages [sft, grpo] (override their `set` lists instead)")
    return recipe


class _Steps:
    """Numbered progress lines, and the wall time of each step."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._name, self._start = None, 0.0

    def start(self, name: str, detail: str = "") -> None:
        self.stop()
        self._name, self._start = name, time.perf_counter()
        print0(
            f"[bold]{STEPS.index(name) + 1}/{len(STEPS)} {name}[/bold]" + (f": {detail}" if detail else "")
        )

    def stop(self) -> None:
        if self._name is not None:
            self.seconds[self._name] = time.perf_counter() - self._start
            self._name = None


def run_demo(out_dir: str | Path, overrides: list[str] = ()) -> DemoResult:
    from r1kit.eval.runner import run_eval
    from r1kit.export import export
    from r1kit.train.grpo import train_grpo
    from r1kit.train.sft import train_sft

    out_dir = Path(out_dir)
    recipe = demo_recipe(out_dir, overrides)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("sft", "grpo"):  # the demo's own folders from an earlier demo: each demo trains afresh
        shutil.rmtree(out_dir / name, ignore_errors=True)
    recipe.save(out_dir)
    steps = _Steps()

    steps.start("doctor")
    checks = run_checks(out_dir, disk_need_gib=DISK_NEED_GIB)
    failed = [c for c in checks if c.status == FAIL]
    if failed:
        raise UserError(
            "doctor found problems: " + "; ".join(f"{c.name}: {c.detail} ({c.fix})" for c in failed)
        )

    steps.start("data", f"{NUM_PROBLEMS} synthetic addition problems with worked solutions, cleaned")
    synthesize("addition", NUM_PROBLEMS, recipe.data.inputs[0], seed=recipe.seed)
    data = clean(recipe.data.inputs, recipe.train.dataset, recipe.data, seed=recipe.seed)

    steps.start("tokenizer")
    tokenizer = train_from_config(recipe.tokenizer, recipe.model.tokenizer)

    sft_stage, grpo_stage = recipe.pipeline.stages
    sft_recipe = stage_recipe(recipe, sft_stage, Current(None, recipe.train.dataset), out_dir / "sft")
    t = sft_recipe.train
    steps.start(
        "SFT",
        f"a new {recipe.model.preset}, until {t.metric_for_best_model} reaches {t.stop_at_metric} "
        f"(at most {t.max_steps} steps)",
    )
    sft = train_sft(sft_recipe, out_dir / "sft")
    sft_model = sft.final(AFRESH)

    steps.start("eval after SFT", "greedy accuracy on the held-out problems")
    only_heldout = sft_recipe.model_copy(deep=True)
    only_heldout.eval.suites = ["heldout"]
    before = run_eval(only_heldout, out_dir / "eval-sft", model_dir=sft_model, curves_from=sft.run_dir)

    grpo_recipe = stage_recipe(
        recipe, grpo_stage, Current(str(sft_model), recipe.train.dataset), out_dir / "grpo"
    )
    g = grpo_recipe.grpo
    steps.start(
        "GRPO",
        f"{grpo_recipe.train.max_steps} steps of {grpo_recipe.train.per_device_batch_size // g.num_generations} "
        f"prompts x {g.num_generations} completions, rewarded for correct answers",
    )
    grpo = train_grpo(grpo_recipe, out_dir / "grpo")
    grpo_model = grpo.final(AFRESH)

    # The server starts now and loads while the evaluation and the export run: most of its start is Python
    # imports on one core, beside the evaluation's two threads.
    with serve_in_background(grpo_model) as server:
        steps.start("eval after GRPO", "held-out accuracy and speed, with plots")
        evaluation = run_eval(grpo_recipe, out_dir / "eval", model_dir=grpo_model, curves_from=grpo.run_dir)

        steps.start("export", recipe.export.quantize)
        shutil.rmtree(out_dir / "model-int8", ignore_errors=True)
        exported = export(
            grpo_model, out_dir / "model-int8", quantize=recipe.export.quantize, speed_tokens=16
        )

        steps.start("serve", "one question through the OpenAI API")
        examples = evaluation["suites"]["heldout"]["examples"]  # the first held-out problems, answered
        served = ask_server(server, examples[0]["prompt"], recipe.eval.max_new_tokens)
        served["gold"] = examples[0]["gold"]
        steps.stop()
    result = DemoResult(
        recipe,
        checks,
        data,
        tokenizer,
        sft,
        before,
        grpo,
        evaluation,
        examples,
        exported,
        served,
        steps.seconds,
    )
    result.report = write_demo_report(result, out_dir)
    return result


@contextmanager
def serve_in_background(model_dir: Path) -> Iterator[subprocess.Popen]:
    """`r1kit serve` on a free loopback port, started now; stopped with SIGTERM on leaving the block (it drains,
    then exits 0), whatever happened inside."""
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
        yield server
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)


def ask_server(server: subprocess.Popen, question: str, max_tokens: int) -> dict:
    """Wait for the server `serve_in_background` started, and ask `question` with the official OpenAI client."""
    import urllib.request

    from openai import OpenAI

    line = server.stdout.readline()
    if not line.startswith("r1kit serve: "):
        code = server.poll() if line else server.wait(timeout=30)  # no line: it closed its output, exiting
        raise UserError(f"the server did not start (exit code {code}): {line.strip()}")
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


def _events(run_dir: Path) -> dict[str, list[dict]]:
    """A run's metrics.jsonl events by split (`run`, `train`, `eval`, ...)."""
    by_split: dict[str, list[dict]] = {}
    for event in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()):
        by_split.setdefault(event.get("split"), []).append(event)
    return by_split


def _precision_note(precision: str) -> str:
    """The training precision, and on a CPU trained in fp32 why the demo takes longer there."""
    from r1kit.hardware import cpu_has_native_bf16, cuda_available

    if precision == "fp32" and not cuda_available() and not cpu_has_native_bf16():
        return (
            "fp32: this CPU has no native bf16 matrix instructions, so training is slower here than with bf16 "
            "autocast on a CPU that has them"
        )
    return precision


def write_demo_report(result: DemoResult, out_dir: Path) -> Path:
    """`report.md`: what each step did and measured, the accuracy before and after GRPO, the served answer, and
    the plots of both training runs; figures from this run only."""
    import platform

    import torch

    before, after = result.before["suites"]["heldout"], result.evaluation["suites"]["heldout"]
    speed = result.evaluation["suites"]["speed"]
    sft_events = _events(result.sft.run_dir)
    sft_train, sft_eval = sft_events.get("train", []), sft_events.get("eval", [])
    grpo_train = _events(result.grpo.run_dir).get("train", [])
    rewards = [(e["step"], e["reward"]) for e in grpo_train if "reward" in e]
    speeds = sorted(e["tokens_per_second"] for e in sft_train if "tokens_per_second" in e)
    report = result.data.report
    total = sum(result.seconds.values())
    served, b, a = result.served, result.export.before, result.export.after
    gold = served.get("gold", "")
    verdict = (
        "correct" if (last_boxed(served["answer"] or "") or "").strip() == gold.strip() else "not correct"
    )
    lines = [
        "# r1kit demo",
        "",
        f"Every figure below was measured in this run: {time.strftime('%Y-%m-%d %H:%M')}, "
        f"{platform.machine()} with {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"training in {_precision_note(sft_events['run'][0]['precision'])}.",
        "",
        "## Held-out accuracy before and after GRPO",
        "",
        f"Greedy exact-answer accuracy on {after['problems']} held-out problems (validation split, never trained on).",
        "",
        "| model | accuracy |",
        "|---|---|",
        f"| after cold-start SFT ({result.sft.global_step} steps) | {pct(before['accuracy'])} ± "
        f"{pct(before['accuracy_stderr'])} |",
        f"| after GRPO ({result.grpo.global_step} steps) | {pct(after['accuracy'])} ± {pct(after['accuracy_stderr'])} |",
        f"| change | {100 * (after['accuracy'] - before['accuracy']):+.1f} points |",
        "",
        "## Steps",
        "",
        "| step | wall time |",
        "|---|---|",
        *[f"| {name} | {seconds:.0f} s |" for name, seconds in result.seconds.items()],
        f"| total | {total:.0f} s ({total / 60:.1f} min) |",
        "",
        "## What each step did",
        "",
        f"- **data**: {report['input_records']} records in, {report['kept']} kept, rejected "
        f"{json.dumps(report['rejected'])} ([cleaning report](data/report.md)).",
        f"- **tokenizer**: {result.tokenizer.vocab_size} tokens.",
    ]
    if sft_eval:
        target, reached = result.recipe.train.stop_at_metric, sft_eval[-1].get("accuracy", 0.0)
        short = (
            f" It stopped at its step limit before reaching {pct(target)}: this cold start learned to add more "
            "slowly, and GRPO has less to work with (how soon a cold start gets there varies from run to run; "
            "see research/grpo-learning.md)."
            if target is not None and reached < target
            else ""
        )
        lines.append(
            f"- **SFT**: {result.sft.global_step} steps; validation loss {sft_eval[0]['loss']:.3f} → "
            f"{sft_eval[-1]['loss']:.3f}, validation accuracy {pct(reached)} at the last evaluation; "
            f"{speeds[len(speeds) // 2] if speeds else 0:.0f} tokens/s (median).{short}"
        )
    if rewards:
        shown = rewards[:: math.ceil(len(rewards) / 10)]  # at most 10 of them, and the last
        shown += [rewards[-1]] if shown[-1] != rewards[-1] else []
        lines.append(
            f"- **GRPO**: {result.grpo.global_step} steps; mean reward by step (each log averages the steps since "
            "the one before): " + ", ".join(f"{r:.2f} at {step}" for step, r in shown) + "."
        )
    lines += [
        f"- **eval**: {speed['tokens_per_second']:.0f} tokens/s, time to first token "
        + ("–" if speed["ttft_p50"] is None else f"{1000 * speed['ttft_p50']:.0f} ms")
        + " (median) ([evaluation report](eval/report.md)).",
        f"- **export** ({result.export.quantize}): {b.size_mib:.1f} → {a.size_mib:.1f} MiB, "
        f"{b.tokens_per_second:.0f} → {a.tokens_per_second:.0f} tokens/s.",
        f"- **serve**: `r1kit serve` at {served['url']} (started after GRPO, loading during the evaluation and "
        "the export), asked through the OpenAI client:",
        "",
        f"  > {served['question']}",
        "",
        f"  `reasoning_content`: {json.dumps(served['reasoning'])}",
        "",
        f"  `content`: {json.dumps(served['answer'])} (gold {gold}: {verdict})",
        "",
        "## Plots",
        "",
        "SFT (loss, and validation accuracy at each evaluation):",
        "",
        "![SFT](eval-sft/plots/training_curves.png)",
        "",
        "GRPO (loss and mean reward per logged step):",
        "",
        "![GRPO](eval/plots/training_curves.png)",
        "",
        "![latency](eval/plots/latency.png)",
        "",
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
