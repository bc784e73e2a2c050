"""`r1kit demo`: the R1 recipe end to end on this machine, in a few minutes on 2 CPU cores.

The doctor, then the shipped recipe `recipes/demo.yaml` run by the pipeline (synthetic addition problems with
worked solutions → cleaning, with its report → tokenizer → a new mini Qwen2, the R1-Distill architecture →
cold-start SFT, stopped once a quarter of the validation problems come out right → `r1kit experiment`: the
same seconds of more SFT and of GRPO with the accuracy reward from that checkpoint, all three scored alike on
the same test problems → held-out accuracy, speed and plots of the GRPO model → export), then the server,
asked one question through the official OpenAI client, and `report.md`, written from the pipeline's stage
records: every figure is measured in this run. `benchmarks/grpo_vs_sft.py` is the same comparison where SFT
has plateaued, on 3 seeds.
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
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from r1kit.config import Recipe, load_recipe
from r1kit.dist import print0
from r1kit.doctor import FAIL, Check, run_checks
from r1kit.errors import UserError
from r1kit.eval.report import pct
from r1kit.pipeline import Current, StageRecord, run_pipeline
from r1kit.r1format import last_boxed

DISK_NEED_GIB = 1  # a finished demo folder holds about 100 MB; its checkpoints come and go within that margin
STEPS = {
    "synth": "synth",
    "data": "data",
    "tokenizer": "tokenizer",
    "sft": "SFT",
    "experiment": "more SFT vs GRPO",
    "eval": "eval after GRPO",
    "export": "export",
}
"""The demo's pipeline stages, in order, by the name its report gives each."""
PROGRESS = ["doctor", *STEPS.values(), "serve"]


def recipe_path() -> Path:
    """The demo's recipe, shipped in the package (`recipes/demo.yaml` in a clone links to it)."""
    return Path(str(resources.files("r1kit").joinpath("recipes/demo.yaml")))


def demo_recipe(out_dir: Path, overrides: list[str] = ()) -> Recipe:
    recipe = load_recipe(recipe_path(), [f"output_dir={out_dir}", *overrides])
    shipped = list(STEPS)
    if [s.stage for s in recipe.pipeline.stages] != shipped:
        raise UserError(
            f"the demo runs pipeline.stages [{', '.join(shipped)}] (override their `set` lists instead)"
        )
    if not {"sft", "sft-more", "grpo"} <= set(recipe.experiment.arms):
        raise UserError("the demo compares experiment.arms sft, sft-more and grpo; keep those three")
    return recipe


@dataclass
class DemoResult:
    recipe: Recipe
    checks: list[Check]
    stages: dict[str, StageRecord]
    """The pipeline's record of each stage, by its key in STEPS."""
    data: dict
    """The cleaning report (report.json)."""
    experiment: dict
    """The comparison from the cold start: more SFT and GRPO on the same budget (report.json)."""
    evaluation: dict
    """The evaluation of the GRPO model: held-out accuracy and speed (report.json)."""
    examples: list[dict]
    """The GRPO model's answers to the first held-out problems, from its evaluation's own samples: prompt,
    reasoning, answer, gold and whether it is correct."""
    served: dict
    """The question asked of the server, and its reasoning and answer."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each step."""
    report: Path | None = None

    def steps_of(self, stage: str) -> int:
        """Optimizer steps of `sft` (the cold start) or of an experiment arm (`sft-more`, `grpo`)."""
        if stage in self.stages:
            return self.stages[stage].summary["steps"]
        return self.arm(stage)["steps"]

    def arm(self, name: str) -> dict:
        """The experiment's run of arm `name` (its one seed)."""
        return next(r for r in self.experiment["runs"] if r["arm"] == name)

    def dir_of(self, stage: str) -> Path:
        return Path(self.stages[stage].dir)


class _Steps:
    """Numbered progress lines, and the wall time of each step."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._name, self._start = None, 0.0

    def start(self, name: str, detail: str = "") -> None:
        self.stop()
        self._name, self._start = name, time.perf_counter()
        print0(
            f"[bold]{PROGRESS.index(name) + 1}/{len(PROGRESS)} {name}[/bold]"
            + (f": {detail}" if detail else "")
        )

    def stop(self) -> None:
        if self._name is not None:
            self.seconds[self._name] = time.perf_counter() - self._start
            self._name = None


def _detail(key: str, recipe: Recipe) -> str:
    """What a stage is about to do, for its progress line."""
    t, g = recipe.train, recipe.grpo
    return {
        "synth": f"{recipe.synth.problems} {recipe.synth.task} problems with worked solutions",
        "data": "cleaned, with a report",
        "sft": f"a new {recipe.model.preset}, until {t.metric_for_best_model} reaches {t.stop_at_metric} "
        f"(at most {t.max_steps} steps)",
        "experiment": f"{recipe.experiment.amount:g} {recipe.experiment.budget} each of more SFT and of GRPO "
        f"({g.num_generations} completions per prompt, rewarded for correct answers) from the cold start, "
        "scored on the same test problems",
        "eval": "held-out accuracy and speed, with plots",
        "export": recipe.export.quantize,
    }.get(key, "")


def run_demo(out_dir: str | Path, overrides: list[str] = ()) -> DemoResult:
    out_dir = Path(out_dir)
    recipe = demo_recipe(out_dir, overrides)
    out_dir.mkdir(parents=True, exist_ok=True)
    for earlier in out_dir.glob("[0-9][0-9]-*"):  # an earlier demo's stages: each demo runs afresh
        shutil.rmtree(earlier)
    steps = _Steps()

    steps.start("doctor")
    checks = run_checks(out_dir, disk_need_gib=DISK_NEED_GIB)
    failed = [c for c in checks if c.status == FAIL]
    if failed:
        raise UserError(
            "doctor found problems: " + "; ".join(f"{c.name}: {c.detail} ({c.fix})" for c in failed)
        )

    with ExitStack() as background:
        servers: list[subprocess.Popen] = []

        def before_stage(stage_dir: Path, resolved: Recipe, current: Current) -> None:
            key = list(STEPS)[int(stage_dir.name[:2]) - 1]  # the folders are numbered from 01
            if key == "eval":
                # The server starts now and loads while the evaluation and the export run: most of its start
                # is Python imports on one core, beside the evaluation's two threads.
                servers.append(background.enter_context(serve_in_background(Path(current.model))))
            steps.start(STEPS[key], _detail(key, resolved))

        records = dict(zip(STEPS, run_pipeline(recipe, out_dir, before_stage=before_stage)))
        evaluation = _read_json(Path(records["eval"].dir) / "eval" / "report.json")
        examples = evaluation["suites"]["heldout"]["examples"]  # the first held-out problems, answered
        steps.start("serve", "one question through the OpenAI API")
        served = ask_server(servers[0], examples[0]["prompt"], recipe.eval.max_new_tokens)
        served["gold"] = examples[0]["gold"]
        steps.stop()
    result = DemoResult(
        recipe,
        checks,
        records,
        _read_json(Path(records["data"].dir) / "data" / "report.json"),
        _read_json(Path(records["experiment"].dir) / "report.json"),
        evaluation,
        examples,
        served,
        steps.seconds,
    )
    result.report = write_demo_report(result, out_dir)
    return result


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


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


def comparison_table(result: DemoResult) -> list[str]:
    """The experiment's arms as report rows: steps, greedy and pass@1 accuracy with their intervals."""
    compared = result.experiment

    def cell(interval: dict) -> str:
        return f"{pct(interval['mean'])} ({pct(interval['low'])}–{pct(interval['high'])})"

    names = {"sft": "cold-start SFT", "sft-more": "more SFT", "grpo": "GRPO"}
    temperature = compared["decoding"]["sampled"]["temperature"]
    rows = [
        f"| model | training after the cold start | greedy | pass@1 (T={temperature}) |",
        "|---|---|---|---|",
    ]
    for arm, figures in compared["arms"].items():
        run = result.arm(arm)
        trained = (
            f"none ({result.steps_of('sft')} steps before)"
            if arm == "sft"
            else f"{run['train_seconds']:.0f} s, {run['steps']} steps"
        )
        rows.append(
            f"| {names.get(arm, arm)} | {trained} | {cell(figures['greedy'])} | {cell(figures['sampled'])} |"
        )
    return rows


def write_demo_report(result: DemoResult, out_dir: Path) -> Path:
    """`report.md`: more SFT against GRPO from the cold start, what each step did and measured, the served answer,
    and the plots; figures from this run only."""
    import platform

    import torch

    after = result.evaluation["suites"]["heldout"]
    compared = result.experiment
    speed = result.evaluation["suites"]["speed"]
    sft_events = _events(result.dir_of("sft"))
    sft_train, sft_eval = sft_events.get("train", []), sft_events.get("eval", [])
    grpo_dir = result.dir_of("experiment") / "grpo" / f"seed-{result.arm('grpo')['seed']}"
    grpo_train = _events(grpo_dir).get("train", [])
    rewards = [(e["step"], e["reward"]) for e in grpo_train if "reward" in e]
    speeds = sorted(e["tokens_per_second"] for e in sft_train if "tokens_per_second" in e)
    report = result.data
    total = sum(result.seconds.values())
    exported = result.stages["export"].summary
    served, b, a = result.served, exported["before"], exported["after"]

    def link(stage: str, path: str) -> str:
        return str((result.dir_of(stage) / path).relative_to(out_dir))

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
        "## More SFT or GRPO, from the same cold start",
        "",
        f"**{compared['verdict']}**",
        "",
        *comparison_table(result),
        "",
        f"Greedy and sampled exact-answer accuracy on {compared['test_problems']} test problems (validation "
        "problems that no step trained on or chose a checkpoint on), with 95% bootstrap intervals; one seed, "
        f"so the intervals cover the test problems' variation, not the runs' ([experiment report]"
        f"({link('experiment', 'report.md')})). `r1kit experiment` runs it on more seeds and with controls.",
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
        f"{json.dumps(report['rejected'])} ([cleaning report]({link('data', 'data/report.md')})).",
        f"- **tokenizer**: {result.stages['tokenizer'].summary['vocab_size']} tokens.",
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
            f"- **SFT**: {result.steps_of('sft')} steps; validation loss {sft_eval[0]['loss']:.3f} → "
            f"{sft_eval[-1]['loss']:.3f}, validation accuracy {pct(reached)} at the last evaluation; "
            f"{speeds[len(speeds) // 2] if speeds else 0:.0f} tokens/s (median).{short}"
        )
    if rewards:
        shown = rewards[:: math.ceil(len(rewards) / 10)]  # at most 10 of them, and the last
        shown += [rewards[-1]] if shown[-1] != rewards[-1] else []
        lines.append(
            f"- **GRPO**: {result.steps_of('grpo')} steps; mean reward by step (each log averages the steps since "
            "the one before): " + ", ".join(f"{r:.2f} at {step}" for step, r in shown) + "."
        )
    lines += [
        f"- **eval** of the GRPO model: {pct(after['accuracy'])} greedy on all {after['problems']} held-out "
        "problems (with the ones its checkpoint was chosen on); "
        f"{speed['tokens_per_second']:.0f} tokens/s, time to first token "
        + ("–" if speed["ttft_p50"] is None else f"{1000 * speed['ttft_p50']:.0f} ms")
        + f" (median) ([evaluation report]({link('eval', 'eval/report.md')})).",
        f"- **export** ({exported['quantize']}): {b['size_mib']:.1f} → {a['size_mib']:.1f} MiB, "
        f"{b['tokens_per_second']:.0f} → {a['tokens_per_second']:.0f} tokens/s"
        + export_choice(exported.get("measured") or {})
        + "".join(
            f"; {name} accuracy {pct(kept['before'])} → {pct(kept['after'])} on its {kept['problems']} problems"
            for name, kept in (exported.get("accuracy") or {}).items()
        )
        + ".",
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
        "Validation accuracy of more SFT and of GRPO against seconds of training (the cold start's test accuracy "
        "dashed):",
        "",
        f"![more SFT and GRPO]({link('experiment', 'accuracy_vs_time.png')})",
        "",
        "GRPO (loss and mean reward per logged step):",
        "",
        f"![GRPO]({link('eval', 'eval/plots/training_curves.png')})",
        "",
        f"![latency]({link('eval', 'eval/plots/latency.png')})",
        "",
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def export_choice(measured: dict[str, dict]) -> str:
    """What `quantize: auto` measured, for the report: each method's size and speed on this machine."""
    if not measured:
        return ""
    tried = ", ".join(
        f"{method} {m['size_mib']:.1f} MiB at {m['tokens_per_second']:.0f} tokens/s"
        for method, m in measured.items()
    )
    return f" (the fastest measured here of: {tried})"
