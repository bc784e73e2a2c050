"""`r1kit data clean`: ingest → clean → deduplicate → filter → split, with every input accounted for.

Records stream from the input files into an Arrow table on disk (`datasets`), so memory stays bounded
whatever the input size. Each stage is a batch function run by `datasets.map` (per-record stages in worker
processes); rejected rows stay in the table with their stage and reason until the end, when kept rows are
written as sharded Parquet and rejected ones to `rejected.jsonl`. Stage order:

  ingest → unicode → html → length → exact dedup → near dedup → quality → toxicity → semantic → domain →
  decontam → train/validation split

so `report.json` satisfies `input_records == kept + sum(rejected.values())` by construction.

That is the local executor. `data.executor: ray` runs the same stage functions on Ray Data (`on_ray.py`) and
hands its rows, in the same order, to the same writer: the output and the report are the same files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import xxhash

from r1kit.config import DataConfig
from r1kit.data import dedup, stages
from r1kit.data.ingest import check_inputs, ingest
from r1kit.data.records import batch_of, features, full_text, reject, rows_of
from r1kit.dist import print0
from r1kit.errors import UserError
from r1kit.publish import fresh_staging_dir, publish_dir
from r1kit.quiet import quiet_datasets

OUTPUT_COLUMNS = ("source", "kind", "messages", "answer", "text", "quality", "toxicity", "meta")


@dataclass
class CleanResult:
    out_dir: Path
    report: dict
    warnings: list[str] = field(default_factory=list)


def _map(ds, fn, *, num_proc: int, desc: str, with_indices: bool = False, **fn_kwargs):
    """A batched map; in worker processes once there is enough work to pay for starting them."""
    return ds.map(
        fn,
        batched=True,
        batch_size=1000,
        num_proc=num_proc if len(ds) >= 4000 else None,
        with_indices=with_indices,
        fn_kwargs=fn_kwargs,
        desc=desc,
    )


def prepare_batch(batch, *, cfg: DataConfig, hashing: dict | None):
    """Pass 1 over the records: the stages before deduplication, then the dedup hash columns."""
    rows = rows_of(batch)
    stages.run(rows, stages.BEFORE_DEDUP, cfg)
    out = batch_of(rows, batch.keys())
    if hashing is not None:
        out.update(dedup.hash_rows(rows, **hashing))
    return out


@dataclass
class Duplicates:
    """Duplicate rows found between the passes, as sorted arrays (a few bytes per duplicate, cheap to send to
    worker processes). The detail naming the original's source is written with the rejected record."""

    rows: np.ndarray
    originals: np.ndarray
    similarities: np.ndarray
    """Estimated Jaccard for near duplicates; NaN for exact ones."""

    @classmethod
    def from_found(cls, found: dict[int, tuple[int, float]]) -> Duplicates:
        rows = np.array(sorted(found), dtype=np.int64)
        return cls(
            rows,
            np.array([found[r][0] for r in rows], dtype=np.int64),
            np.array([found[r][1] for r in rows], dtype=np.float32),
        )

    def position(self, index: int) -> int | None:
        pos = int(np.searchsorted(self.rows, index))
        return pos if pos < len(self.rows) and self.rows[pos] == index else None

    def mark(self, row: dict, index: int) -> None:
        pos = self.position(index)
        if pos is not None:
            if np.isnan(self.similarities[pos]):
                reject(row, "exact_dedup", "exact_duplicate")
            else:
                reject(row, "near_dedup", "near_duplicate")

    def detail(self, index: int, source_of: dict[int, str]) -> str:
        pos = self.position(index)
        original = source_of[int(self.originals[pos])]
        if np.isnan(self.similarities[pos]):
            return f"same text as {original}"
        return f"Jaccard ~{self.similarities[pos]:.2f} with {original}"


NO_DUPLICATES = Duplicates(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))


def filter_batch(batch, indices, *, cfg: DataConfig, duplicates: Duplicates, eval_ngrams: set[str] | None):
    """Pass 2: mark duplicates found between the passes, then the per-record filters and decontamination."""
    from r1kit.data.decontam import check_contamination

    rows = rows_of(batch)
    for row, index in zip(rows, indices):
        duplicates.mark(row, index)
    stages.run(rows, stages.AFTER_DEDUP, cfg)
    if eval_ngrams is not None:
        for row in rows:
            if row["reject_reason"] is None:
                check_contamination(row, eval_ngrams, cfg.decontam.ngram)
    return batch_of(rows, batch.keys())


def _take(column: pa.ChunkedArray, rows: list[int]) -> pa.Array:
    """Rows (ascending) of a chunked column, taken chunk by chunk: Arrow's own take on a chunked array
    concatenates every chunk first, which for the signature column is the whole column in memory."""
    offsets = np.cumsum([0] + [len(chunk) for chunk in column.chunks])
    rows = np.asarray(rows, dtype=np.int64)
    chunk_of = np.searchsorted(offsets, rows, side="right") - 1
    parts = [column.chunk(c).take(pa.array(rows[chunk_of == c] - offsets[c])) for c in np.unique(chunk_of)]
    return pa.concat_arrays(parts) if parts else column.chunk(0).slice(0, 0)


def _column(ds, name: str, rows=None) -> np.ndarray:
    """One column straight from the Arrow table (datasets' own column access formats row by row)."""
    assert ds._indices is None, "a selected/shuffled view would need its indices mapping"
    column = ds.data.column(name)
    column = _take(column, rows) if rows is not None else column.combine_chunks()
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):  # signatures: list<uint32>
        return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)
    return column.to_numpy(zero_copy_only=False)


def find_duplicates(ds, cfg: DataConfig) -> Duplicates:
    """Exact and verified near duplicates of earlier rows."""
    keys = _column(ds, "exact_hash")
    alive = np.flatnonzero(keys != 0)
    found: dict[int, tuple[int, float]] = {}  # row -> (original row, similarity; NaN when exact)
    if cfg.exact_dedup:
        later, first = dedup.first_of_equal(keys, alive)
        for row, original in zip(later.tolist(), first.tolist()):
            found[row] = (original, float("nan"))
        alive = np.setdiff1d(alive, later, assume_unique=True)
    if cfg.near_dedup.enabled:
        bands, _ = dedup.lsh_params(cfg.near_dedup.threshold, cfg.near_dedup.num_perm)
        candidates: dict[int, set[int]] = {}
        for b in range(bands):
            for row, original in zip(
                *(a.tolist() for a in dedup.first_of_equal(_column(ds, f"band_{b}"), alive))
            ):
                candidates.setdefault(row, set()).add(original)
        rows = sorted(candidates)
        for start in range(0, len(rows), 20_000):  # signatures of a bounded number of rows at a time
            chunk = rows[start : start + 20_000]
            needed = sorted(set(chunk).union(*(candidates[row] for row in chunk)))
            signatures = dict(zip(needed, _column(ds, "signature", needed)))
            for row in chunk:
                for original in sorted(candidates.pop(row)):
                    if original in found:  # matched a record that is itself a duplicate
                        continue
                    similarity = dedup.estimated_jaccard(signatures[row], signatures[original])
                    if similarity >= cfg.near_dedup.threshold:
                        found[row] = (original, similarity)
                        break
    return Duplicates.from_found(found) if found else NO_DUPLICATES


def _split(row: dict, fraction: float, seed: int) -> str:
    """Deterministic train/validation assignment from the record's text, folded as exact dedup folds it.

    The same data gives the same split on every rerun, wherever its files lie and in whatever order they come,
    and copies of a record that deduplication was told to keep land on the same side.
    """
    key = dedup.exact_key(full_text(row))
    bucket = xxhash.xxh64_intdigest(key.encode(), seed=seed) / 2**64
    return "validation" if bucket < fraction else "train"


class _ShardWriter:
    def __init__(self, out_dir: Path, shard_size: int, schema):
        self.out_dir, self.shard_size, self.schema = out_dir, shard_size, schema
        self.rows: list[dict] = []
        self.num_shards = 0
        self.num_rows = 0
        out_dir.mkdir(parents=True, exist_ok=True)

    def add(self, row: dict) -> None:
        self.rows.append({k: row[k] for k in OUTPUT_COLUMNS})
        if len(self.rows) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.rows:
            return
        table = pa.Table.from_pylist(self.rows, schema=self.schema)
        pq.write_table(table, self.out_dir / f"part-{self.num_shards:05d}.parquet")
        self.num_shards += 1
        self.num_rows += len(self.rows)
        self.rows = []


def _output_schema():
    import pyarrow as pa

    schema = features().arrow_schema
    return pa.schema([schema.field(name) for name in OUTPUT_COLUMNS])


def clean(inputs: list[str | Path], out_dir: str | Path, cfg: DataConfig, *, seed: int = 42) -> CleanResult:
    """Clean `inputs` into `out_dir` (train/, validation/, rejected.jsonl, report.json, report.md).

    Everything is written into a staging folder beside `out_dir` and renamed into place at the end: a reader (a
    training run) sees the earlier output or this one, never a half-written folder, and a failure leaves the
    earlier one as it was."""
    files = check_inputs(inputs)
    target = Path(out_dir)
    _check_replaceable(target)
    staged = fresh_staging_dir(target)
    try:
        result = _clean(files, staged, cfg, seed)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    result.out_dir = publish_dir(staged, target)
    return result


def _clean(files: list[Path], out_dir: Path, cfg: DataConfig, seed: int) -> CleanResult:
    from r1kit.data.report import write_report

    start = time.perf_counter()
    warnings: list[str] = []
    hashing = None
    if cfg.exact_dedup or cfg.near_dedup.enabled:
        bands, rows_per_band = dedup.lsh_params(cfg.near_dedup.threshold, cfg.near_dedup.num_perm)
        hashing = dict(
            near=cfg.near_dedup.enabled,
            num_perm=cfg.near_dedup.num_perm,
            shingle_size=cfg.near_dedup.shingle_size,
            bands=bands,
            rows_per_band=rows_per_band,
        )
    model_dir = semantic_model(cfg, warnings)
    if cfg.executor == "ray":
        from r1kit.data import on_ray

        with on_ray.ray_session(cfg) as ray:
            run = on_ray.run(ray, files, cfg, hashing, model_dir)
            t = time.perf_counter()
            counts, per_file = _write_outputs(run.rows, out_dir, cfg, seed, run.duplicates, run.source_of)
            timings = run.timings | {"write": round(time.perf_counter() - t, 3)}
    else:
        counts, per_file, timings = _clean_locally(files, out_dir, cfg, seed, hashing, model_dir)
    for path in files:
        if per_file[str(path)] == 0:
            warnings.append(f"{path} holds no records (empty file)")
    report = write_report(
        out_dir,
        counts,
        files=[str(f) for f in files],
        cfg=cfg,
        warnings=warnings,
        timings=timings,
        seconds=time.perf_counter() - start,
    )
    return CleanResult(out_dir, report, warnings)


def _clean_locally(
    files: list[Path], out_dir: Path, cfg: DataConfig, seed: int, hashing: dict | None, model_dir: Path | None
) -> tuple[dict, Counter, dict[str, float]]:
    """The stages in this machine's worker processes, over an Arrow table on disk (`datasets`)."""
    from datasets import Dataset
    from datasets.exceptions import DatasetGenerationError

    quiet_datasets()
    num_proc = cfg.num_proc or os.cpu_count() or 1
    timings: dict[str, float] = {}

    def timed(name: str, t0: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - t0, 3)
        return now

    with tempfile.TemporaryDirectory(prefix="r1kit-clean-", dir=out_dir) as tmp:
        t = time.perf_counter()

        records = 0

        def generate(paths):
            nonlocal records
            for row in ingest(
                [Path(p) for p in paths],
                fields=cfg.fields,
                text_split=cfg.text_split,
                strict=cfg.strict,
                max_records=cfg.max_records,
            ):
                records += 1
                yield row

        try:
            ds = Dataset.from_generator(
                generate,
                gen_kwargs={"paths": [str(f) for f in files]},
                features=features(),
                cache_dir=tmp,
                keep_in_memory=False,
            )
        except DatasetGenerationError as exc:  # datasets wraps what the generator raised
            if isinstance(exc.__cause__, UserError):
                raise exc.__cause__ from None
            raise
        except ValueError:
            if records == 0:  # datasets cannot make a table of nothing
                raise no_records(files) from None
            raise
        t = timed("ingest", t)
        ds = _map(ds, prepare_batch, num_proc=num_proc, desc="prepare", cfg=cfg, hashing=hashing)
        t = timed("normalise_html_length_hash", t)
        duplicates = NO_DUPLICATES
        if hashing is not None:
            duplicates = find_duplicates(ds, cfg)
            ds = ds.remove_columns(
                [c for c in ds.column_names if c in ("exact_hash", "signature") or c.startswith("band_")]
            )
            t = timed("dedup", t)
        ds = _map(
            ds,
            filter_batch,
            num_proc=num_proc,
            desc="filter",
            with_indices=True,
            cfg=cfg,
            duplicates=duplicates,
            eval_ngrams=eval_ngrams(cfg) if cfg.decontam.enabled else None,
        )
        t = timed("quality_toxicity_decontam", t)
        if model_dir is not None:
            ds = _semantic(ds, cfg, model_dir)
            t = timed("semantic", t)
        if cfg.domain.enabled:
            ds = _domain(ds, cfg)
            t = timed("domain", t)
        originals = np.unique(duplicates.originals).tolist()
        source_of = (
            dict(zip(originals, _take(ds.data.column("source"), originals).to_pylist())) if originals else {}
        )
        rows = enumerate(row for batch in ds.iter(batch_size=1000) for row in rows_of(batch))
        counts, per_file = _write_outputs(rows, out_dir, cfg, seed, duplicates, source_of)
        timings["write"] = round(time.perf_counter() - t, 3)
    return counts, per_file, timings


def no_records(files: list[Path]) -> UserError:
    shown = ", ".join(map(str, files[:5])) + (", ..." if len(files) > 5 else "")
    return UserError(f"no records in the inputs ({shown}): every file is empty or blank")


OUTPUTS = frozenset(["train", "validation", "rejected.jsonl", "report.json", "report.md", "config.yaml"])
"""What a clean folder holds (`config.yaml` is the recipe the CLI saves beside the outputs)."""


def _check_replaceable(out_dir: Path) -> None:
    """A clean replaces its output folder whole: refuse one that holds anything else (a mistyped `--out` must
    not delete a user's files)."""
    if not out_dir.exists():
        return
    here = Path.cwd()
    if here == out_dir.resolve() or out_dir.resolve() in here.parents:
        raise UserError(
            f"{out_dir} holds the current folder; a clean replaces its output folder whole, so give another"
        )
    if not out_dir.is_dir():
        raise UserError(f"{out_dir} is a file; the output of `data clean` is a folder")
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in OUTPUTS)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise UserError(
            f"{out_dir} holds files that are not a `data clean` output ({shown}); a clean replaces its output "
            "folder whole, so give a new or empty folder"
        )


def semantic_model(cfg: DataConfig, warnings: list[str]) -> Path | None:
    """The semantic stage's embedding model folder; None (and a warning) when the stage is off or has none."""
    from r1kit.data.semantic import find_model_dir

    if not cfg.semantic.enabled:
        return None
    model_dir = find_model_dir(cfg.semantic.model_dir)
    if model_dir is None:
        message = (
            "semantic stage skipped: no sentence-embedding model found "
            "(pip install 'r1kit[embed]' or set data.semantic.model_dir)"
        )
        print0(f"[yellow]warning:[/yellow] {message}")
        warnings.append(message)
    return model_dir


def _semantic(ds, cfg: DataConfig, model_dir: Path):
    from r1kit.data.semantic import Embedder, check_consistency

    embedder = Embedder(model_dir)

    def batch_fn(batch):
        rows = rows_of(batch)
        check_consistency(rows, embedder, cfg)
        return batch_of(rows, batch.keys())

    return ds.map(batch_fn, batched=True, batch_size=256, desc="semantic")


def _domain(ds, cfg: DataConfig):
    from r1kit.data.domain import DomainProfile, check_relevance

    profile = DomainProfile(cfg.domain.keywords, cfg.domain.documents)

    def batch_fn(batch):
        rows = rows_of(batch)
        check_relevance(rows, profile, cfg.domain.min_score)
        return batch_of(rows, batch.keys())

    return ds.map(batch_fn, batched=True, batch_size=1000, desc="domain")


def eval_ngrams(cfg: DataConfig) -> set[str]:
    from r1kit.data.decontam import load_eval_ngrams
    from r1kit.paths import reference_file

    if cfg.decontam.eval_sets is None:
        paths = [reference_file("gsm8k"), reference_file("math500")]
    else:
        paths = [Path(p) for p in cfg.decontam.eval_sets]
    return load_eval_ngrams(paths, cfg.decontam.ngram)


def _write_outputs(
    rows: Iterable[tuple[int, dict]],
    out_dir: Path,
    cfg: DataConfig,
    seed: int,
    duplicates: Duplicates,
    source_of: dict[int, str],
) -> tuple[dict, Counter]:
    """Kept rows → train/ and validation/ Parquet shards; rejected rows → rejected.jsonl, in the order given,
    each row with its index (the key of `duplicates`). Returns the report's counts and the rows per file."""
    per_file: Counter = Counter()
    schema = _output_schema()
    writers = {
        split: _ShardWriter(out_dir / split, cfg.shard_size, schema) for split in ("train", "validation")
    }
    rejected: Counter = Counter()
    by_stage: Counter = Counter()
    levels: Counter = Counter()
    toxicity_scored = 0
    kinds: Counter = Counter()
    examples: dict[str, list[dict]] = {}
    modified: Counter = Counter()
    modified_examples: dict[str, list[dict]] = {}
    input_records = 0
    with (out_dir / "rejected.jsonl").open("w", encoding="utf-8") as rejected_file:
        for index, row in rows:
            input_records += 1
            per_file[row["source"].rsplit(":", 1)[0]] += 1
            for stage, detail in json.loads(row["modified"] or "{}").items():
                modified[stage] += 1
                bucket = modified_examples.setdefault(stage, [])
                if len(bucket) < 3:
                    bucket.append({"source": row["source"], "detail": detail})
            if row["reject_reason"] is None:
                writers[_split(row, cfg.validation_fraction, seed)].add(row)
                kinds[row["kind"]] += 1
                if row["quality"] is not None:
                    levels[int(row["quality"])] += 1
                toxicity_scored += bool(row["toxicity"])
                continue
            if row["reject_stage"] in ("exact_dedup", "near_dedup"):
                row["reject_detail"] = duplicates.detail(index, source_of)
            rejected[row["reject_reason"]] += 1
            by_stage[row["reject_stage"]] += 1
            entry = {
                "source": row["source"],
                "stage": row["reject_stage"],
                "reason": row["reject_reason"],
                "detail": row["reject_detail"],
            }
            if row["raw"] is not None:
                entry["raw"] = row["raw"]
            else:
                entry["record"] = {k: row[k] for k in ("kind", "messages", "answer", "text", "meta")}
            rejected_file.write(json.dumps(entry, ensure_ascii=False) + "\n")
            bucket = examples.setdefault(row["reject_reason"], [])
            if len(bucket) < 3:
                bucket.append({"source": row["source"], "detail": row["reject_detail"]})
    for writer in writers.values():
        writer.flush()
    return {
        "input_records": input_records,
        "kept": sum(w.num_rows for w in writers.values()),
        "splits": {name: w.num_rows for name, w in writers.items()},
        "shards": {name: w.num_shards for name, w in writers.items()},
        "rejected": dict(rejected.most_common()),
        "rejected_by_stage": dict(by_stage.most_common()),
        "quality_levels": {str(k): levels[k] for k in sorted(levels)},
        "toxicity_scored": toxicity_scored,
        "kinds": dict(kinds),
        "examples": examples,
        "modified": dict(modified.most_common()),
        "modified_examples": modified_examples,
    }, per_file
