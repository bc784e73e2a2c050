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


def old_dir(target: Path) -> Path:
    """Where `publish_dir` keeps the previous output while it renames the new one into place."""
    target = Path(os.path.abspath(target))
    return target.parent / f".{target.name}.old"


def publish_dir(staged: Path, target: Path, *, durable: bool = False) -> Path:
    """Replace `target` (if any) with the complete folder `staged`. The old output is first renamed aside, so a
    crash between the two renames leaves no `target` but the complete old one in `old_dir(target)`, never a
    half-written one. `durable`: flush every file and folder to disk first, and the renames after, so a power
    loss cannot leave a published folder whose files were never written."""
    target = Path(os.path.abspath(target))
    old = old_dir(target)
    shutil.rmtree(old, ignore_errors=True)
    if durable:
        fsync_tree(staged)
    if target.exists():
        os.replace(target, old)
    os.replace(staged, target)
    if durable:
        fsync_path(target.parent)
    shutil.rmtree(old, ignore_errors=True)
    return target


def restore_interrupted(parent: Path) -> list[Path]:
    """Put back every output in `parent` whose re-publishing stopped between its two renames: the old copy is
    complete, and no new one took its place. Several processes may call it at once (the second rename finds
    nothing left to move). Returns the outputs restored."""
    restored = []
    for old in Path(os.path.abspath(parent)).glob(".*.old"):
        target = old.parent / old.name[1:].removesuffix(".old")
        if old_dir(target) == old and not target.exists():
            try:
                os.replace(old, target)
                restored.append(target)
            except FileNotFoundError:
                pass
    return restored


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            fsync_path(Path(folder) / name)
        fsync_path(Path(folder))
