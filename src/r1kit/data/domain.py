"""Domain relevance: TF-IDF cosine similarity between a record and a profile built from a few domain
documents and keywords (scikit-learn). Terms are word unigrams and bigrams with English stop words removed;
each CJK character is a word, so Chinese works without a word segmenter (its bigrams carry the words)."""

from __future__ import annotations

from pathlib import Path

from r1kit.data.dedup import exact_key
from r1kit.data.quality import words
from r1kit.data.records import full_text, reject
from r1kit.errors import UserError


def _terms(text: str) -> list[str]:
    return words(exact_key(text))


class DomainProfile:
    def __init__(self, keywords: list[str], documents: list[str]):
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

        texts = list(keywords)
        for doc in documents:
            path = Path(doc)
            if not path.is_file():
                raise UserError(f"data.domain.documents: file not found: {path}")
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
        self.vectorizer = TfidfVectorizer(
            tokenizer=_terms,
            token_pattern=None,
            lowercase=False,
            stop_words=sorted(ENGLISH_STOP_WORDS),
            ngram_range=(1, 2),
            sublinear_tf=True,
        )
        matrix = self.vectorizer.fit_transform(texts)
        centroid = matrix.mean(axis=0).A1
        self.profile = centroid / (float((centroid**2).sum()) ** 0.5 or 1.0)

    def scores(self, texts: list[str]) -> list[float]:
        vectors = self.vectorizer.transform(texts)  # rows are L2-normalised
        return [float(x) for x in vectors @ self.profile]


def check_relevance(rows: list[dict], profile: DomainProfile, min_score: float) -> None:
    todo = [row for row in rows if row["reject_reason"] is None]
    if not todo:
        return
    for row, score in zip(todo, profile.scores([full_text(r) for r in todo])):
        if score < min_score:
            reject(row, "domain", "off_domain", f"TF-IDF similarity {score:.3f} < {min_score}")
