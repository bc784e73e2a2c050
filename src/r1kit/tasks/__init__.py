"""Verifiable tasks, one module each: its generator (for synthetic tasks), its prompt and its verifier.

- `arithmetic`, `addition` (three forms), `countdown`: synthetic, generated per seed (`r1kit data synth`);
- `math`: GSM8K/MATH-style problems from files, checked by math-verify.

Every answer r1kit checks (the GRPO accuracy reward, `eval`, validation during training, rejection sampling)
goes through `check`, which picks the problem's task by name: a record's `task` field (kept by `data clean` in
its `meta`). A record that names no task, or one r1kit does not know, is checked as a math answer.

A task of your own is one module with the same parts (a `TASK = Task(name, verify, generate)`), registered
with `register` before the run (e.g. in the module that defines its reward).
"""

from __future__ import annotations

from r1kit.r1format import split_reasoning
from r1kit.tasks import addition, arithmetic, countdown, math
from r1kit.tasks.task import DIFFICULTIES, Difficulty, GoldProblems, Problem, Task, meta_of

__all__ = [
    "DIFFICULTIES",
    "TASKS",
    "Difficulty",
    "GoldProblems",
    "Problem",
    "Task",
    "check",
    "meta_of",
    "register",
    "task_of",
]

DEFAULT = math.TASK
TASKS: dict[str, Task] = {
    task.name: task for task in (arithmetic.TASK, *addition.TASKS, countdown.TASK, math.TASK)
}


def register(task: Task) -> None:
    """Make `task` known by its name (a built-in name cannot be taken)."""
    if task.name in TASKS and TASKS[task.name] is not task:
        raise ValueError(f"a task named {task.name!r} exists already")
    TASKS[task.name] = task


def task_of(problem: Problem) -> Task:
    """The task whose verifier checks `problem`: its named task, else math."""
    return TASKS.get(problem.task or "", DEFAULT)


def check(output: str, problem: Problem, problems: GoldProblems | None = None) -> bool:
    """Whether a model output (or a reference solution) solves `problem`, by its task's verifier, which sees the
    answer only (the text after the reasoning: an output cut off mid-thought has none). A gold that cannot be
    checked scores False and is counted in `problems`."""
    verdict = task_of(problem).verify(split_reasoning(output)[1], problem)
    if verdict is None:
        if problems is not None:
            problems.add(problem.gold)
        return False
    return verdict
