"""`r1kit demo`: the R1 recipe end to end on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from r1kit.cli.common import SetOption, app, out, print_answer


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for everything the demo writes.")] = Path(
        "runs/demo"
    ),
    overrides: SetOption = None,
) -> None:
    """The R1 recipe end to end on this machine: data, tokenizer, SFT, GRPO, eval, export, serve, report."""
    from r1kit.demo import run_demo

    result = run_demo(out_dir, overrides or [])
    counts = {s: sum(c.status == s for c in result.checks) for s in ("pass", "warn", "fail")}
    report = result.data
    out.print(f"doctor: {counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail")
    out.print(f"data: {report['input_records']} records in, {report['kept']} kept")
    budget = result.experiment["budget"]
    out.print(
        f"SFT: {result.steps_of('sft')} steps; then {budget['amount']:g} {budget['kind']} each from there: "
        f"more SFT {result.steps_of('sft-more')} steps, GRPO {result.steps_of('grpo')} steps"
    )
    for example in result.examples:  # the evaluation's own greedy answers to the first held-out problems
        print_answer(example["prompt"], example["reasoning"], example["answer"])
        verdict = "[green]correct[/green]" if example["correct"] else "[yellow]not correct[/yellow]"
        out.print(f"gold      {escape(example['gold'])}: {verdict}")
    arms = result.experiment["arms"]
    out.print(
        f"test accuracy ({result.experiment['test_problems']} problems, greedy): "
        + ", ".join(
            f"{100 * arms[arm]['greedy']['mean']:.1f}% {name}"
            for arm, name in (("sft", "after SFT"), ("sft-more", "with more SFT"), ("grpo", "after GRPO"))
            if arm in arms
        )
    )
    out.print(escape(result.experiment["verdict"]))
    exported = result.stages["export"].summary
    b, a = exported["before"], exported["after"]
    out.print(
        f"export {exported['quantize']}: {b['size_mib']:.1f} -> {a['size_mib']:.1f} MiB, "
        f"{b['tokens_per_second']:.0f} -> {a['tokens_per_second']:.0f} tokens/s"
        + "".join(
            f", {name} accuracy {100 * kept['before']:.1f}% -> {100 * kept['after']:.1f}%"
            for name, kept in (exported.get("accuracy") or {}).items()
        )
    )
    served = result.served
    out.print(f"served at {served['url']}: asked {escape(served['question'])!r}", highlight=False)
    out.print(f"[dim]reasoning_content[/dim] {escape(str(served['reasoning']))}", highlight=False)
    out.print(f"[bold]content[/bold]           {escape(str(served['answer']))}", highlight=False)
    out.print(f"{sum(result.seconds.values()) / 60:.1f} min; report: {escape(str(result.report))}")
