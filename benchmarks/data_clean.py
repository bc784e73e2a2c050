"""Benchmark: `r1kit data clean` throughput and peak memory on synthetic records, local executor against Ray.

Runs every non-model stage (unicode, HTML, length, exact and near dedup, quality, toxicity, decontamination;
the embedding stage is off) on N synthetic question/answer and text records with 5% exact and 5% near
duplicates, with each executor (`data.executor: local`, then `ray` on a Ray instance started on this machine
with as many CPUs), each (executor, size) in a fresh process so peak memory is measured per run, and prints
records/s and peak memory side by side, with the target of 5,000 records/s for the local executor. On one
machine Ray is not expected to be faster: its figure is the cost of running on a cluster engine. Peak memory
of the local executor should stay flat as N grows: records live in Arrow files on disk, and deduplication
holds 8 bytes per record per hash column; Ray keeps its blocks in its object store (shared memory, spilled to
disk when full), counted apart.

    python benchmarks/data_clean.py                 # 100k and 1M records, both executors
    python benchmarks/data_clean.py --sizes 20000   # a quick look
    python benchmarks/data_clean.py --executors local
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
    """Peak heap (RssAnon) of this process, of its largest worker process, and of all of them together (Ray's
    raylet and workers are this process's descendants); and the largest resident shared memory (RssShmem) of
    any of them: the pages of Ray's object store in use, which every process that maps it counts once more.

    RssAnon counts memory a process allocated (heap, arrays), not pages of memory-mapped files: the Arrow
    tables `datasets` keeps on disk are read through mmap, and those pages are page cache the kernel drops
    under pressure, which ru_maxrss (also reported) counts. A worker's figure includes the pages it still
    shares copy-on-write with this process, so the two are reported apart rather than summed.
    """

    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        self.interval, self.running = interval, True
        self.peak_main_mib = self.peak_worker_mib = self.peak_total_mib = self.peak_shm_mib = 0.0

    @staticmethod
    def memory_mib(pid: int, field: str = "RssAnon:") -> float:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
        except OSError:  # a worker that just exited
            pass
        return 0.0

    def run(self) -> None:
        me = psutil.Process()
        while self.running:
            main = self.memory_mib(me.pid)
            children = [child.pid for child in me.children(recursive=True)]
            workers = [self.memory_mib(pid) for pid in children]
            self.peak_main_mib = max(self.peak_main_mib, main)
            self.peak_worker_mib = max([self.peak_worker_mib, *workers])
            self.peak_total_mib = max(self.peak_total_mib, main + sum(workers))
            shared = [self.memory_mib(pid, "RssShmem:") for pid in [me.pid, *children]]
            self.peak_shm_mib = max([self.peak_shm_mib, *shared])
            time.sleep(self.interval)


def run_one(n: int, executor: str) -> dict:
    """Clean n synthetic records in this process with `executor`; returns the measurements."""
    from r1kit.config import DataConfig
    from r1kit.data.clean import clean

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.jsonl"
        synthesize(data, n)
        sampler = MemorySampler()
        sampler.start()
        start = time.perf_counter()
        cfg = DataConfig(semantic={"enabled": False}, executor=executor)
        report = clean([data], Path(tmp) / "out", cfg).report
        seconds = time.perf_counter() - start
        sampler.running = False
    # ru_maxrss is in KiB on Linux; worker processes are counted separately.
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "executor": executor,
        "records": n,
        "seconds": round(seconds, 1),
        "records_per_second": round(n / seconds),
        "peak_heap_mib": round(sampler.peak_main_mib),
        "peak_worker_heap_mib": round(sampler.peak_worker_mib),
        "peak_total_heap_mib": round(sampler.peak_total_mib),
        "peak_shm_mib": round(sampler.peak_shm_mib),
        "peak_rss_mib": round(own),
        "peak_worker_rss_mib": round(workers),
        "kept": report["kept"],
        "rejected": report["rejected"],
        "stage_seconds": report["stage_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--executors", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--executor", default="local", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.executor)))
        return
    results = []
    for n in args.sizes:
        for executor in args.executors:
            command = [sys.executable, __file__, "--one", str(n), "--executor", executor]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{executor} run with {n} records failed:\n{done.stderr}")
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), file=sys.stderr)
    print(
        f"\n{'executor':>8} {'records':>9} {'seconds':>8} {'records/s':>10} {'vs local':>9} {'vs target':>10} "
        f"{'heap MiB':>9} {'worker heap':>12} {'all heap':>9} {'shm MiB':>8} {'RSS MiB':>8}"
    )
    local = {r["records"]: r for r in results if r["executor"] == "local"}
    for r in results:
        base = local.get(r["records"])
        versus = f"{r['records_per_second'] / base['records_per_second']:>8.2f}x" if base else f"{'-':>9}"
        ratio = r["records_per_second"] / TARGET_RECORDS_PER_SECOND
        print(
            f"{r['executor']:>8} {r['records']:>9} {r['seconds']:>8} {r['records_per_second']:>10} {versus} "
            f"{ratio:>9.2f}x {r['peak_heap_mib']:>9} {r['peak_worker_heap_mib']:>12} "
            f"{r['peak_total_heap_mib']:>9} {r['peak_shm_mib']:>8} {r['peak_rss_mib']:>8}"
        )
    same = all(
        (r["kept"], r["rejected"]) == (local[r["records"]]["kept"], local[r["records"]]["rejected"])
        for r in results
        if r["records"] in local
    )
    print(
        f"target: {TARGET_RECORDS_PER_SECOND} records/s through all non-model stages. heap: RssAnon of the main "
        "process, of the largest worker and of all processes together; shm: resident pages of shared "
        "memory (Ray's object store); RSS also counts mmapped Arrow file pages (page cache). Same kept and rejected counts on both "
        f"executors: {'yes' if same else 'NO'}"
    )
    for executor in args.executors:
        mine = [r for r in results if r["executor"] == executor]
        if len(mine) > 1:
            for key in ("peak_heap_mib", "peak_total_heap_mib"):
                growth = mine[-1][key] / max(mine[0][key], 1)
                print(
                    f"{executor} {key}: x{growth:.2f} for x{mine[-1]['records'] / mine[0]['records']:.0f} records"
                )


if __name__ == "__main__":
    main()
