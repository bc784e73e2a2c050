"""Where r1kit finds the reference data sets (GSM8K, MATH-500, the released R1 chat template).

They live in a `shared/data` folder beside the repository (read-only); `R1KIT_SHARED_DATA` points elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from r1kit.errors import UserError

_REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    """The reference data folder; a UserError says how to point at it when it cannot be found."""
    configured = os.environ.get("R1KIT_SHARED_DATA")
    candidates = (
        [Path(configured)]
        if configured
        else [_REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    )
    for candidate in candidates:
        if (candidate / "gsm8k" / "test.jsonl").is_file():
            return candidate
    raise UserError(
        "reference data not found (looked in " + ", ".join(str(c) for c in candidates) + "); "
        "set R1KIT_SHARED_DATA to the folder holding gsm8k/ and math500/"
    )
