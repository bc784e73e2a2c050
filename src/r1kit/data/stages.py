"""Per-record cleaning stages: pure functions of one row and the data config, run over batches.

Each stage either returns the row (possibly with its text rewritten) or marks it rejected with a stage name,
a reason (the report key) and a detail. Rows rejected earlier pass through untouched, so a batch function can
run any subset of stages in any worker process.
"""

from __future__ import annotations

import functools
import html
import json
import re
import unicodedata
from importlib import resources
from pathlib import Path

from r1kit.data import quality
from r1kit.data.records import full_text, reject
from r1kit.errors import UserError

HTML_ELEMENTS = frozenset(
    [
        "a",
        "abbr",
        "address",
        "article",
        "aside",
        "b",
        "big",
        "blockquote",
        "body",
        "br",
        "button",
        "caption",
        "center",
        "cite",
        "code",
        "col",
        "colgroup",
        "dd",
        "del",
        "details",
        "dfn",
        "div",
        "dl",
        "dt",
        "em",
        "figcaption",
        "figure",
        "font",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "head",
        "header",
        "hr",
        "html",
        "i",
        "iframe",
        "img",
        "input",
        "ins",
        "kbd",
        "label",
        "legend",
        "li",
        "link",
        "main",
        "mark",
        "meta",
        "nav",
        "noscript",
        "ol",
        "option",
        "p",
        "pre",
        "q",
        "s",
        "samp",
        "section",
        "select",
        "small",
        "span",
        "strike",
        "strong",
        "sub",
        "summary",
        "sup",
        "table",
        "tbody",
        "td",
        "textarea",
        "tfoot",
        "th",
        "thead",
        "title",
        "tr",
        "tt",
        "u",
        "ul",
        "var",
    ]
)
"""The element names whose tags are markup: `<int>` in `std::vector<int>`, or `<think>`, is text."""
_BLOCKS = re.compile(r"<!--.*?-->|<(script|style)\b[^>]*>.*?</\1\s*>", re.DOTALL | re.IGNORECASE)
_TAG = re.compile(r"</?([A-Za-z][A-Za-z0-9]*)(?:\s[^<>]*)?/?>")
_MARKUP = re.compile(
    r"<!--|</(?:" + "|".join(sorted(HTML_ELEMENTS)) + r")\s*>|<(?:br|hr|img)\b[^<>]*>", re.IGNORECASE
)
"""What only markup has: a comment, a closing tag of an HTML element, or a void element. `a<b and c>d` has
none of these, so it is text."""
_ENCODED_TOKEN = re.compile(
    r"&(?:lt|#0*60|#x0*3c);(?:/?think|｜[^｜&<>]{1,40}｜)&(?:gt|#0*62|#x0*3e);", re.IGNORECASE
)
"""An entity-encoded `<think>`, `</think>` or R1 role marker: decoding it would forge a tag of the R1 format."""
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _map_text(row: dict, fn) -> dict:
    """Apply `fn` to every piece of text in a record."""
    if row["text"] is not None:
        row["text"] = fn(row["text"])
    for m in row["messages"]:
        m["content"] = fn(m["content"])
        if m["reasoning"] is not None:
            m["reasoning"] = fn(m["reasoning"])
    if row["answer"] is not None:
        row["answer"] = fn(row["answer"])
    return row


def normalize_unicode(row: dict, cfg) -> dict:
    if cfg.unicode_form == "none":
        return row
    form = cfg.unicode_form
    return _rewrite(row, lambda s: unicodedata.normalize(form, s), "unicode", f"{form} normalisation")


def strip_html(text: str) -> str:
    """In text with markup (see `_MARKUP`): remove comments, script/style bodies and the tags of HTML elements,
    leaving any other `<...>` (code, math, `<think>`) as written. In any text: decode entities, except those
    that spell a tag of the R1 format; drop control characters other than newline, tab and carriage return."""
    if "<" in text and _MARKUP.search(text):
        text = _BLOCKS.sub("", text)
        text = _TAG.sub(lambda tag: "" if tag.group(1).lower() in HTML_ELEMENTS else tag.group(0), text)
    if "&" in text:
        pieces = _ENCODED_TOKEN.split(text)
        tokens = _ENCODED_TOKEN.findall(text)
        text = "".join(
            html.unescape(p) + (tokens[i] if i < len(tokens) else "") for i, p in enumerate(pieces)
        )
    return _CONTROL.sub("", text)


def note_change(row: dict, stage: str, detail: str) -> None:
    """Record that `stage` rewrote the row's text (counted in the report, like rejections)."""
    changes = json.loads(row["modified"]) if row.get("modified") else {}
    changes[stage] = detail
    row["modified"] = json.dumps(changes, ensure_ascii=False)


def _rewrite(row: dict, fn, stage: str, what: str) -> dict:
    """Apply `fn` to every piece of text of the row; note the change when a piece changed."""
    changed = 0

    def apply(text: str) -> str:
        nonlocal changed
        new = fn(text)
        changed += new != text
        return new

    _map_text(row, apply)
    if changed:
        note_change(row, stage, f"{what} in {changed} field{'s' if changed > 1 else ''}")
    return row


def clean_html(row: dict, cfg) -> dict:
    if not cfg.strip_html:
        return row
    return _rewrite(row, strip_html, "html", "markup, entities or control characters removed")


def check_length(row: dict, cfg) -> dict:
    length = len(full_text(row))
    if length < cfg.min_chars or not full_text(row).strip():
        return reject(row, "length", "too_short", f"{length} characters < {cfg.min_chars}")
    if length > cfg.max_chars:
        return reject(row, "length", "too_long", f"{length} characters > {cfg.max_chars}")
    if any(not (m["content"] or "").strip() for m in row["messages"] if m["role"] != "system"):
        return reject(row, "length", "empty_turn", "a user or assistant turn is empty after cleaning")
    return row


def check_quality(row: dict, cfg) -> dict:
    if not cfg.quality.enabled:
        return row
    turns = None
    if row["kind"] != "text":
        turns = [part for m in row["messages"] for part in (m.get("reasoning"), m["content"]) if part]
    result = quality.score(full_text(row), cfg.quality, turns)
    row["quality"] = result.level
    if result.level < cfg.quality.min_level:
        return reject(row, "quality", "low_quality", f"level {result.level}: {', '.join(result.failed)}")
    return row


_WORD_CHARS = re.compile(r"\w+")


def _entry(line: str) -> tuple[str, float]:
    """A word-list line: the term, then optionally its weight as the last field (1 when absent)."""
    term, _, last = line.rpartition(" ")
    try:
        weight = float(last)
    except ValueError:
        return line, 1.0
    if not term.strip():  # the term itself is a number
        return line, 1.0
    if not 0.0 <= weight <= 1.0:
        raise UserError(
            f"toxicity word list line {line!r}: the weight after the term must be between 0 and 1"
        )
    return term.strip(), weight


@functools.cache
def _blocklist(wordlists: tuple[str, ...], extra_words: tuple[str, ...]):
    """(single words, multi-word phrases, CJK entries) of the configured lists, each a dict of the lower-cased
    term to its weight."""
    entries = [(word, 1.0) for word in extra_words]
    for name in wordlists:
        shipped = resources.files("r1kit.data").joinpath(f"wordlists/{name}.txt")
        path = shipped if shipped.is_file() else Path(name)
        if not path.is_file():
            raise UserError(f"toxicity word list {name!r}: no shipped list of that name and no such file")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip() and not line.startswith("#"):
                try:
                    entries.append(_entry(line.strip()))
                except UserError as exc:
                    raise UserError(f"{path}:{number}: {exc}") from None
    single: dict[str, float] = {}
    phrases: dict[str, float] = {}
    cjk: dict[str, float] = {}
    for term, weight in entries:
        if quality._CJK_CHAR.search(term):
            cjk[term] = weight
            continue
        spaced = " ".join(_WORD_CHARS.findall(term.lower()))
        (phrases if " " in spaced else single)[spaced] = weight
    return single, phrases, cjk


def toxicity_hits(text: str, cfg) -> dict[str, float]:
    """The distinct blocklisted terms in `text` and their weights: single words by lookup on the text's words
    (word boundaries for free), phrases on the space-joined words, CJK entries as substrings."""
    single, phrases, cjk = _blocklist(tuple(cfg.toxicity.wordlists), tuple(cfg.toxicity.extra_words))
    tokens = _WORD_CHARS.findall(text.lower())
    hits = {t: single[t] for t in tokens if t in single}
    if phrases:
        joined = f" {' '.join(tokens)} "
        hits.update((p, w) for p, w in phrases.items() if f" {p} " in joined)
    hits.update((term, w) for term, w in cjk.items() if term in text)
    return hits


def check_toxicity(row: dict, cfg) -> dict:
    """Score a record by the summed weights of the distinct blocklisted terms it holds; reject it when the score
    reaches `toxicity.threshold`. Slurs weigh 1 (one rejects); words with a common harmless sense ("retarded
    potential", "cock the hammer") weigh less, so one of them alone only lowers the score a kept record carries."""
    if not cfg.toxicity.enabled:
        return row
    hits = toxicity_hits(full_text(row), cfg)
    row["toxicity"] = round(sum(hits.values()), 3)
    if row["toxicity"] >= cfg.toxicity.threshold:
        terms = ", ".join(f"{t} ({w:g})" for t, w in sorted(hits.items(), key=lambda kv: (-kv[1], kv[0]))[:5])
        return reject(
            row, "toxicity", "toxic", f"score {row['toxicity']:g} >= {cfg.toxicity.threshold:g}: {terms}"
        )
    return row


BEFORE_DEDUP = (normalize_unicode, clean_html, check_length)
AFTER_DEDUP = (check_quality, check_toxicity)


def run(rows: list[dict], stage_fns, cfg) -> None:
    """Run `stage_fns` in order over each row, stopping at a row's first rejection."""
    for row in rows:
        for stage in stage_fns:
            if row["reject_reason"] is not None:
                break
            stage(row, cfg)
