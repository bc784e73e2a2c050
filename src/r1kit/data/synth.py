"""`r1kit data synth`: problems of a synthetic task (tasks/: arithmetic, addition in three forms, countdown), with
gold answers and worked `<think>` solutions, written as JSONL.

Each record is a line that `r1kit data clean` ingests as a problem: `question`, gold `answer`, `reasoning` (the
worked steps, the `<think>` block in SFT), `solution` (the final response, with the answer in \\boxed{}) and
`task`/`numbers`/`target` metadata for the task's verifier. Generation is deterministic per seed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from r1kit.errors import UserError
from r1kit.r1format import THINK_CLOSE, THINK_OPEN
from r1kit.tasks import DIFFICULTIES, TASKS

SYNTHETIC = [name for name, task in TASKS.items() if task.generate is not None]
"""The tasks `synthesize` can write."""


def synthesize(
    task: str,
    n: int,
    out_path: str | Path,
    *,
    difficulty: str = "medium",
    seed: int = 42,
    reasoning_share: float = 1.0,
) -> Path:
    """Write `n` problems of `task` to a JSONL file. `reasoning_share`: the fraction whose solution keeps the
    worked reasoning; the others answer after an empty think block (a *mixed* cold-start set, as in R1, so that
    RL can teach the model when reasoning pays). The problems depend on the seed only: the same seed gives the
    same problems at any share."""
    generator = TASKS[task].generate if task in TASKS else None
    if generator is None:
        raise UserError(f"unknown task {task!r}; available: {', '.join(SYNTHETIC)}")
    if difficulty not in DIFFICULTIES:
        raise UserError(f"unknown difficulty {difficulty!r}; available: {', '.join(DIFFICULTIES)}")
    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    if not 0.0 <= reasoning_share <= 1.0:
        raise UserError(f"--reasoning-share must be within [0, 1], got {reasoning_share}")
    rng, share_rng = random.Random(seed), random.Random(f"{seed}-reasoning-share")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w", encoding="utf-8") as f:
        for _ in range(n):
            record = generator(rng, DIFFICULTIES[difficulty])
            record["difficulty"] = difficulty
            if reasoning_share < 1.0 and share_rng.random() >= reasoning_share:
                record = answer_only(record)
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return out_path


def answer_only(record: dict) -> dict:
    """The record without its worked reasoning: the solution answers after an empty think block (a problem
    that has only its final answer, as most of a reasoning pool does)."""
    kept = {k: v for k, v in record.items() if k != "reasoning"}
    kept["solution"] = f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n" + record["solution"]
    return kept
