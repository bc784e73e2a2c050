"""The one internal record every input shape becomes, and its Arrow schema.

A record is a conversation (`messages`, each with an optional `reasoning`), optionally with a gold `answer`
for verifiable problems, or a plain `text` for pretraining. Rejected inputs stay in the same table with
`reject_stage`/`reject_reason` set, so every input row is accounted for until the report is written; a stage
that rewrites a record's text notes it in `modified` (a JSON object of stage → what it did).
Input fields that no shape uses (a task name, a difficulty, an id) are kept as a JSON object in `meta`.
"""

from __future__ import annotations

from typing import Any

KINDS = ("chat", "problem", "text")


def features():
    """The Arrow schema (as `datasets.Features`) of a record row."""
    from datasets import Features, List, Value

    message = {"role": Value("string"), "content": Value("string"), "reasoning": Value("string")}
    return Features(
        {
            "source": Value("string"),
            "kind": Value("string"),
            "messages": List(message),
            "answer": Value("string"),
            "text": Value("string"),
            "quality": Value("int8"),
            "toxicity": Value("float32"),
            "meta": Value("string"),
            "reject_stage": Value("string"),
            "reject_reason": Value("string"),
            "reject_detail": Value("string"),
            "raw": Value("string"),
            "modified": Value("string"),
        }
    )


def message(role: str, content: str, reasoning: str | None = None) -> dict:
    return {"role": role, "content": content, "reasoning": reasoning}


def new_record(source: str, kind: str, *, messages=(), answer=None, text=None) -> dict[str, Any]:
    assert kind in KINDS, kind
    return {
        "source": source,
        "kind": kind,
        "messages": list(messages),
        "answer": answer,
        "text": text,
        "quality": None,
        "toxicity": None,
        "meta": None,
        "reject_stage": None,
        "reject_reason": None,
        "reject_detail": None,
        "raw": None,
        "modified": None,
    }


def rejected_record(
    source: str, stage: str, reason: str, detail: str, raw: str | None = None
) -> dict[str, Any]:
    """A row for an input that could not become a record (malformed line, unknown shape)."""
    row = new_record(source, "text")
    row.update(reject_stage=stage, reject_reason=reason, reject_detail=detail, raw=raw)
    return row


def reject(row: dict, stage: str, reason: str, detail: str | None = None) -> dict:
    row["reject_stage"], row["reject_reason"], row["reject_detail"] = stage, reason, detail
    return row


def full_text(row: dict) -> str:
    """All the text of a record, turns joined by newlines (what length, dedup and quality rules see)."""
    if row["kind"] == "text":
        return row["text"] or ""
    parts = []
    for m in row["messages"]:
        if m.get("reasoning"):
            parts.append(m["reasoning"])
        parts.append(m["content"] or "")
    return "\n".join(parts)


def prompt_and_response(row: dict) -> tuple[str, str] | None:
    """The last user turn and the assistant turn answering it, for question/answer checks."""
    messages = row["messages"]
    for i in range(len(messages) - 1, 0, -1):
        if messages[i]["role"] == "assistant" and messages[i - 1]["role"] == "user":
            return messages[i - 1]["content"], messages[i]["content"]
    return None


def rows_of(batch: dict[str, list]) -> list[dict]:
    """Columns of a `datasets` batch as a list of row dicts."""
    keys = list(batch)
    return [dict(zip(keys, values)) for values in zip(*(batch[k] for k in keys))]


def batch_of(rows: list[dict], keys) -> dict[str, list]:
    return {k: [row[k] for row in rows] for k in keys}
