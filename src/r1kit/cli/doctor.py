"""`r1kit doctor`: is this machine ready to train?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from r1kit.cli.common import STATUS_STYLE, app, out
from r1kit.errors import UserError


@app.command()
def doctor(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list of {name, status, detail, fix}.")
    ] = False,
    path: Annotated[
        Path, typer.Option(help="Where data and checkpoints will go (for the disk check).")
    ] = Path("."),
    distributed: Annotated[
        bool,
        typer.Option(
            "--distributed",
            help=(
                "Also check NCCL, network interfaces and all-reduce latency/bandwidth (across the processes of "
                "`r1kit launch ... -- r1kit doctor --distributed`, else across 2 local processes)."
            ),
        ),
    ] = False,
) -> None:
    """Check this machine for training: pass/warn/fail with a one-line fix each. Exits 1 when a check fails."""
    from r1kit.dist import is_main_process
    from r1kit.doctor import FAIL, run_checks, run_distributed_checks

    if not path.is_dir():
        raise UserError(f"--path {path}: no such directory")
    checks = run_checks(path) + (run_distributed_checks() if distributed else [])
    if not is_main_process():  # under r1kit launch: every process took part in the probe; rank 0 reports
        return
    if as_json:
        print(json.dumps([c.to_dict() for c in checks], indent=2))
    else:
        table = Table("check", "status", "detail", "fix", show_lines=False)
        for c in checks:
            table.add_row(c.name, f"[{STATUS_STYLE[c.status]}]{c.status}[/]", escape(c.detail), escape(c.fix))
        out.print(table)
    if any(c.status == FAIL for c in checks):
        raise typer.Exit(1)
