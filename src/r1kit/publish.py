"""Outputs that are never half-written: build a folder under a staging name beside its target, then rename it
into place (a rename within one file system is atomic).

A reader sees the previous complete output or the new complete one, never a mix; a crash leaves only the
staging folder, which the next run removes and rebuilds. Used for `data clean` folders, a run's `final/` model
and each published checkpoint.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def staging_dir(target: Path) -> Path:
    """The folder an output is built in before `publish_dir` renames it to `target`: hidden, beside it, the
    same for every process (ranks that write shards of one output agree on it)."""
    target = Path(os.path.abspath(target))  # `.` or `out/` name a folder too
    return target.parent / f".{target.name}.partial"


def fresh_staging_dir(target: Path) -> Path:
    """`staging_dir(target)`, emptied of what a crashed run left there and created."""
    staged = staging_dir(target)
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    return staged


def publish_dir(staged: Path, target: Path) -> Path:
    """Replace `target` (if any) with the complete folder `staged`. The old output is first renamed aside, so a
    crash between the two renames leaves no `target` (which a re-run redoes), never a half-written one."""
    target = Path(os.path.abspath(target))
    old = target.parent / f".{target.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staged, target)
    shutil.rmtree(old, ignore_errors=True)
    return target
