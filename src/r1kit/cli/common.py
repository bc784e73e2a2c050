"""What every command module shares: the Typer apps, the consoles, the common options and printers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    help="r1kit: from raw data to a served DeepSeek-R1-style reasoning model, driven by one YAML recipe.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _options(
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="Training shows validations and its closing line only, no per-step progress.",
        ),
    ] = False,
) -> None:
    """r1kit: from raw data to a served DeepSeek-R1-style reasoning model, driven by one YAML recipe."""
    if quiet:
        import os

        from r1kit.quiet import QUIET_ENV

        os.environ[QUIET_ENV] = "1"


model_app = typer.Typer(help="Create and inspect models.", no_args_is_help=True)
tokenizer_app = typer.Typer(help="Train tokenizers.", no_args_is_help=True)
recipe_app = typer.Typer(help="Check recipes and read what their fields mean.", no_args_is_help=True)
data_app = typer.Typer(help="Ingest, clean, inspect and synthesise data.", no_args_is_help=True)
train_app = typer.Typer(help="Train models: SFT, LoRA/QLoRA, pretraining, GRPO.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(tokenizer_app, name="tokenizer")
app.add_typer(recipe_app, name="recipe")
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")

out = Console()
err = Console(stderr=True)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe field, e.g. --set train.learning_rate=3e-5 (repeatable)."),
]
STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red"}


def load_recipe_for(recipe: Path | None, overrides: list[str] | None, extra: list[str] = ()):
    """The recipe (or the defaults) with the command's --set overrides, then `extra` derived from its flags."""
    from r1kit.config import load_recipe

    return load_recipe(recipe, [*(overrides or []), *extra])


RecipeArgument = Annotated[Path, typer.Argument(help="Recipe YAML.")]
OutOption = Annotated[Path | None, typer.Option("--out", help="Run folder (default: runs/<recipe name>).")]
ResumeOption = Annotated[
    str | None,
    typer.Option(help="`auto`: continue from the newest complete checkpoint; or a checkpoint folder."),
]


def print_answer(prompt: str, reasoning: str | None, answer: str) -> None:
    out.print(f"[bold]prompt[/bold]    {escape(prompt)}", highlight=False)
    if reasoning is not None:
        out.print(f"[dim]reasoning[/dim] {escape(reasoning)}", highlight=False)
    out.print(f"[bold]answer[/bold]    {escape(answer)}", highlight=False)
