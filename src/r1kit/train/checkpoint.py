"""Checkpoints that are never half-written, and which ones to keep.

The trainer writes each checkpoint into `checkpoints/.staging/`; only when it is complete is it renamed to
`checkpoints/<step>` (a rename within one file system is atomic), so a crash mid-save leaves no folder that
`--resume auto` could pick up. Each published checkpoint records the value of the tracked metric at its step
(`r1kit_checkpoint.json`), so retention survives a resume.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from r1kit.publish import publish_dir

STAGING = ".staging"
INFO_FILE = "r1kit_checkpoint.json"


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def complete_checkpoints(run_dir: Path) -> dict[int, Path]:
    """Published checkpoints by step (the staging area and anything not named by a step are ignored)."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return {}
    return {int(p.name): p for p in root.iterdir() if p.is_dir() and p.name.isdigit()}


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = complete_checkpoints(run_dir)
    return checkpoints[max(checkpoints)] if checkpoints else None


def publish(staged: Path, run_dir: Path, step: int, metric: float | None) -> Path:
    """Move a fully written checkpoint from the staging area to `checkpoints/<step>`."""
    (staged / INFO_FILE).write_text(json.dumps({"step": step, "metric": metric}))
    # The same step may be saved again (e.g. on a signal right after a scheduled save): replaced whole.
    return publish_dir(staged, checkpoint_dir(run_dir) / str(step))


def metric_of(path: Path) -> float | None:
    try:
        return json.loads((path / INFO_FILE).read_text())["metric"]
    except (OSError, KeyError, ValueError):
        return None


def to_delete(metrics: dict[int, float | None], keep_best: int, greater_is_better: bool) -> list[int]:
    """Steps to delete so that the latest checkpoint and the `keep_best` best of the others by metric remain
    (k + 1 folders once there are enough)."""
    if not metrics:
        return []
    latest = max(metrics)
    scored = [
        (m, step) for step, m in metrics.items() if step != latest and m is not None and not math.isnan(m)
    ]
    scored.sort(key=lambda item: (-item[0] if greater_is_better else item[0], -item[1]))
    keep = {latest} | {step for _, step in scored[:keep_best]}
    return sorted(step for step in metrics if step not in keep)


def enforce_retention(run_dir: Path, keep_best: int, greater_is_better: bool) -> list[int]:
    checkpoints = complete_checkpoints(run_dir)
    doomed = to_delete({step: metric_of(p) for step, p in checkpoints.items()}, keep_best, greater_is_better)
    for step in doomed:
        shutil.rmtree(checkpoints[step])
    return doomed
