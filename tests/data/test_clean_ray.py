"""`data clean` on Ray Data (a local instance with 2 workers): the same output and report as the local executor,
with duplicates that lie in different read blocks and files, and with workers killed mid-run."""

import json
import os
import random
import signal
import sys
import threading
import time

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import test_clean
from test_clean import LONG, no_model, write_jsonl

from r1kit.config import DataConfig
from r1kit.data import on_ray
from r1kit.data.clean import clean
from r1kit.errors import UserError

messy = test_clean.messy  # the local executor's messy inputs, as a fixture here too
VOLATILE = ("seconds", "records_per_second", "stage_seconds", "config")


@pytest.fixture(scope="module")
def ray_instance():
    with on_ray.ray_session(DataConfig(executor="ray", ray={"num_cpus": 2})) as ray:
        yield ray


def on_ray_cfg(**kwargs) -> DataConfig:
    return no_model(executor="ray", **kwargs)


def assert_same_output(local, distributed):
    """Same report (but for timings and the executor), same rejections line by line, same Parquet shards."""
    reports = [json.loads((d / "report.json").read_text()) for d in (local, distributed)]
    assert reports[1]["config"]["executor"] == "ray"
    assert {k: v for k, v in reports[0].items() if k not in VOLATILE} == {
        k: v for k, v in reports[1].items() if k not in VOLATILE
    }
    assert (local / "rejected.jsonl").read_text() == (distributed / "rejected.jsonl").read_text()
    for split in ("train", "validation"):
        shards = [sorted(p.name for p in (d / split).glob("*.parquet")) for d in (local, distributed)]
        assert shards[0] == shards[1]
        for name in shards[0]:
            assert pq.read_table(local / split / name) == pq.read_table(distributed / split / name)
    return reports[0]


def test_ray_gives_the_local_output_with_duplicates_across_blocks_and_files(tmp_path, messy, ray_instance):
    other = write_jsonl(
        tmp_path / "other.jsonl",
        [
            {"text": LONG.replace("summit", "top")},  # near duplicate of main.jsonl:3, another file
            {"question": "what is 12 + 30", "answer": "12 + 30 = 42\n#### 42"},  # exact duplicate
            {"text": "A short note about trains that is kept."},
        ],
    )
    problems = [f"How many wheels do {n} bicycles have?" for n in range(2, 8)]
    pq.write_table(
        pa.table({"question": problems, "answer": [f"#### {2 * n}" for n in range(2, 8)]}),
        tmp_path / "problems.parquet",
        row_group_size=2,
    )
    notes = tmp_path / "notes.txt"
    notes.write_text(f"Notes on trains.\nTwo lines long.\n\n{LONG.replace('summit', 'crest')}\n\nThe end.\n")
    inputs = [*messy, other, tmp_path / "problems.parquet", notes]
    settings = dict(shard_size=2, validation_fraction=0.3, ray={"block_mb": 50 / 2**20})
    tasks = on_ray.read_tasks(inputs, on_ray_cfg(**settings))
    blocks = {path: sum(t["path"] == str(path) for t in tasks) for path in inputs}
    assert blocks[messy[0]] > 3 and blocks[notes] > 1 and blocks[tmp_path / "problems.parquet"] > 1
    clean(inputs, tmp_path / "local", no_model(**settings))
    clean(inputs, tmp_path / "ray", on_ray_cfg(**settings))
    report = assert_same_output(tmp_path / "local", tmp_path / "ray")
    assert report["rejected"]["near_duplicate"] == 3 and report["rejected"]["exact_duplicate"] == 2
    details = [json.loads(line)["detail"] for line in (tmp_path / "ray" / "rejected.jsonl").open()]
    assert any(d.endswith(f"with {messy[0]}:3") for d in details)  # found across files and blocks


def duplicated_corpus(path, records: int):
    """Random texts with exact and near copies of earlier ones spread through the file."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(300)]
    texts = []
    for i in range(records):
        if i > 10 and i % 7 == 0:
            texts.append(texts[rng.randrange(i)].upper())  # exact, once case is folded
        elif i > 10 and i % 11 == 0:
            copy = texts[rng.randrange(i)].split()
            copy[rng.randrange(len(copy))] = "changed"
            texts.append(" ".join(copy))  # near
        else:
            texts.append(" ".join(rng.choice(words) for _ in range(60)))
    return write_jsonl(path, [{"text": t} for t in texts])


class Killer(threading.Thread):
    """Kills (SIGKILL) the first Ray worker process whose title starts with each of `titles`, while it runs."""

    def __init__(self, *titles: str):
        super().__init__(daemon=True)
        self.titles, self.killed, self.done = list(titles), {}, threading.Event()

    def run(self):
        while self.titles and not self.done.is_set():
            for proc in psutil.process_iter(["pid", "cmdline"]):
                title = " ".join(proc.info["cmdline"] or [])
                match = next((t for t in self.titles if title.startswith(t)), None)
                if match:
                    os.kill(proc.info["pid"], signal.SIGKILL)
                    self.killed[match] = proc.info["pid"]
                    self.titles.remove(match)
            time.sleep(0.01)


@pytest.mark.skipif(sys.platform != "linux", reason="reads Ray's process titles")
def test_workers_killed_mid_run_lose_nothing(tmp_path, ray_instance):
    corpus = duplicated_corpus(tmp_path / "corpus.jsonl", 4000)
    settings = dict(shard_size=500, ray={"block_mb": 0.05})
    clean([corpus], tmp_path / "local", no_model(**settings))
    killer = Killer("ray::MapBatches(_read_and_prepare)", "ray::MapWorker(Project->MapBatches(_Filter))")
    killer.start()
    try:
        clean([corpus], tmp_path / "ray", on_ray_cfg(**settings))
    finally:
        killer.done.set()
    assert sorted(killer.killed) == sorted(
        ["ray::MapBatches(_read_and_prepare)", "ray::MapWorker(Project->MapBatches(_Filter))"]
    )  # a reading task and a filtering actor died mid-run
    report = assert_same_output(tmp_path / "local", tmp_path / "ray")
    assert report["input_records"] == 4000
    assert report["rejected"]["exact_duplicate"] > 400 and report["rejected"]["near_duplicate"] > 100


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_inputs_without_a_record_are_an_error_that_names_them(tmp_path, ray_instance, executor):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "blank.txt").write_text("\n\n")
    inputs = [tmp_path / "empty.jsonl", tmp_path / "blank.txt"]
    with pytest.raises(UserError, match=r"no records in the inputs \(.*empty\.jsonl, .*blank\.txt\)"):
        clean(inputs, tmp_path / "out", no_model(executor=executor))
    assert not (tmp_path / "out").exists()


def test_a_strict_run_on_ray_stops_at_the_bad_line(tmp_path, ray_instance):
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": "fine text here"}] * 3)
    path.write_text(path.read_text() + '{"broken": \n')
    with pytest.raises(UserError, match=r"in\.jsonl:4: .*data\.strict is on"):
        clean([path], tmp_path / "out", on_ray_cfg(strict=True))


def test_without_ray_installed_the_message_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": "fine text here"}])
    with pytest.raises(UserError, match=r"pip install 'r1kit\[ray\]'"):
        clean([path], tmp_path / "out", on_ray_cfg())
    assert not (tmp_path / "out").exists()


def test_the_command_runs_on_a_ray_instance_of_its_own(cli, tmp_path, messy, ray_instance):
    """Beside the Ray instance this test process holds, the command starts (and stops) one of its own."""
    done = cli(*clean_command(messy, tmp_path / "o"), "--executor", "ray", check=True)
    assert "exact_duplicate" in done.stdout and "near_duplicate" in done.stdout
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["config"]["executor"] == "ray" and report["kept"] == 4
    done = cli(*clean_command(messy, tmp_path / "b"), "--executor", "spark")
    assert done.returncode == 2 and "data.executor" in done.stderr and "Traceback" not in done.stderr


def clean_command(inputs, out):
    return [
        "data",
        "clean",
        *(f"--input={p}" for p in inputs),
        "--out",
        str(out),
        "--set",
        "data.semantic.enabled=false",
    ]
