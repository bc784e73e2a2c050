"""Ingest: files of any common format and record shape → r1kit records, streaming.

Formats: JSONL, JSON (a list, or an object holding the list under `data`), Parquet, CSV, plain text.
Shapes, detected per record after the recipe's field mapping:

| shape | fields | becomes |
|---|---|---|
| chat | `messages` [{role, content}] or ShareGPT `conversations` [{from, value}], optional `system` | chat |
| alpaca | `instruction`, optional `input`, `output` | chat |
| input/output | `input` + `output`, `prompt` + `completion`/`response` | chat |
| problem | `question`/`problem` + `answer`/`solution` (GSM8K `#### 42`, MATH `\\boxed{}`) | problem, gold answer |
| text | `text` (and plain-text files) | text |

Reasoning traces come as a `reasoning`/`reasoning_content`/`thinking` field or as `<think>…</think>` inside
the answer; both end up in the assistant message's `reasoning`. Anything unreadable becomes a rejected row
naming the file and line, so the report accounts for every input.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from r1kit.data.records import message, new_record, rejected_record
from r1kit.errors import UserError
from r1kit.r1format import THINK_CLOSE, THINK_OPEN, last_boxed, split_gsm8k, split_reasoning


class Span(NamedTuple):
    """A block of a file, read on its own (see `spans`)."""

    start: int
    """First byte (line formats) or row group (Parquet)."""
    end: int
    """End byte or row group, exclusive."""
    first: int
    """Number of the block's first line, or index of its first row. A block holds no more records than the next
    block's `first` is past its own, so `first` + a record's position in its block orders the file's records."""


FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".csv": "csv",
    ".txt": "text",
    ".md": "text",
}
REASONING_FIELDS = ("reasoning", "reasoning_content", "thinking")
ROLE_NAMES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "system": "system",
}
EXPECTED_SHAPES = (
    "messages | conversations | instruction+output | input+output | prompt+completion "
    "| prompt+response | question+answer | problem+answer | problem+solution | text"
)
SHAPE_FIELDS = frozenset(
    {
        "messages",
        "conversations",
        "system",
        "instruction",
        "input",
        "output",
        "prompt",
        "completion",
        "response",
        "question",
        "problem",
        "answer",
        "solution",
        "text",
        *REASONING_FIELDS,
    }
)


class Malformed(Exception):
    """A record that cannot be converted: `reason` is the report key, the message says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


# ----------------------------------------------------------------------------------------------- shapes


def _text(value: Any, field: str) -> str:
    if value is None:
        raise Malformed("empty_field", f"field {field!r} is empty")
    text = (
        value
        if isinstance(value, str)
        else json.dumps(value, ensure_ascii=False)
        if isinstance(value, (dict, list))
        else str(value)
    )
    if not text.strip():
        raise Malformed("empty_field", f"field {field!r} is empty")
    return text


def _assistant(content: str, reasoning: str | None) -> dict:
    """An assistant message; a `<think>` block inside the content becomes its reasoning."""
    if reasoning is None and (THINK_OPEN in content or THINK_CLOSE in content):
        reasoning, content = split_reasoning(
            content
        )  # an empty think block stays "" (answered without thinking)
    return message("assistant", content, reasoning)


def _reasoning_of(obj: dict) -> str | None:
    for field in REASONING_FIELDS:
        if obj.get(field):
            return _text(obj[field], field)
    return None


def _chat_messages(items: Any, field: str) -> list[dict]:
    if not isinstance(items, list) or not items:
        raise Malformed("bad_messages", f"field {field!r} must be a non-empty list of messages")
    messages = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise Malformed("bad_messages", f"{field}[{i}] is not an object")
        role_field, content_field = ("from", "value") if "from" in item else ("role", "content")
        role = ROLE_NAMES.get(str(item.get(role_field, "")).lower())
        if role is None:
            raise Malformed(
                "bad_messages",
                f"{field}[{i}] has unknown role {item.get(role_field)!r} "
                f"(known: {', '.join(sorted(ROLE_NAMES))})",
            )
        content = _text(item.get(content_field), f"{field}[{i}].{content_field}")
        messages.append(
            _assistant(content, _reasoning_of(item)) if role == "assistant" else message(role, content)
        )
    if not any(m["role"] == "assistant" for m in messages):
        raise Malformed("bad_messages", f"field {field!r} has no assistant message")
    return messages


def _with_system(obj: dict, messages: list[dict]) -> list[dict]:
    if obj.get("system") and not any(m["role"] == "system" for m in messages):
        return [message("system", _text(obj["system"], "system")), *messages]
    return messages


def convert(obj: Any, source: str) -> dict:
    """One raw record (after field mapping) → an r1kit record; raises Malformed."""
    if not isinstance(obj, dict):
        raise Malformed("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    for field in ("messages", "conversations"):
        if field in obj:
            return new_record(source, "chat", messages=_with_system(obj, _chat_messages(obj[field], field)))
    if "instruction" in obj and "output" in obj:
        prompt = _text(obj["instruction"], "instruction")
        if obj.get("input"):
            prompt += "\n\n" + _text(obj["input"], "input")
        return _pair(obj, source, prompt, _text(obj["output"], "output"))
    for prompt_field, response_field in (
        ("input", "output"),
        ("prompt", "completion"),
        ("prompt", "response"),
    ):
        if prompt_field in obj and response_field in obj:
            return _pair(
                obj,
                source,
                _text(obj[prompt_field], prompt_field),
                _text(obj[response_field], response_field),
            )
    question_field = "problem" if "problem" in obj else "question" if "question" in obj else None
    if question_field and ("answer" in obj or "solution" in obj):
        return _problem(obj, source, _text(obj[question_field], question_field))
    if "text" in obj:
        return new_record(source, "text", text=_text(obj["text"], "text"))
    found = ", ".join(map(str, obj)) or "none"
    raise Malformed("unrecognised_shape", f"found fields: {found}; expected one of: {EXPECTED_SHAPES}")


def _pair(obj: dict, source: str, prompt: str, response: str) -> dict:
    messages = [message("user", prompt), _assistant(response, _reasoning_of(obj))]
    return new_record(source, "chat", messages=_with_system(obj, messages))


def _problem(obj: dict, source: str, question: str) -> dict:
    """A verifiable problem: gold answer extracted, worked solution (if any) kept as the assistant turn."""
    answer = _text(obj["answer"], "answer") if "answer" in obj else None
    solution = _text(obj["solution"], "solution") if obj.get("solution") else None
    reasoning = _reasoning_of(obj)
    gsm8k = split_gsm8k(answer) if answer and not solution else None
    if gsm8k:  # GSM8K: the worked steps are the reasoning, the number after #### the answer.
        steps, gold = gsm8k
        assistant = message("assistant", gold, reasoning or steps)
    elif (
        solution
    ):  # MATH: the solution is the response; the gold is `answer` or the solution's last \boxed{}.
        gold = answer or last_boxed(solution)
        if gold is None:
            raise Malformed("no_gold_answer", "no `answer` field and no \\boxed{} answer in `solution`")
        assistant = _assistant(solution, reasoning)
    else:  # Question and answer: the answer is both the response and, boxed or not, the gold.
        assistant = _assistant(answer, reasoning)
        gold = last_boxed(assistant["content"]) or assistant["content"].strip()
    messages = _with_system(obj, [message("user", question), assistant])
    return new_record(source, "problem", messages=messages, answer=gold)


# ------------------------------------------------------------------------------------------------ files


def _decode(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Malformed(
            "not_utf8", f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
        ) from None


def _parse_json(text: str) -> Any:
    """json.loads, with every way a document can fail to become a record as a Malformed: bad syntax, an integer
    of more digits than Python converts (4,300), nesting deeper than the parser recurses."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise Malformed(
            "malformed_json", f"not valid JSON: {exc.msg}, line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:  # int conversion limit
        raise Malformed("malformed_json", f"not usable JSON: {exc}") from None
    except RecursionError:
        raise Malformed("malformed_json", "not usable JSON: nested too deeply") from None


def _lines(path: Path, span: Span | None) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) of the file, or of the lines of `span`; line 1 without its byte-order mark."""
    start, end, first = span or (0, None, 1)
    with path.open("rb") as f:
        f.seek(start)
        for line_no, raw in enumerate(f, start=first):
            if end is not None and start >= end:
                return
            start += len(raw)
            yield line_no, raw.removeprefix(codecs.BOM_UTF8) if line_no == 1 else raw


def _jsonl(path: Path, span: Span | None = None) -> Iterator[tuple[str, Any, str | None]]:
    """(source, parsed object or Malformed, raw line) per non-blank line."""
    for line_no, raw in _lines(path, span):
        source = f"{path}:{line_no}"
        if not raw.strip():
            continue
        try:
            parsed = _parse_json(_decode(raw, source))
        except Malformed as exc:
            yield source, exc, raw.decode("utf-8", errors="replace").rstrip("\n")
            continue
        yield source, parsed, None


def spans(path: Path, block_bytes: int, text_split: str = "paragraph") -> list[Span] | None:
    """The blocks of about `block_bytes` a file can be read in, in parallel, with the sources a whole read
    gives; None for a file read whole (small, CSV or JSON, whose records may span lines, or unreadable).

    JSONL and text split by line are cut at line ends, text split by paragraph after a blank line, Parquet
    between row groups."""
    fmt = FORMATS.get(path.suffix.lower(), "text")
    size, block_bytes = (
        path.stat().st_size,
        max(block_bytes, 1),
    )  # a block of 0 bytes would seek before its start
    if size <= block_bytes or fmt in ("json", "csv") or (fmt == "text" and text_split == "file"):
        return None
    if fmt == "parquet":
        return _row_group_spans(path, block_bytes)
    blocks: list[Span] = []
    start, line = 0, 1
    with path.open("rb") as f:
        while start < size:
            f.seek(min(start + block_bytes, size) - 1)
            f.readline()  # the block ends at the end of the line it cuts ...
            if fmt == "text" and text_split == "paragraph":
                while f.readline().strip():  # ... or, for paragraphs, after the next blank line
                    pass
            end = f.tell()
            f.seek(start)
            blocks.append(Span(start, end, line))
            line += f.read(end - start).count(b"\n")
            start = end
    return blocks


def _row_group_spans(path: Path, block_bytes: int) -> list[Span] | None:
    import pyarrow.parquet as pq

    try:
        metadata = pq.ParquetFile(path).metadata
    except Exception:  # noqa: BLE001 - unreadable: read whole, where the rejection says why
        return None
    blocks: list[Span] = []
    start = size = row = first = 0
    for group in range(metadata.num_row_groups):
        size += metadata.row_group(group).total_byte_size
        row += metadata.row_group(group).num_rows
        if size >= block_bytes or group == metadata.num_row_groups - 1:
            blocks.append(Span(start, group + 1, first))
            start, size, first = group + 1, 0, row
    return blocks or None


def _json(path: Path) -> Iterator[tuple[str, Any, str | None]]:
    # A JSON document is parsed whole (use JSONL for files larger than memory).
    try:
        data = _parse_json(_decode(path.read_bytes().removeprefix(codecs.BOM_UTF8), str(path)))
    except Malformed as exc:
        yield str(path), exc, None
        return
    if isinstance(data, dict):
        lists = [k for k, v in data.items() if isinstance(v, list)]
        key = "data" if "data" in lists else lists[0] if len(lists) == 1 else None
        if key is None:
            yield (
                str(path),
                Malformed(
                    "unrecognised_shape",
                    "a JSON object must hold its records as a list under "
                    f"`data`; found keys: {', '.join(data) or 'none'}",
                ),
                None,
            )
            return
        data = data[key]
    elif not isinstance(data, list):
        data = [data]
    for index, obj in enumerate(data):
        yield f"{path}:record {index}", obj, None


_SURROGATE = re.compile("[\udc80-\udcff]")


CSV_FIELD_LIMIT = 2**31 - 1
"""The csv module's field size limit while r1kit reads (its default, 131,072 characters, is smaller than a long
worked solution; a field past it stopped the read)."""


def _csv(path: Path) -> Iterator[tuple[str, Any, str | None]]:
    # Undecodable bytes become lone surrogates (surrogateescape), so one bad row is rejected on its own and
    # the rows after it are still read. A byte-order mark is not part of the first column's name (utf-8-sig).
    # A row the csv module cannot parse stops the read: the rejection says from which line nothing was read.
    line_num = 0
    limit = csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
            reader = csv.DictReader(f)
            for row in reader:
                source = f"{path}:{reader.line_num}"
                fields = {k: v for k, v in row.items() if k is not None}
                bad = next(
                    (k for k, v in fields.items() if isinstance(v, str) and _SURROGATE.search(v)), None
                )
                if bad is not None:
                    raw = ",".join(v for v in fields.values() if isinstance(v, str))
                    yield (
                        source,
                        Malformed("not_utf8", f"field {bad!r} is not UTF-8"),
                        raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                    )
                else:
                    yield source, fields, None
                line_num = reader.line_num
    except csv.Error as exc:
        detail = f"{exc}; the rest of the file, from line {line_num + 1}, could not be read"
        yield f"{path}:{line_num + 1}", Malformed("malformed_csv", detail), None
    finally:
        csv.field_size_limit(limit)


def _parquet(path: Path, span: Span | None = None) -> Iterator[tuple[str, Any, str | None]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a corrupt file
        yield str(path), Malformed("malformed_parquet", f"not a readable Parquet file ({exc})"), None
        return
    groups = range(span.start, span.end) if span else None
    index, batches = span.first if span else 0, parquet.iter_batches(batch_size=1000, row_groups=groups)
    while True:
        try:
            batch = next(batches, None)
        except Exception as exc:  # noqa: BLE001 - a corrupt row group: pyarrow raises several types
            detail = f"unreadable from row {index} on ({exc}); the rest of the file could not be read"
            yield f"{path}:row {index}", Malformed("malformed_parquet", detail), None
            return
        if batch is None:
            return
        for obj in batch.to_pylist():
            yield f"{path}:row {index}", obj, None
            index += 1


def _plain_text(path: Path, split: str, span: Span | None = None) -> Iterator[tuple[str, Any, str | None]]:
    def chunk(start: int, lines: list[str]):
        return f"{path}:{start}", {"text": "".join(lines).strip("\n")}, None

    start, lines = span.first if span else 1, []
    for line_no, raw in _lines(path, span):
        try:
            line = _decode(raw, f"{path}:{line_no}")
        except Malformed as exc:
            yield f"{path}:{line_no}", exc, raw.decode("utf-8", errors="replace").rstrip("\n")
            continue
        if split == "line":
            if line.strip():
                yield chunk(line_no, [line])
        elif split == "paragraph" and not line.strip():
            if lines:
                yield chunk(start, lines)
            start, lines = line_no + 1, []
        else:
            if not lines:
                start = line_no
            lines.append(line)
    if lines and "".join(lines).strip():
        yield chunk(start, lines)


def read_file(
    path: Path, text_split: str = "paragraph", span: Span | None = None
) -> Iterator[tuple[str, Any, str | None]]:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt == "jsonl":
        return _jsonl(path, span)
    if fmt == "parquet":
        return _parquet(path, span)
    if fmt in ("json", "csv"):
        assert span is None, "JSON and CSV files are read whole"
        return _json(path) if fmt == "json" else _csv(path)
    return _plain_text(path, text_split, span)


def check_inputs(paths: list[str | Path]) -> list[Path]:
    """Resolve input paths (files or folders of files); a missing one is a UserError."""
    if not paths:
        raise UserError("no input files: pass --input PATH (or data.inputs in the recipe)")
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in FORMATS)
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"data input not found: {p}")
    return files


def ingest(
    paths: list[Path],
    *,
    fields: dict[str, str] | None = None,
    text_split: str = "paragraph",
    strict: bool = False,
    max_records: int | None = None,
) -> Iterator[dict]:
    """Yield one row per input record: a converted record, or a rejected row saying what was wrong.

    `fields` maps r1kit names to the input's names ({"question": "prompt_text"}); with `strict`, the first
    bad input raises a UserError instead of becoming a rejected row.
    """
    for path in paths:
        yield from ingest_file(
            path, fields=fields, text_split=text_split, strict=strict, max_records=max_records
        )


def ingest_file(
    path: Path,
    *,
    fields: dict[str, str] | None = None,
    text_split: str = "paragraph",
    strict: bool = False,
    max_records: int | None = None,
    span: Span | None = None,
) -> Iterator[dict]:
    """`ingest` of one file, or of one block of it (see `spans`)."""
    renames = {theirs: ours for ours, theirs in (fields or {}).items()}
    for count, (source, obj, raw) in enumerate(read_file(path, text_split, span)):
        if max_records is not None and count >= max_records:
            break
        try:
            if isinstance(obj, Malformed):
                raise obj
            if renames and isinstance(obj, dict):
                obj = {renames.get(k, k): v for k, v in obj.items()}
            record = convert(obj, source)
            extra = {k: v for k, v in obj.items() if k not in SHAPE_FIELDS}
            if extra:
                record["meta"] = json.dumps(extra, ensure_ascii=False, default=str)
            yield record
        except Malformed as exc:
            if strict:
                raise UserError(f"{source}: {exc} (data.strict is on)") from None
            if raw is None and not isinstance(obj, Malformed):
                raw = json.dumps(obj, ensure_ascii=False, default=str)
            yield rejected_record(source, "ingest", exc.reason, str(exc), raw)
