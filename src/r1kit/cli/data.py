"""`r1kit data clean|synth|stats`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from r1kit.cli.common import SetOption, data_app, err, load_recipe_for, out
from r1kit.errors import UserError


@data_app.command("clean")
def data_clean(
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (train/, validation/, reports).")],
    inputs: Annotated[
        list[Path] | None, typer.Option("--input", help="Input file or folder (repeatable).")
    ] = None,
    more_inputs: Annotated[list[Path] | None, typer.Argument(help="More inputs.", show_default=False)] = None,
    recipe: Annotated[
        Path | None, typer.Option(help="Recipe whose `data` section configures the stages.")
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Stop at the first malformed input.")] = False,
    executor: Annotated[
        str | None,
        typer.Option(help="local (this machine's cores) or ray (Ray Data; RAY_ADDRESS names a cluster)."),
    ] = None,
    overrides: SetOption = None,
) -> None:
    """Clean data files into sharded Parquet with an auditable report (every input record accounted for)."""
    from r1kit.data.clean import clean

    extra = ["data.strict=true"] if strict else []
    if executor is not None:
        extra.append(f"data.executor={executor}")
    config = load_recipe_for(recipe, overrides, extra)
    files = [str(p) for p in (inputs or []) + (more_inputs or [])] or config.data.inputs
    result = clean(files, out_dir, config.data, seed=config.seed)
    config.save(out_dir)
    report = result.report
    table = Table("", "records")
    table.add_row("input", str(report["input_records"]))
    table.add_row(
        "[green]kept[/green]",
        f"{report['kept']} (train {report['splits']['train']}, validation {report['splits']['validation']})",
    )
    for reason, count in report["rejected"].items():
        table.add_row(f"[yellow]rejected: {escape(reason)}[/yellow]", str(count))
    out.print(table)
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    out.print(f"{report['records_per_second']} records/s; report: {escape(str(out_dir / 'report.md'))}")


@data_app.command("synth")
def data_synth(
    task: Annotated[
        str, typer.Option(help="arithmetic, addition, addition-labelled, addition-running or countdown.")
    ],
    n: Annotated[int, typer.Option("--n", help="Number of problems.")],
    out_path: Annotated[Path, typer.Option("--out", help="JSONL file to write.")],
    difficulty: Annotated[str, typer.Option(help="easy, medium or hard.")] = "medium",
    seed: Annotated[int, typer.Option(help="Generation seed.")] = 42,
    reasoning_share: Annotated[
        float,
        typer.Option(
            help="Share of solutions with the worked reasoning; the rest answer after an empty think block."
        ),
    ] = 1.0,
) -> None:
    """Generate verifiable problems with gold answers and worked <think> solutions."""
    from r1kit.data.synth import synthesize

    path = synthesize(task, n, out_path, difficulty=difficulty, seed=seed, reasoning_share=reasoning_share)
    out.print(f"wrote {n} {difficulty} {task} problems to {escape(str(path))}")


@data_app.command("stats")
def data_stats_cmd(
    data_dir: Annotated[Path, typer.Argument(help="A `data clean` output folder.")],
    tokenizer: Annotated[
        Path | None, typer.Option(help="Tokenizer folder; default: the recipe's model.")
    ] = None,
    recipe: Annotated[
        Path | None, typer.Option(help="Recipe (train.max_seq_length, the model's tokenizer).")
    ] = None,
    overrides: SetOption = None,
) -> None:
    """Token-length histograms of a cleaned data folder, truncation at max_seq_length, and packing fill."""
    from r1kit.data.stats import data_stats
    from r1kit.models.load import load_tokenizer

    config = load_recipe_for(recipe, overrides)
    tokenizer_dir = tokenizer or config.model.tokenizer or config.model.path
    if tokenizer_dir is None:
        raise UserError(
            "no tokenizer: pass --tokenizer DIR (or set model.tokenizer / model.path in the recipe)"
        )
    seq_length = config.train.max_seq_length
    report = data_stats(
        data_dir,
        load_tokenizer(tokenizer_dir, trust_remote_code=config.model.trust_remote_code),
        max_seq_length=seq_length,
        assistant_only_loss=config.train.assistant_only_loss,
    )
    if not report:
        raise UserError(
            f"{data_dir} holds no train/ or validation/ Parquet shards: run `r1kit data clean` first"
        )
    for split, stats in report.items():
        largest = max(count for _, count in stats["histogram"]) or 1
        table = Table(
            "tokens",
            "examples",
            "",
            title=f"{split}: {stats['examples']} examples, {stats['tokens']} tokens",
            title_justify="left",
        )
        for label, count in stats["histogram"]:
            table.add_row(label, str(count), "█" * round(30 * count / largest))
        out.print(table)
        cut = stats["at_max_seq_length"]
        percentiles = ", ".join(f"{k} {v}" for k, v in stats["percentiles"].items())
        out.print(
            f"  {percentiles}; at max_seq_length {seq_length}: {cut['num_truncated']} truncated, "
            f"{cut['num_dropped_no_trainable_tokens']} left without trainable tokens; packed into "
            f"{stats['packed_rows']} rows, {100 * stats['packing_fill']:.0f}% full"
        )
