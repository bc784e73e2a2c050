import codecs
import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from r1kit.data.ingest import check_inputs, ingest, ingest_file, spans
from r1kit.errors import UserError
from r1kit.r1format import last_boxed, split_gsm8k


def run(path, **kwargs):
    return list(ingest([path], **kwargs))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def roles(record):
    return [m["role"] for m in record["messages"]]


def test_input_output_json_with_data_key(tmp_path):
    path = tmp_path / "seed.json"
    path.write_text(
        json.dumps({"data": [{"input": "Hi?", "output": "Hello."}, {"input": "2+2?", "output": "4"}]})
    )
    records = run(path)
    assert [r["kind"] for r in records] == ["chat", "chat"]
    assert records[1]["messages"][0]["content"] == "2+2?" and records[1]["messages"][1]["content"] == "4"
    assert records[0]["source"] == f"{path}:record 0"


def test_alpaca_with_system(tmp_path):
    path = write_jsonl(
        tmp_path / "a.jsonl",
        [
            {"instruction": "Translate to French", "input": "cat", "output": "chat", "system": "Be terse."},
            {"instruction": "Name a colour", "input": "", "output": "Blue"},
        ],
    )
    first, second = run(path)
    assert roles(first) == ["system", "user", "assistant"]
    assert first["messages"][1]["content"] == "Translate to French\n\ncat"
    assert second["messages"][0]["content"] == "Name a colour"


def test_messages_and_sharegpt_multi_turn(tmp_path):
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "S"},
                    {"role": "user", "content": "Q1"},
                    {"role": "assistant", "content": "A1"},
                    {"role": "user", "content": "Q2"},
                    {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nA2"},
                ]
            },
            {
                "conversations": [
                    {"from": "system", "value": "S"},
                    {"from": "human", "value": "Q"},
                    {"from": "gpt", "value": "A"},
                ]
            },
        ],
    )
    chat, sharegpt = run(path)
    assert roles(chat) == ["system", "user", "assistant", "user", "assistant"]
    assert chat["messages"][4] == {"role": "assistant", "content": "A2", "reasoning": "hmm"}
    assert roles(sharegpt) == ["system", "user", "assistant"] and sharegpt["messages"][2]["content"] == "A"


def test_reasoning_field(tmp_path):
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [
            {"prompt": "2+2?", "response": "4", "reasoning": "two and two"},
            {
                "messages": [
                    {"role": "user", "content": "Q"},
                    {"role": "assistant", "content": "A", "reasoning_content": "R"},
                ]
            },
        ],
    )
    first, second = run(path)
    assert first["messages"][1] == {"role": "assistant", "content": "4", "reasoning": "two and two"}
    assert second["messages"][1]["reasoning"] == "R"


def test_gsm8k_and_math_problems(reference_data):
    gsm8k = run(reference_data / "gsm8k" / "test.jsonl", max_records=3)
    assert all(r["kind"] == "problem" for r in gsm8k)
    assert gsm8k[0]["answer"] == "18"
    assistant = gsm8k[0]["messages"][1]
    assert (
        assistant["content"] == "18"
        and "<<" not in assistant["reasoning"]
        and "####" not in assistant["reasoning"]
    )
    math = run(reference_data / "math500" / "test.jsonl", max_records=5)
    source = [json.loads(line) for line in open(reference_data / "math500" / "test.jsonl")][:5]
    assert [r["answer"] for r in math] == [s["answer"] for s in source]
    assert "\\boxed" in math[0]["messages"][1]["content"]


def test_question_answer_with_boxed_or_plain(tmp_path):
    path = write_jsonl(
        tmp_path / "qa.jsonl",
        [
            {"question": "Area?", "answer": "It is $\\boxed{\\frac{1}{2}}$."},
            {"problem": "Capital of France?", "answer": "Paris"},
            {"problem": "x?", "solution": "So x is \\boxed{3}."},
        ],
    )
    boxed, plain, solution_only = run(path)
    assert boxed["answer"] == "\\frac{1}{2}" and plain["answer"] == "Paris" and solution_only["answer"] == "3"


def test_plain_text_paragraphs_and_lines(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("First paragraph\nstill first.\n\n\nSecond one.\n", encoding="utf-8")
    paragraphs = run(path)
    assert [r["text"] for r in paragraphs] == ["First paragraph\nstill first.", "Second one."]
    assert paragraphs[1]["source"] == f"{path}:5"
    assert [r["text"] for r in run(path, text_split="line")] == [
        "First paragraph",
        "still first.",
        "Second one.",
    ]
    assert len(run(path, text_split="file")) == 1


def test_csv_and_parquet(tmp_path):
    csv_path = tmp_path / "d.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["question", "answer"])
        writer.writeheader()
        writer.writerow({"question": "Multi\nline question?", "answer": "42"})
        writer.writerow({"question": "Second?", "answer": "7"})
    records = run(csv_path)
    assert [r["answer"] for r in records] == ["42", "7"]
    assert records[1]["source"] == f"{csv_path}:4"  # the row's last physical line

    parquet_path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": "alpha"}, {"text": "beta"}]), parquet_path)
    assert [r["text"] for r in run(parquet_path)] == ["alpha", "beta"]
    assert run(parquet_path)[1]["source"] == f"{parquet_path}:row 1"


def test_field_mapping(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"q_text": "Why?", "reply": "Because."}])
    (record,) = run(path, fields={"question": "q_text", "answer": "reply"})
    assert record["kind"] == "problem" and record["messages"][0]["content"] == "Why?"


def test_messy_lines_become_rejected_rows(tmp_path):
    path = tmp_path / "messy.jsonl"
    path.write_bytes(
        b'{"input": "ok", "output": "fine"}\n'
        b'{"input": "broken\n'
        b"\n"
        b'{"qestion": "typo", "anwser": "x"}\n'
        b'{"text": "caf\xe9"}\n'
        b"[1, 2]\n"
        b'{"input": "", "output": "empty input"}\n'
        b'{"messages": [{"role": "wizard", "content": "?"}]}\n'
    )
    rows = run(path)
    reasons = [(r["source"].rsplit(":", 1)[1], r["reject_reason"]) for r in rows]
    assert reasons == [
        ("1", None),
        ("2", "malformed_json"),
        ("4", "unrecognised_shape"),
        ("5", "not_utf8"),
        ("6", "not_an_object"),
        ("7", "empty_field"),
        ("8", "bad_messages"),
    ]
    typo = rows[2]
    assert (
        "found fields: qestion, anwser" in typo["reject_detail"]
        and "question+answer" in typo["reject_detail"]
    )
    assert rows[1]["raw"] == '{"input": "broken'
    assert "byte 0xe9" in rows[3]["reject_detail"]
    assert "unknown role 'wizard'" in rows[6]["reject_detail"]


def test_strict_stops_with_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"text": "fine"}, {"nothing": "here"}])
    with pytest.raises(UserError, match=r"s.jsonl:2: found fields: nothing"):
        run(path, strict=True)


def test_inputs_must_exist(tmp_path):
    with pytest.raises(UserError, match="data input not found"):
        check_inputs([tmp_path / "nope.jsonl"])
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.jsonl").write_text("")
    (tmp_path / "sub" / "notes.bin").write_text("")
    assert check_inputs([tmp_path / "sub"]) == [tmp_path / "sub" / "a.jsonl"]


def test_answer_helpers():
    assert last_boxed("a \\boxed{1} then \\boxed{\\frac{a}{b}} end") == "\\frac{a}{b}"
    assert last_boxed("no box") is None
    assert split_gsm8k("Step <<2*3=6>>6\n#### 1,234") == ("Step 6", "1,234")


def test_csv_with_a_bad_row_keeps_the_others(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"question,answer\nFirst?,1\nCaf\xe9?,2\nThird?,3\n")
    rows = run(path)
    assert [(r["source"].rsplit(":", 1)[1], r["reject_reason"]) for r in rows] == [
        ("2", None),
        ("3", "not_utf8"),
        ("4", None),
    ]
    assert "field 'question' is not UTF-8" in rows[1]["reject_detail"]


def blocks_file(tmp_path, fmt: str):
    """30-odd records; in JSONL and text with a byte-order mark, blank and malformed lines, no final newline."""
    texts = [f"record {i} " + "word " * (i % 7) for i in range(30)]
    if fmt == "parquet":
        path = tmp_path / "blocks.parquet"
        pq.write_table(pa.table({"text": texts}), path, row_group_size=4)
        return path
    if fmt == "jsonl":
        lines = [json.dumps({"text": t}) for t in texts]
        lines[3], lines[11] = "", '{"broken": '
    else:  # paragraphs of one to three lines, a line that is not UTF-8
        lines = [t if i % 3 else "" for i, t in enumerate(texts)]
    path = tmp_path / f"blocks.{'jsonl' if fmt == 'jsonl' else 'txt'}"
    body = (
        "\n".join(lines).encode()
        + b"\n"
        + (b"caf\xe9\n" if fmt != "jsonl" else b"")
        + b"the last, no newline"
    )
    path.write_bytes(codecs.BOM_UTF8 + body)
    return path


@pytest.mark.parametrize(
    "fmt,split", [("jsonl", None), ("text", "line"), ("text", "paragraph"), ("parquet", None)]
)
@pytest.mark.parametrize(
    "block_bytes", [0, 1, 40, 97]
)  # 0: data.ray.block_mb small enough to round to nothing
def test_a_file_read_in_blocks_gives_what_one_read_gives(tmp_path, fmt, split, block_bytes):
    path = blocks_file(tmp_path, fmt)
    split = split or "paragraph"
    parts = spans(path, block_bytes, split)
    assert len(parts) > 3
    assert parts[0].start == 0 and all(
        a.end == b.start for a, b in zip(parts, parts[1:])
    )  # they tile the file
    whole = run(path, text_split=split)
    blockwise = [rows for part in parts for rows in ingest_file(path, text_split=split, span=part)]
    assert blockwise == whole and len(whole) > 10
    records_per_block = [len(list(ingest_file(path, text_split=split, span=p))) for p in parts]
    assert all(
        n <= b.first - a.first for n, a, b in zip(records_per_block, parts, parts[1:])
    )  # ids stay ordered


def test_files_read_whole(tmp_path):
    small = write_jsonl(tmp_path / "small.jsonl", [{"text": "one"}])
    assert spans(small, 1000) is None
    csv_file = tmp_path / "big.csv"
    csv_file.write_text("text\n" + "a line of text\n" * 100)
    assert spans(csv_file, 10) is None  # a quoted CSV field may hold newlines
    whole_text = tmp_path / "whole.txt"
    whole_text.write_text("a line\n" * 50)
    assert spans(whole_text, 10, "file") is None and spans(whole_text, 10, "line") is not None
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not parquet" * 10)
    assert spans(broken, 10) is None  # read whole: the read's rejection says why
