"""`r1kit experiment`: GRPO against continued SFT and controls, from one checkpoint on one budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from r1kit.cli.common import OutOption, RecipeArgument, SetOption, app, load_recipe_for, out


@app.command("experiment")
def experiment_cmd(
    recipe: RecipeArgument,
    out_dir: OutOption = None,
    seeds: Annotated[int | None, typer.Option(help="Runs of every trained arm (experiment.seeds).")] = None,
    overrides: SetOption = None,
) -> None:
    """Did RL help? Arms from one SFT checkpoint (model.path) on one budget: SFT as is, SFT continued, GRPO and
    its controls, scored alike on held-out problems, with 95% intervals and a verdict."""
    from r1kit.experiment import run_experiment

    resolved = load_recipe_for(recipe, overrides, [f"experiment.seeds={seeds}"] if seeds else [])
    out_dir = out_dir or resolved.run_dir
    report = run_experiment(resolved, out_dir)
    table = Table("arm", "greedy", "pass@1", "95% CI (greedy)")
    for arm, figures in report["arms"].items():
        g, s = figures["greedy"], figures["sampled"]
        table.add_row(
            arm,
            f"{100 * g['mean']:.1f}%",
            f"{100 * s['mean']:.1f}%",
            f"{100 * g['low']:.1f}–{100 * g['high']:.1f}",
        )
    out.print(table)
    out.print(escape(report["verdict"]), highlight=False)
    out.print(f"report: {escape(str(Path(out_dir) / 'report.md'))}")
