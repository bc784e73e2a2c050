"""`r1kit plan`: memory per device, whether a run fits, time and cost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from r1kit.cli.common import SetOption, app, load_recipe_for, out
from r1kit.errors import UserError


@app.command("plan")
def plan_cmd(
    recipe: Annotated[
        Path | None, typer.Argument(help="Recipe YAML (default: the defaults with --set).")
    ] = None,
    stage: Annotated[
        str, typer.Option(help="What to plan: `sft` (also LoRA/QLoRA, pretraining) or `grpo`.")
    ] = "sft",
    device: Annotated[
        str | None, typer.Option(help="plan.device: H100, A100, RTX 4090, ..., or cpu.")
    ] = None,
    gpus_per_node: Annotated[int | None, typer.Option(help="plan.gpus_per_node.")] = None,
    nodes: Annotated[int | None, typer.Option(help="plan.nodes.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    overrides: SetOption = None,
) -> None:
    """Per-device memory, whether the run fits (and the smallest change that makes it fit), time and cost."""
    from r1kit.plan import ceil_gb, describe_hours, human_count, make_plan

    if stage not in ("sft", "grpo"):
        raise UserError(f"--stage must be sft or grpo, not {stage!r}")
    extra = [
        f"plan.{name}={value}"
        for name, value in (("device", device), ("gpus_per_node", gpus_per_node), ("nodes", nodes))
        if value is not None
    ]
    resolved = load_recipe_for(recipe, overrides, extra)
    plan = make_plan(resolved, stage)
    if as_json:
        out.print_json(json.dumps(plan.to_dict()))
        return
    m, s = plan.model, plan.setup
    moe = (
        f", {human_count(m.active_params)} active per token ({m.experts_per_token} of {m.experts} experts)"
        if m.experts
        else ""
    )
    out.print(f"model     {escape(m.name)}: {human_count(m.total_params)} parameters{moe}", highlight=False)
    method = s.method + (
        f" (rank {resolved.train.lora.r}, {human_count(m.lora_params)} trainable)"
        if s.method != "full"
        else ""
    )
    where = f"{s.gpus_per_node} x {plan.device}" + (f" x {s.nodes} nodes" if s.nodes > 1 else "")
    out.print(
        f"run       {stage} {method}, {s.strategy}, {s.precision}, micro-batch {s.micro_batch} x "
        f"{s.seq_length} tokens, gradient checkpointing {'on' if s.gradient_checkpointing else 'off'}, "
        f"on {where}",
        highlight=False,
    )
    table = Table(title="memory per device (GB)", title_justify="left")
    table.add_column("part")
    table.add_column("GB", justify="right")
    for part, gb in plan.memory_gb.items():
        table.add_row(part, ceil_gb(gb))
    capacity = f"{plan.capacity_gb:.3g}"
    table.add_row("[bold]total[/bold]", f"[bold]{ceil_gb(plan.total_gb)}[/bold] of {capacity}")
    out.print(table)
    if plan.fits:
        out.print(f"[green]fits[/green]: {ceil_gb(plan.total_gb)} of {capacity} GB per device")
    else:
        out.print(f"[bold red]does not fit[/bold red]: {ceil_gb(plan.total_gb)} of {capacity} GB per device")
        out.print(
            f"smallest change that fits: {escape(plan.fix)} ({ceil_gb(plan.fixed_total_gb)} GB)"
            if plan.fix
            else "no change r1kit tries makes it fit: use more devices or a smaller model",
            highlight=False,
        )
    if plan.hours is not None:
        out.print(
            f"time      {describe_hours(plan.hours)} for {human_count(plan.tokens)} tokens at "
            f"{100 * resolved.plan.mfu:.0f}% MFU",
            highlight=False,
        )
        for kind, cost in plan.costs.items():
            out.print(f"cost      {kind}: ${cost:,.0f}", highlight=False)
    elif plan.tokens is None:
        out.print("time      set plan.dataset_tokens or train.max_steps to estimate time and cost")
    for note in plan.notes:
        out.print(f"[yellow]note[/yellow]      {escape(note)}", highlight=False)
