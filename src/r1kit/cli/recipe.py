"""`r1kit recipe show|fields`: a resolved recipe, and what its fields mean."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from r1kit.cli.common import SetOption, load_recipe_for, out, recipe_app
from r1kit.errors import UserError


@recipe_app.command("show")
def recipe_show(
    recipe: Annotated[Path | None, typer.Argument(help="Recipe YAML; omitted: the defaults.")] = None,
    overrides: SetOption = None,
) -> None:
    """Validate a recipe (with overrides) and print it fully resolved, defaults included."""
    print(load_recipe_for(recipe, overrides).to_yaml(), end="")


@recipe_app.command("fields")
def recipe_fields(
    section: Annotated[str | None, typer.Argument(help="One section, e.g. train; omitted: all.")] = None,
) -> None:
    """List the recipe's fields with their type, default and meaning."""
    from r1kit.config import Recipe, describe_fields

    rows = describe_fields(Recipe)
    if section is not None:
        rows = [r for r in rows if r[0].split(".")[0] == section]
        if not rows:
            raise UserError(f"no recipe section {section!r}; sections: {', '.join(Recipe.model_fields)}")
    table = Table("field", "type", "default", "meaning")
    for row in rows:
        table.add_row(*map(escape, row))
    out.print(table)
