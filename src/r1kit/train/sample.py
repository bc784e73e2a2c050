"""`r1kit sample`: rejection sampling, the R1 recipe's bridge from RL back to SFT. Draw n completions per problem
from a model, keep the ones whose final answer checks out against the gold answer (the first, the shortest,
or all), and write them as chat records that `r1kit data clean` and `train sft` take.

Output folder: `samples.jsonl` (kept examples: the problem's messages, then the assistant's answer with its
reasoning, and the gold answer), `data/` (those cleaned: a `train.dataset` for the next SFT stage) and
`report.json` (problems, samples, kept, problems solved at least once, truncated).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from r1kit.config import Recipe
from r1kit.errors import UserError


@dataclass
class SampleReport:
    problems: int
    samples: int
    correct_samples: int
    solved_problems: int
    kept: int
    truncated: int
    keep: str


def choose(correct: list, keep: str) -> list:
    """The kept ones among a problem's correct samples (each with `.answer`, `.reasoning`)."""
    if not correct:
        return []
    if keep == "all":
        return correct
    if keep == "best":
        return correct[:1]
    return [min(correct, key=lambda s: len(s.answer) + len(s.reasoning or ""))]


def rejection_sample(recipe: Recipe, model_dir: str | Path, out_dir: str | Path) -> SampleReport:
    from r1kit.data.clean import clean
    from r1kit.engine.chats import sample_seed
    from r1kit.eval.backends import LocalBackend, Settings
    from r1kit.eval.suites import heldout
    from r1kit.tasks import check

    cfg, out_dir = recipe.sample, Path(out_dir)
    data_dir = cfg.dataset or recipe.train.dataset
    if data_dir is None:
        raise UserError(
            "r1kit sample needs problems: sample.dataset (or train.dataset), a `data clean` folder"
        )
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserError(f"{out_dir} exists and is not empty: choose a new output folder")
    problems = heldout(data_dir, cfg.limit, split="train")
    backend = LocalBackend(model_dir, trust_remote_code=recipe.model.trust_remote_code)
    try:
        settings = Settings(cfg.temperature, cfg.top_p, cfg.max_new_tokens, recipe.seed)
        chats = [p.messages for p in problems for _ in range(cfg.num_samples)]
        seeds = [sample_seed(recipe.seed, i, j) for i in range(len(problems)) for j in range(cfg.num_samples)]
        samples = backend.complete(chats, settings, seeds)
    finally:
        backend.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    kept_rows, correct_count, solved, truncated = [], 0, 0, 0
    for i, problem in enumerate(problems):
        group = samples[i * cfg.num_samples : (i + 1) * cfg.num_samples]
        truncated += sum(s.finish_reason == "length" for s in group)
        correct = [s for s in group if s.finish_reason != "length" and check(s.answer, problem)]
        correct_count += len(correct)
        solved += bool(correct)
        for sample in choose(correct, cfg.keep):
            assistant = {
                "role": "assistant",
                "content": sample.answer,
                "reasoning_content": sample.reasoning or "",
            }
            # the task's fields (countdown's numbers and target) travel on, for the verifier of the next stage
            fields = {k: v for k, v in problem.meta.items() if k not in ("messages", "answer")}
            kept_rows.append({"messages": [*problem.messages, assistant], "answer": problem.gold, **fields})
    samples_file = out_dir / "samples.jsonl"
    samples_file.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept_rows), encoding="utf-8"
    )
    report = SampleReport(
        len(problems), len(samples), correct_count, solved, len(kept_rows), truncated, cfg.keep
    )
    (out_dir / "report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    if kept_rows:
        clean([samples_file], out_dir / "data", recipe.data, seed=recipe.seed)
    return report
