"""The problems and texts each suite evaluates on. Every suite reads local files only: GSM8K and MATH-500 from
the reference data r1kit ships (paths.py), `heldout` and `perplexity` from a `data clean` folder."""

from __future__ import annotations

import re
from pathlib import Path

from r1kit.errors import UserError
from r1kit.paths import reference_rows
from r1kit.tasks import Problem, meta_of

_CALCULATOR_NOTE = re.compile(r"<<[^>]*>>")


def gsm8k(instruction: str, limit: int | None = None) -> list[Problem]:
    rows = reference_rows("gsm8k")[:limit]
    problems = []
    for i, row in enumerate(rows):
        solution, _, gold = row["answer"].rpartition("####")
        problems.append(
            Problem(
                f"gsm8k-{i}",
                [{"role": "user", "content": f"{row['question']}\n{instruction}"}],
                gold.strip(),
                _CALCULATOR_NOTE.sub("", solution).strip(),
                task="math",
            )
        )
    return problems


def math500(instruction: str, limit: int | None = None) -> list[Problem]:
    rows = reference_rows("math500")[:limit]
    return [
        Problem(
            row["unique_id"],
            [{"role": "user", "content": f"{row['problem']}\n{instruction}"}],
            row["answer"],
            row["solution"],
            {"subject": row["subject"], "level": str(row["level"])},
            task="math",
        )
        for row in rows
    ]


def heldout(
    data_dir: str | Path | None, limit: int | None = None, split: str = "validation"
) -> list[Problem]:
    """The records of `split` with a gold answer: the conversation up to its last user turn is the prompt."""
    from r1kit.data.tokenize import chat_messages, load_split

    if data_dir is None:
        raise UserError(
            "the heldout suite needs eval.dataset (or train.dataset): a `data clean` output folder"
        )
    problems = []
    for i, row in enumerate(load_split(data_dir, split)):
        if not row["answer"]:
            continue
        messages = chat_messages(row["messages"])
        last_user = max(j for j, m in enumerate(messages) if m["role"] == "user")
        reference = messages[last_user + 1]["content"] if last_user + 1 < len(messages) else None
        meta = meta_of(row["meta"])
        task = meta.get("task")
        problems.append(
            Problem(
                f"heldout-{i}",
                messages[: last_user + 1],
                row["answer"],
                reference,
                task=str(task) if task is not None else None,
                meta=meta,
            )
        )
        if limit and len(problems) >= limit:
            break
    if not problems:
        raise UserError(f"{data_dir}: the {split} split has no problems with a gold answer")
    return problems


def perplexity_texts(
    data_dir: str | Path | None, tokenizer, limit: int | None = None
) -> tuple[list[str], str]:
    """(texts, where they came from): the validation split rendered as the model sees it in training, else
    GSM8K questions with their worked solutions."""
    if data_dir is not None:
        from r1kit.data.tokenize import chat_messages, load_split

        texts = []
        for row in load_split(data_dir, "validation"):
            if row["text"]:
                texts.append(row["text"])
            elif row["messages"]:
                texts.append(tokenizer.apply_chat_template(chat_messages(row["messages"]), tokenize=False))
        return texts[:limit], f"{data_dir} (validation split)"
    rows = reference_rows("gsm8k")[: limit or 200]
    return [
        f"{r['question']}\n{_CALCULATOR_NOTE.sub('', r['answer'])}" for r in rows
    ], "GSM8K test (question + solution)"
