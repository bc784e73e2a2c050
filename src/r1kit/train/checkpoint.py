"""Checkpoints that are never half-written, and which ones to keep.

The trainer writes each checkpoint into `checkpoints/.staging/`; once every process has written its part
(its random state, its shards: a barrier), the main process flushes the files to disk and renames the folder
to `checkpoints/<step>` (a rename within one file system is atomic), so a crash mid-save leaves no folder that
`--resume auto` could pick up. Each published checkpoint records the tracked metric at its step, its name and
direction, and the number of processes that wrote it (`r1kit_checkpoint.json`), so retention and the choice
of the best survive a resume.

`--resume auto` takes the newest checkpoint that checks out (`problem`: its files are all there and readable)
and says which ones it passes over; a step whose re-publishing was cut between its two renames is put back.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from r1kit.dist import print0
from r1kit.publish import publish_dir, restore_interrupted

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
    """The newest checkpoint that checks out; the newer ones that do not are named and passed over."""
    if checkpoint_dir(run_dir).is_dir():
        restore_interrupted(checkpoint_dir(run_dir))
    checkpoints = complete_checkpoints(run_dir)
    for step in sorted(checkpoints, reverse=True):
        trouble = problem(checkpoints[step])
        if trouble is None:
            return checkpoints[step]
        print0(f"[yellow]passing over checkpoint {checkpoints[step]}: {trouble}[/yellow]")
    return None


def problem(path: Path) -> str | None:
    """Why the checkpoint at `path` cannot be resumed from, or None: its records name its step, every process
    that wrote it left its random state, no file is empty, and safetensors files open."""
    try:
        info = json.loads((path / INFO_FILE).read_text())
        state = json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError) as error:
        return f"its records do not read ({error})"
    if info.get("step") != int(path.name) or state.get("global_step") != int(path.name):
        return "its records are of another step"
    processes = info.get("processes")  # unrecorded by checkpoints of earlier r1kit releases: not checked
    missing = [name for name in _random_state_files(processes) if not (path / name).is_file()]
    if missing:
        return f"{', '.join(missing)} missing (written by {processes} processes)"
    for file in path.rglob("*"):
        if file.is_file() and file.stat().st_size == 0:
            return f"{file.relative_to(path)} is empty"
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(file), framework="pt"):
                    pass
            except Exception as error:  # noqa: BLE001 - any reason it does not open is why it is passed over
                return f"{file.relative_to(path)} does not open ({error})"
    return None


def _random_state_files(processes: int | None) -> list[str]:
    """The random states the trainer saves with a checkpoint: one per process (unknown count: none checked)."""
    if processes is None:
        return []
    return ["rng_state.pth"] if processes == 1 else [f"rng_state_{k}.pth" for k in range(processes)]


def publish(
    staged: Path,
    run_dir: Path,
    step: int,
    metric: float | None,
    *,
    metric_name: str | None = None,
    greater_is_better: bool | None = None,
    processes: int = 1,
) -> Path:
    """Move a fully written checkpoint from the staging area to `checkpoints/<step>`, flushed to disk."""
    info = {
        "step": step,
        "metric": metric,
        "metric_name": metric_name,
        "greater_is_better": greater_is_better,
        "processes": processes,
    }
    (staged / INFO_FILE).write_text(json.dumps(info))
    # The same step may be saved again (e.g. on a signal right after a scheduled save): replaced whole.
    return publish_dir(staged, checkpoint_dir(run_dir) / str(step), durable=True)


def metric_of(path: Path) -> float | None:
    """The tracked metric at the checkpoint's step; None when it was not measured or is not a number."""
    try:
        value = json.loads((path / INFO_FILE).read_text())["metric"]
    except (OSError, KeyError, ValueError):
        return None
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def direction_of(path: Path) -> bool | None:
    """Whether the checkpoint's metric is better when greater, as recorded when it was published."""
    try:
        return json.loads((path / INFO_FILE).read_text()).get("greater_is_better")
    except (OSError, ValueError):
        return None


def best_checkpoint(run_dir: Path, greater_is_better: bool) -> Path | None:
    """The checkpoint with the best finite metric (ties: the later), in the direction recorded with it (else
    `greater_is_better`); None when none has one."""
    checkpoints = complete_checkpoints(run_dir)
    scored = {step: metric_of(path) for step, path in checkpoints.items()}
    scored = {step: m for step, m in scored.items() if m is not None}
    if not scored:
        return None
    recorded = {direction_of(checkpoints[step]) for step in scored} - {None}
    greater = recorded.pop() if len(recorded) == 1 else greater_is_better
    step = max(scored, key=lambda s: (scored[s] if greater else -scored[s], s))
    return checkpoints[step]


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
