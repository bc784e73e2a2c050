"""`r1kit data clean` end to end on small, messy, hand-written inputs."""

import json

import pyarrow.parquet as pq
import pytest

from r1kit.config import DataConfig
from r1kit.data.clean import clean
from r1kit.data.records import full_text
from r1kit.data.semantic import find_model_dir
from r1kit.errors import UserError

LONG = (
    "The train leaves the station at nine in the morning and travels north through the valley, "
    "stopping at every village along the river until it reaches the mountain town before noon, "
    "where passengers change to the old cog railway that climbs to the summit."
)


def write_jsonl(path, rows, extra: bytes = b""):
    path.write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode() + extra)
    return path


@pytest.fixture
def messy(tmp_path, reference_data):
    gsm8k_question = json.loads(open(reference_data / "gsm8k" / "test.jsonl").readline())["question"]
    main = write_jsonl(
        tmp_path / "main.jsonl",
        [
            {"question": "What is 12 + 30?", "answer": "12 + 30 = 42\n#### 42"},  # kept
            {
                "question": "<b>What</b>  is 12 + 30?",
                "answer": "12 + 30 = 42\n#### 42",
            },  # exact dup (HTML, spaces)
            {"text": LONG},  # kept
            {"text": LONG.replace("summit", "peak")},  # near dup
            {"qestion": "typo", "anwser": "5"},  # unrecognised shape
            {"input": "Say something rude", "output": "fuck off"},  # toxic
            {"question": gsm8k_question, "answer": "#### 18"},  # contaminated
            {"instruction": "Name three primes", "output": "Two, three and five are the first three primes."},
        ],
        extra=b'{"broken": \n{"text": "caf\xe9 bytes"}\n',
    )
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    csv_file = tmp_path / "more.csv"
    csv_file.write_text("prompt,response\nHow many legs does a spider have?,A spider has eight legs.\n")
    return [main, empty, csv_file]


def no_model(**kwargs) -> DataConfig:
    return DataConfig(semantic={"enabled": False}, **kwargs)


def test_report_accounts_for_every_record(tmp_path, messy):
    out = tmp_path / "out"
    result = clean(messy, out, no_model(shard_size=2, validation_fraction=0.3))
    report = json.loads((out / "report.json").read_text())
    assert report == {**result.report}
    assert report["input_records"] == 11
    assert report["input_records"] == report["kept"] + sum(report["rejected"].values())
    assert report["rejected"] == {
        "exact_duplicate": 1,
        "near_duplicate": 1,
        "unrecognised_shape": 1,
        "toxic": 1,
        "eval_overlap": 1,
        "malformed_json": 1,
        "not_utf8": 1,
    }
    assert report["kept"] == 4
    assert any("empty.jsonl holds no records" in w for w in report["warnings"])

    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == sum(report["rejected"].values())
    by_reason = {r["reason"]: r for r in rejected}
    assert by_reason["exact_duplicate"]["detail"] == f"same text as {messy[0]}:1"
    assert by_reason["near_duplicate"]["detail"].endswith(f"with {messy[0]}:3")
    assert by_reason["malformed_json"]["source"] == f"{messy[0]}:9" and by_reason["malformed_json"]["raw"]
    assert by_reason["not_utf8"]["source"] == f"{messy[0]}:10"
    # An input that never became a record is kept as it was read.
    assert json.loads(by_reason["unrecognised_shape"]["raw"]) == {"qestion": "typo", "anwser": "5"}
    assert by_reason["toxic"]["record"]["messages"][1]["content"] == "fuck off"
    assert by_reason["toxic"]["detail"] == "score 1 >= 1: fuck (1)"  # the matched term, for an audit

    kept = []
    for split in ("train", "validation"):
        shards = sorted((out / split).glob("*.parquet"))
        assert all(pq.read_metadata(s).num_rows <= 2 for s in shards)
        kept += [row for s in shards for row in pq.read_table(s).to_pylist()]
        assert sum(pq.read_metadata(s).num_rows for s in shards) == report["splits"][split]
    assert len(kept) == report["kept"]
    assert {r["kind"] for r in kept} == {"problem", "text", "chat"}
    problem = next(r for r in kept if r["kind"] == "problem")
    assert problem["answer"] == "42" and problem["messages"][0]["content"] == "What is 12 + 30?"
    assert all(1 <= r["quality"] <= 5 for r in kept)

    markdown = (out / "report.md").read_text()
    assert "| exact_duplicate | 1 |" in markdown and "empty.jsonl" in markdown


def test_rerun_replaces_outputs_and_split_is_stable(tmp_path, messy):
    out = tmp_path / "out"
    clean(messy, out, no_model(validation_fraction=0.3, shard_size=1))
    first = {p.name: p.read_bytes() for p in (out / "validation").glob("*.parquet")}
    clean(messy, out, no_model(validation_fraction=0.3, shard_size=1))
    assert {p.name: p.read_bytes() for p in (out / "validation").glob("*.parquet")} == first
    clean(messy, out, no_model(validation_fraction=0.0, shard_size=100))
    assert list((out / "validation").glob("*.parquet")) == []
    assert len(list((out / "train").glob("*.parquet"))) == 1


def test_split_follows_the_records_not_where_or_in_which_order_they_lie(tmp_path):
    def validation_texts(path, out):
        clean([path], out, no_model(validation_fraction=0.3))
        rows = [r for s in (out / "validation").glob("*.parquet") for r in pq.read_table(s).to_pylist()]
        return sorted(full_text(r) for r in rows)

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    problems = [{"question": f"What is {a} + 7?", "answer": f"#### {a + 7}"} for a in range(60)]
    first = validation_texts(write_jsonl(tmp_path / "a" / "problems.jsonl", problems), tmp_path / "out-a")
    moved = validation_texts(
        write_jsonl(tmp_path / "b" / "renamed.jsonl", problems[::-1]), tmp_path / "out-b"
    )
    assert moved == first and 5 < len(first) < 40  # ~30% of 60, the same 18 or so wherever the file is


def test_stages_can_be_turned_off(tmp_path, messy):
    report = clean(
        messy,
        tmp_path / "o",
        no_model(
            exact_dedup=False,
            near_dedup={"enabled": False},
            toxicity={"enabled": False},
            decontam={"enabled": False},
        ),
    ).report
    assert set(report["rejected"]) == {"unrecognised_shape", "malformed_json", "not_utf8"}
    assert report["kept"] == 8


def test_domain_filter(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {
                "question": "Solve the equation 3x + 5 = 20 for x.",
                "answer": "x = 5, so the answer is \\boxed{5}.",
            },
            {
                "question": "How long should I bake sourdough bread?",
                "answer": "Bake the loaf for about 45 minutes.",
            },
        ],
    )
    cfg = no_model(
        domain={
            "enabled": True,
            "keywords": ["solve the equation for x", "algebra equation answer", "integer fraction sum"],
            "min_score": 0.1,
        },
        decontam={"enabled": False},
    )
    report = clean([path], tmp_path / "o", cfg).report
    assert report["rejected"] == {"off_domain": 1}
    rejected = json.loads((tmp_path / "o" / "rejected.jsonl").read_text())
    assert "sourdough" in rejected["record"]["messages"][0]["content"]


@pytest.mark.skipif(find_model_dir(None) is None, reason="needs the `embed` extra (installed by make test)")
def test_semantic_consistency_rejects_unrelated_answers(tmp_path):
    path = write_jsonl(
        tmp_path / "s.jsonl",
        [
            {"question": "How many legs does a spider have?", "answer": "A spider has eight legs."},
            {
                "question": "How many legs does a spider have?",
                "answer": "Quarterly revenue of the firm exceeded analyst expectations in Tokyo trading.",
            },
            {"text": "Plain text has no question and passes."},
        ],
    )
    cfg = DataConfig(
        semantic={"min_similarity": 0.3},
        decontam={"enabled": False},
        exact_dedup=False,
        near_dedup={"enabled": False},
    )
    report = clean([path], tmp_path / "o", cfg).report
    assert report["rejected"] == {"off_topic_answer": 1}
    rejected = json.loads((tmp_path / "o" / "rejected.jsonl").read_text())
    assert "Quarterly" in rejected["record"]["messages"][1]["content"]


def test_missing_embedding_model_is_a_warning_not_silence(tmp_path, monkeypatch):
    import r1kit.data.semantic as semantic

    monkeypatch.setattr(semantic, "find_model_dir", lambda configured: None)
    path = write_jsonl(tmp_path / "s.jsonl", [{"question": "Q one two?", "answer": "Answer one two."}])
    result = clean([path], tmp_path / "o", DataConfig(decontam={"enabled": False}))
    assert any("semantic stage skipped" in w for w in result.warnings)
    assert any("semantic stage skipped" in w for w in result.report["warnings"])


def test_cli_clean_and_strict(cli, tmp_path, messy):
    done = cli(
        "data",
        "clean",
        "--input",
        *map(str, messy),
        "--out",
        str(tmp_path / "o"),
        "--set",
        "data.semantic.enabled=false",
        check=True,
    )
    assert "kept" in done.stdout and "exact_duplicate" in done.stdout
    assert (tmp_path / "o" / "config.yaml").is_file()
    done = cli("data", "clean", "--input", str(messy[0]), "--out", str(tmp_path / "s"), "--strict")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{messy[0]}:5: found fields: qestion, anwser" in done.stderr
    done = cli("data", "clean", "--input", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "m"))
    assert done.returncode == 2 and "data input not found" in done.stderr


def test_the_report_counts_what_each_stage_rewrote(tmp_path):
    path = tmp_path / "in.jsonl"
    rows = [
        {"question": "<p>What is <b>2 + 2</b>?</p>", "answer": "4"},
        {"question": "Is std::vector<int> a type?", "answer": "yes"},
        {"question": "What is ｆｏｕｒ plus one?", "answer": "5"},
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    result = clean([path], tmp_path / "out", DataConfig(semantic={"enabled": False}, validation_fraction=0.0))
    report = result.report
    assert report["modified"] == {"html": 1, "unicode": 1}
    assert report["modified_examples"]["html"][0]["source"] == f"{path}:1"
    assert report["kept"] == 3
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## Modified, by stage" in markdown and "| html | 1 |" in markdown


def test_spam_is_rejected_and_a_harmless_sense_is_kept_with_its_score(tmp_path):
    path = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {
                "question": "Which GPU should I buy to train a small model?",
                "answer": "Buy cheap GPUs now! " * 10,
            },
            {"question": "What is a retarded potential?", "answer": "The potential at the retarded time."},
        ],
    )
    result = clean([path], tmp_path / "out", no_model(validation_fraction=0.0))
    assert result.report["rejected"] == {"low_quality": 1} and result.report["toxicity_scored"] == 1
    kept = pq.read_table(next((tmp_path / "out" / "train").glob("*.parquet"))).to_pylist()
    assert [r["toxicity"] for r in kept] == [0.25]
    assert "1 kept record(s) hold blocklisted terms" in (tmp_path / "out" / "report.md").read_text()


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_clean_publishes_its_output_whole_or_not_at_all(tmp_path, messy, monkeypatch):
    out = tmp_path / "out"
    clean(messy, out, no_model())
    before = snapshot(out)
    # A failing run (strict mode stops at the malformed record) leaves the earlier output as it was.
    with pytest.raises(UserError, match="qestion"):
        clean(messy, out, no_model(strict=True))
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl", "main.jsonl", "more.csv", "out"]

    # While a run writes, readers of the folder still see the earlier output, complete.
    import r1kit.data.report

    seen = {}
    write_report = r1kit.data.report.write_report

    def spying(*args, **kwargs):
        seen["during"] = snapshot(out)
        return write_report(*args, **kwargs)

    monkeypatch.setattr(r1kit.data.report, "write_report", spying)
    result = clean(messy, out, no_model(shard_size=1))
    assert seen["during"] == before and result.out_dir == out
    assert len(list((out / "train").glob("*.parquet"))) > 1 and snapshot(out) != before


def test_a_clean_will_not_replace_a_folder_of_other_files(tmp_path, messy):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match=r"mine holds files that are not a `data clean` output \(notes.txt\)"):
        clean(messy, folder, no_model())
    assert (folder / "notes.txt").read_text() == "keep me"


def test_a_clean_will_not_replace_the_folder_it_runs_in(tmp_path, messy, monkeypatch):
    folder = tmp_path / "here"
    (folder / "deeper").mkdir(parents=True)
    monkeypatch.chdir(folder / "deeper")
    for out in (".", ".."):
        with pytest.raises(UserError, match="holds the current folder"):
            clean(messy, out, no_model())
    assert (folder / "deeper").is_dir()
