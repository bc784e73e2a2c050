"""`r1kit model list|init` and `r1kit tokenizer train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from r1kit.cli.common import SetOption, load_recipe_for, model_app, out, tokenizer_app
from r1kit.errors import UserError


@model_app.command("list")
def model_list() -> None:
    """List the presets `r1kit model init` can build."""
    from r1kit.models.presets import PRESETS

    table = Table("preset", "architecture", "summary")
    for preset in PRESETS.values():
        table.add_row(preset.name, preset.model_type, preset.summary)
    out.print(table)


@model_app.command("init")
def model_init(
    preset: Annotated[str, typer.Argument(help="Preset name (see `r1kit model list`).")],
    tokenizer: Annotated[Path, typer.Option(help="Tokenizer folder (from `r1kit tokenizer train`).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the new model into.")],
    seed: Annotated[int, typer.Option(help="Initialisation seed.")] = 42,
) -> None:
    """Write a randomly initialised Hugging Face model folder for PRESET."""
    from r1kit.models.create import init_model
    from r1kit.models.presets import PRESETS

    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
    result = init_model(preset, tokenizer, out_dir, seed=seed)
    out.print(f"wrote {result.out_dir}: {result.preset}, {result.num_parameters / 1e6:.2f}M parameters")


@tokenizer_app.command("train")
def tokenizer_train(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the tokenizer into.")],
    inputs: Annotated[
        list[Path] | None,
        typer.Option("--input", help="Text, JSONL, JSON, CSV or Parquet file (repeatable)."),
    ] = None,
    more_inputs: Annotated[
        list[Path] | None, typer.Argument(help="More input files.", show_default=False)
    ] = None,
    vocab_size: Annotated[
        int | None, typer.Option(help="Vocabulary size (recipe: tokenizer.vocab_size).")
    ] = None,
    type: Annotated[str | None, typer.Option(help="bpe or unigram (recipe: tokenizer.type).")] = None,
    character_coverage: Annotated[float | None, typer.Option(help="Unigram character coverage.")] = None,
    recipe: Annotated[Path | None, typer.Option(help="Recipe whose `tokenizer` section to use.")] = None,
    overrides: SetOption = None,
) -> None:
    """Train a byte-level BPE (or unigram) tokenizer with the DeepSeek-R1 tokens and chat template."""
    from r1kit.models.tokenizer import train_from_config

    flags = {"vocab_size": vocab_size, "type": type, "character_coverage": character_coverage}
    files = [str(p) for p in (inputs or []) + (more_inputs or [])]
    assignments = [f"tokenizer.{k}={v}" for k, v in flags.items() if v is not None]
    config = load_recipe_for(recipe, overrides, assignments)
    if files:
        config.tokenizer.inputs = files
    tok = config.tokenizer
    if not tok.inputs:
        raise UserError("no input files: pass --input FILE (or tokenizer.inputs in the recipe)")
    result = train_from_config(tok, out_dir)
    config.save(out_dir)
    out.print(
        f"wrote {result.out_dir}: {tok.type} vocabulary of {result.vocab_size} tokens, "
        f"trained on {result.num_texts} texts ({result.num_chars / 1e6:.2f}M characters)"
    )
