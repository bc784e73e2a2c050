"""`r1kit eval`: evaluate a model folder or an endpoint, or compare two evaluations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from r1kit.cli.common import SetOption, app, load_recipe_for, out
from r1kit.errors import UserError


@app.command("eval")
def eval_cmd(
    args: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[RECIPE | compare RUN_A RUN_B]",
            help="A recipe (its `eval` section), or `compare` and two eval output folders.",
        ),
    ] = None,
    model: Annotated[Path | None, typer.Option(help="Local model folder to evaluate.")] = None,
    endpoint: Annotated[
        str | None, typer.Option(help="OpenAI-compatible base URL, e.g. http://host:8000/v1.")
    ] = None,
    endpoint_model: Annotated[
        str | None, typer.Option(help="Model name at the endpoint (default: its first).")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="R1KIT_EVAL_API_KEY", help="Endpoint API key (env R1KIT_EVAL_API_KEY)."),
    ] = None,
    suite: Annotated[
        list[str] | None,
        typer.Option(help="Suite to run (repeatable): gsm8k, math500, heldout, perplexity, speed."),
    ] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Report folder (default <run>/eval).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N problems of each suite.")] = None,
    num_samples: Annotated[int | None, typer.Option(help="Samples per problem.")] = None,
    curves_from: Annotated[
        Path | None,
        typer.Option(help="Training run folder to plot curves from (default: the model's run, if any)."),
    ] = None,
    overrides: SetOption = None,
) -> None:
    """Evaluate a model folder or an endpoint: math accuracy, pass@k, BLEU/ROUGE, perplexity, speed."""
    args = args or []
    if args[:1] == ["compare"]:
        from r1kit.eval.report import compare

        if len(args) != 3:
            raise UserError("usage: r1kit eval compare RUN_A RUN_B (two eval output folders)")
        out.print(compare(args[1], args[2]), highlight=False, soft_wrap=True)
        return
    if len(args) > 1:
        raise UserError(f"expected at most one recipe, got {' '.join(args)}")
    from r1kit.eval.runner import run_eval

    flags = {"suites": f"[{','.join(suite)}]" if suite else None, "limit": limit, "num_samples": num_samples}
    recipe = load_recipe_for(
        Path(args[0]) if args else None,
        overrides,
        [f"eval.{k}={v}" for k, v in flags.items() if v is not None],
    )
    out_dir = out_dir or recipe.run_dir / "eval"
    report = run_eval(
        recipe,
        out_dir,
        model_dir=model,
        endpoint=endpoint,
        endpoint_model=endpoint_model,
        api_key=api_key,
        curves_from=curves_from,
    )
    from r1kit.eval.report import headline

    for key, value in headline(report).items():
        shown = (
            "–"
            if value is None
            else (f"{100 * value:.1f}%" if "accuracy" in key or "pass@" in key else f"{value:.3f}")
        )
        out.print(f"{key:32} {shown}", highlight=False)
    out.print(f"report: {escape(str(out_dir / 'report.md'))}")
