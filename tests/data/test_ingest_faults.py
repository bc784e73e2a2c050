"""Real files that once crashed `data clean` or lost records silently: each bad record is now a counted
rejection naming its file and line, and the records around it are read."""

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from r1kit.config import DataConfig
from r1kit.data import ingest as ingest_module
from r1kit.data.clean import clean
from r1kit.data.ingest import ingest

GOOD = {"question": "What is 2 + 2?", "answer": "4"}


def rows(path):
    return list(ingest([path]))


def test_json_lines_too_big_or_too_deep_for_python_are_rejected_alone(tmp_path):
    path = tmp_path / "a.jsonl"
    lines = [
        json.dumps(GOOD),
        '{"question": "big", "answer": ' + "9" * 5000 + "}",  # past Python's 4,300-digit int conversion
        '{"question": ' + "[" * 100_000 + "]" * 100_000 + ', "answer": "1"}',  # past the parser's recursion
        json.dumps(GOOD),
    ]
    path.write_text("\n".join(lines) + "\n")
    records = rows(path)
    assert [r["reject_reason"] for r in records] == [None, "malformed_json", "malformed_json", None]
    assert records[1]["source"] == f"{path}:2" and "digits" in records[1]["reject_detail"]
    assert records[2]["source"] == f"{path}:3" and "nested too deeply" in records[2]["reject_detail"]


def test_a_whole_json_document_with_a_huge_number_is_one_rejection(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[{"question": "q", "answer": ' + "1" * 5000 + "}]")
    (record,) = rows(path)
    assert record["reject_reason"] == "malformed_json"


def test_a_csv_field_over_the_csv_modules_default_limit_is_read_with_the_rows_after_it(tmp_path):
    path = tmp_path / "a.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["question", "answer"])
        writer.writerow(["long " * 40_000, "1"])  # 200,000 characters
        writer.writerow(["What is 1 + 1?", "2"])
        writer.writerow(["What is 1 + 2?", "3"])
    records = rows(path)
    assert [r["reject_reason"] for r in records] == [None, None, None]
    assert csv.field_size_limit() == 131_072  # the module's global setting is left as it was


def test_a_csv_that_stops_parsing_says_from_which_line(tmp_path, monkeypatch):
    path = tmp_path / "a.csv"
    path.write_text("question,answer\nq1,1\n" + "q2," + "x" * 50 + "\nq3,3\n")
    monkeypatch.setattr(ingest_module, "CSV_FIELD_LIMIT", 20)
    records = rows(path)
    assert [r["reject_reason"] for r in records] == [None, "malformed_csv"]
    assert (
        records[1]["source"] == f"{path}:3"
        and "from line 3, could not be read" in records[1]["reject_detail"]
    )


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".txt"])
def test_a_utf8_byte_order_mark_is_not_part_of_the_first_field(tmp_path, suffix):
    path = tmp_path / f"a{suffix}"
    body = {
        ".csv": "question,answer\r\nWhat is 2 + 2?,4\r\n",
        ".jsonl": json.dumps(GOOD) + "\n",
        ".txt": "Plain text.\n",
    }[suffix]
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    (record,) = rows(path)
    assert record["reject_reason"] is None
    assert "\ufeff" not in json.dumps(record, ensure_ascii=False)


def test_a_parquet_file_corrupt_after_its_first_row_group_keeps_its_first_rows(tmp_path):
    path = tmp_path / "a.parquet"
    table = pa.table(
        {"question": [f"What is {i} + 1?" for i in range(3000)], "answer": [str(i + 1) for i in range(3000)]}
    )
    pq.write_table(table, path, row_group_size=1000, compression="zstd")
    meta = pq.ParquetFile(path).metadata
    second = meta.row_group(1).column(0)
    data = bytearray(path.read_bytes())
    start = second.data_page_offset + 40
    data[start : start + 200] = b"\x00" * 200  # inside the second row group's compressed pages
    path.write_bytes(bytes(data))
    records = rows(path)
    assert sum(r["reject_reason"] is None for r in records) >= 1000
    assert records[-1]["reject_reason"] == "malformed_parquet"
    assert "the rest of the file could not be read" in records[-1]["reject_detail"]


def test_clean_accounts_for_every_bad_input(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text(json.dumps(GOOD) + "\n" + '{"answer": ' + "7" * 5000 + "}\n")
    result = clean(
        [jsonl], tmp_path / "out", DataConfig(semantic={"enabled": False}, validation_fraction=0.0)
    )
    report = result.report
    assert report["input_records"] == report["kept"] + sum(report["rejected"].values())
    assert report["rejected"].get("malformed_json") == 1
