"""The reference data r1kit ships and reads: the GSM8K test split, MATH-500 and the released DeepSeek-R1-Distill
tokenizer config (its chat template), each with its license, in `src/r1kit/reference/` (the JSONL files
gzipped). A clone or an installed package needs nothing beside it.

`R1KIT_SHARED_DATA` points at another copy with the same layout (`gsm8k/test.jsonl`, `math500/test.jsonl`,
plain or gzipped) and is then read instead.
"""

from __future__ import annotations

import gzip
import json
import os
from importlib import resources
from pathlib import Path
from typing import IO, Literal

from r1kit.errors import UserError

ReferenceSet = Literal["gsm8k", "math500"]


def reference_dir() -> Path:
    """The reference data folder: `$R1KIT_SHARED_DATA`, else the copy inside the package."""
    configured = os.environ.get("R1KIT_SHARED_DATA")
    if configured:
        folder = Path(configured)
        if not folder.is_dir():
            raise UserError(f"R1KIT_SHARED_DATA={configured}: no such folder")
        return folder
    return Path(str(resources.files("r1kit").joinpath("reference")))


def reference_file(name: ReferenceSet) -> Path:
    """The JSONL file of a reference set (plain or `.gz`)."""
    folder = reference_dir() / name
    for path in (folder / "test.jsonl", folder / "test.jsonl.gz"):
        if path.is_file():
            return path
    raise UserError(f"{folder} holds no test.jsonl or test.jsonl.gz (the {name} reference set)")


def open_text(path: Path) -> IO[str]:
    """A text file for reading, gunzipped on the fly when its name ends in `.gz`."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def reference_rows(name: ReferenceSet) -> list[dict]:
    """The records of a reference set, in file order."""
    path = reference_file(name)
    with open_text(path) as f:
        return [json.loads(line) for line in f if line.strip()]
