"""The `r1kit` command: parse arguments, load the recipe, call one stage function, print its result.

Run settings live in the recipe; flags are for paths, a few per-command conveniences that map onto recipe
fields, and `--set section.field=value` overrides. A mistake the user can fix exits with status 2 and one
clear message on stderr, never a traceback. One module per command group registers its commands on the apps
of `common`; none holds more than parsing, one call into r1kit and printing the result.
"""

from __future__ import annotations

import importlib
import sys

from rich.markup import escape

from r1kit.cli.common import app, err
from r1kit.errors import UserError
from r1kit.quiet import quiet_imports

__all__ = ["app", "main"]

COMMAND_GROUPS = (
    "doctor", "recipe", "model", "data", "launch", "plan", "train", "generate", "eval", "experiment", "export",
    "serve", "demo",
)  # fmt: skip
"""The modules that register commands, in the order `r1kit --help` lists them: the order of the workflow."""
for _group in COMMAND_GROUPS:
    importlib.import_module(f"r1kit.cli.{_group}")


def main() -> None:
    quiet_imports()
    try:
        app()
    except UserError as exc:
        err.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
