"""Benchmark: `r1kit data clean` throughput and peak memory on synthetic records.

Runs every non-model stage (unicode, HTML, length, exact and near dedup, quality, toxicity, decontamination;
the embedding stage is off) on N synthetic question/answer and text records with 5% exact and 5% near
duplicates, each size in a fresh process so peak memory is measured per run, and prints records/s and peak
RSS side by side with the target of 5,000 records/s. Peak memory should stay flat as N grows: records live
in Arrow files on disk, and deduplication holds 8 bytes per record per hash column.

    python benchmarks/data_clean.py                 # 100k and 1M records
    python benchmarks/data_clean.py --sizes 20000   # a quick look
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

TARGET_RECORDS_PER_SECOND = 5000
WORDS = [
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "at",
    "from",
    "it",
    "an",
    "be",
    "this",
    "are",
    "which",
    "or",
    "have",
    "one",
    "train",
    "river",
    "number",
    "apple",
    "count",
    "total",
    "price",
    "eggs",
    "sold",
    "bought",
    "each",
    "more",
    "less",
    "half",
    "twice",
    "three",
    "four",
    "seven",
    "twelve",
    "market",
    "farmer",
    "school",
    "book",
    "page",
    "class",
    "teacher",
    "student",
    "answer",
    "question",
    "solve",
    "add",
    "minus",
    "divide",
    "times",
    "equal",
    "left",
    "right",
    "after",
    "before",
    "morning",
    "evening",
    "week",
    "month",
    "year",
    "money",
    "dollars",
    "cents",
    "garden",
    "flower",
    "tree",
    "water",
    "bottle",
    "cup",
    "glass",
    "plate",
    "table",
    "chair",
    "window",
    "door",
    "house",
    "street",
    "city",
]


def synthesize(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    previous: list[dict] = []
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            roll = rng.random()
            if previous and roll < 0.05:  # exact duplicate (up to case and spacing)
                record = dict(rng.choice(previous))
                record = {k: v.upper() if k == "text" else v for k, v in record.items()}
            elif previous and roll < 0.10:  # near duplicate: one word at the end changed
                record = dict(rng.choice(previous))
                key = "text" if "text" in record else "answer"
                record[key] = record[key].rsplit(" ", 1)[0] + " " + rng.choice(WORDS) + "s"
            elif roll < 0.6:
                question = " ".join(rng.choices(WORDS, k=rng.randint(15, 40))) + f" {i}?"
                answer = " ".join(rng.choices(WORDS, k=rng.randint(20, 60))) + f" #### {rng.randint(1, 999)}"
                record = {"question": question, "answer": answer}
            else:
                record = {"text": " ".join(rng.choices(WORDS, k=rng.randint(40, 120))) + f" {i}."}
            if len(previous) < 2000:
                previous.append(record)
            elif rng.random() < 0.01:
                previous[rng.randrange(len(previous))] = record
            f.write(json.dumps(record) + "\n")


class MemorySampler(threading.Thread):
    """Peak heap (RssAnon) of this process, and of its largest worker process.

    RssAnon counts memory a process allocated (heap, arrays), not pages of memory-mapped files: the Arrow
    tables `datasets` keeps on disk are read through mmap, and those pages are page cache the kernel drops
    under pressure, which ru_maxrss (also reported) counts. A worker's figure includes the pages it still
    shares copy-on-write with this process, so the two are reported apart rather than summed.
    """

    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        self.interval, self.running = interval, True
        self.peak_main_mib = self.peak_worker_mib = 0.0

    @staticmethod
    def heap_mib(pid: int) -> float:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
        except OSError:  # a worker that just exited
            pass
        return 0.0

    def run(self) -> None:
        me = psutil.Process()
        while self.running:
            self.peak_main_mib = max(self.peak_main_mib, self.heap_mib(me.pid))
            for child in me.children(recursive=True):
                self.peak_worker_mib = max(self.peak_worker_mib, self.heap_mib(child.pid))
            time.sleep(self.interval)


def run_one(n: int) -> dict:
    """Clean n synthetic records in this process; returns the measurements."""
    from r1kit.config import DataConfig
    from r1kit.data.clean import clean

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.jsonl"
        synthesize(data, n)
        sampler = MemorySampler()
        sampler.start()
        start = time.perf_counter()
        report = clean([data], Path(tmp) / "out", DataConfig(semantic={"enabled": False})).report
        seconds = time.perf_counter() - start
        sampler.running = False
    # ru_maxrss is in KiB on Linux; worker processes are counted separately.
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "records": n,
        "seconds": round(seconds, 1),
        "records_per_second": round(n / seconds),
        "peak_heap_mib": round(sampler.peak_main_mib),
        "peak_worker_heap_mib": round(sampler.peak_worker_mib),
        "peak_rss_mib": round(own),
        "peak_worker_rss_mib": round(workers),
        "kept": report["kept"],
        "rejected": report["rejected"],
        "stage_seconds": report["stage_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    results = []
    for n in args.sizes:
        done = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"run with {n} records failed:\n{done.stderr}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr)
    print(
        f"\n{'records':>10} {'seconds':>8} {'records/s':>10} {'vs target':>10} {'heap MiB':>9} "
        f"{'worker heap':>12} {'RSS MiB':>8} {'worker RSS':>11}"
    )
    for r in results:
        ratio = r["records_per_second"] / TARGET_RECORDS_PER_SECOND
        print(
            f"{r['records']:>10} {r['seconds']:>8} {r['records_per_second']:>10} {ratio:>9.2f}x "
            f"{r['peak_heap_mib']:>9} {r['peak_worker_heap_mib']:>12} {r['peak_rss_mib']:>8} "
            f"{r['peak_worker_rss_mib']:>11}"
        )
    print(
        f"target: {TARGET_RECORDS_PER_SECOND} records/s through all non-model stages. heap: RssAnon of the main "
        "process and of the largest worker; RSS also counts mmapped Arrow file pages (page cache)"
    )
    if len(results) > 1:
        for key in ("peak_heap_mib", "peak_worker_heap_mib", "peak_rss_mib"):
            growth = results[-1][key] / results[0][key]
            print(f"{key}: x{growth:.2f} for x{results[-1]['records'] / results[0]['records']:.0f} records")


if __name__ == "__main__":
    main()
