"""`data clean` on Ray Data (`data.executor: ray`): the same stages, the same output, on a cluster.

The stage functions are the local executor's (`clean.prepare_batch`, `clean.filter_batch`, the semantic and
domain checks); what changes is who runs them and how rows meet:

- **read**: one task per input file, or per block of a large JSONL, text or Parquet file (`ingest.spans`),
  each yielding prepared Arrow batches (the stages before deduplication and the dedup hashes). Every row
  gets an `id` that sorts as the local executor's row order does (file, then position in the file), so "the
  earliest copy is kept" means the same record on both executors.
- **deduplicate across the whole corpus**: exact keys and LSH band keys are shuffled by key (`groupby` on a
  hash partition of the key, so each group call gets whole partitions and pairs rows with numpy, as the local
  executor does), giving each later row its earliest match; near candidates are verified on their MinHash
  signatures, brought to each pair by two more shuffles by row id. Only the verified pairs come back to the
  driver, which settles chains (a match that is itself a duplicate does not count) in row order, as the
  local executor does.
- **filter**: the stages after deduplication run in actors (the evaluation n-grams and models load once per
  actor); rows come back to the driver in `id` order (each map keeps the order of its blocks; checked as they
  arrive) and are written by the local executor's writer, so the Parquet shards, `rejected.jsonl` and the
  report are the same files.

Ray retries the tasks of a worker that dies, and restarts its actors; a block is never dropped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from r1kit.config import DataConfig
from r1kit.data import dedup
from r1kit.data.clean import NO_DUPLICATES, Duplicates, filter_batch, no_records, prepare_batch
from r1kit.data.ingest import Span, ingest_file, spans
from r1kit.data.records import batch_of, features, rows_of
from r1kit.errors import UserError

FILE_BITS = 40
"""Row ids are (file index << 40) + (the block's first line or row + the record's position in the block):
sorted, they give the local executor's order (see `ingest.Span.first`)."""
BATCH_ROWS = 1000
PAIR = ("row", "original", "original_source")


@dataclass
class RayRun:
    """What the driver gets back: the rows in the local executor's order (id, row), the duplicates found (by
    id) and the sources of the records that duplicates copy."""

    rows: Iterator[tuple[int, dict]]
    duplicates: Duplicates
    source_of: dict[int, str]
    timings: dict[str, float]


@contextmanager
def ray_session(cfg: DataConfig):
    """Connect to the configured cluster, or start a Ray instance on this machine for the run (and stop it
    after). A process that already holds a Ray connection keeps it."""
    try:
        import ray
    except ImportError:
        raise UserError("data.executor: ray needs Ray Data: pip install 'r1kit[ray]'") from None
    import ray.data

    started = False
    if not ray.is_initialized():
        address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
        local = {} if address else {"num_cpus": cfg.ray.num_cpus or cfg.num_proc or os.cpu_count() or 1}
        try:
            ray.init(
                address=address or "local",  # a new instance, not one another program started here
                include_dashboard=False,
                log_to_driver=False,
                logging_level="WARNING",
                configure_logging=True,
                **local,
            )
        except ConnectionError as exc:
            raise UserError(f"data.ray.address {address}: cannot reach a Ray cluster there ({exc})") from None
        started = True
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # r1kit reports the stages' timings itself
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.enable_auto_log_stats = False
    # Groupby through Ray's sort-based shuffle (tasks) rather than its default hash shuffle, whose actors held
    # the CPUs its map tasks waited for (1.7x slower end to end on 2 cores, measured on this executor's first
    # version).
    context.shuffle_strategy = ray.data.context.ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    # Blocks leave each map in the order they entered it: the filtered rows come back in the read tasks' order,
    # which is the ids' order, with no sort of the whole dataset (a shuffle of every record) at the end.
    context.execution_options.preserve_order = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _schema(hashing: dict | None) -> pa.Schema:
    schema = features().arrow_schema.append(pa.field("id", pa.int64()))
    if hashing is not None:
        schema = schema.append(pa.field("exact_hash", pa.int64()))
        if hashing["near"]:
            schema = schema.append(pa.field("signature", pa.list_(pa.uint32())))
            for b in range(hashing["bands"]):
                schema = schema.append(pa.field(f"band_{b}", pa.int64()))
    return schema


def read_tasks(files: list[Path], cfg: DataConfig) -> list[dict]:
    """One read task per file, or per block of a large JSONL, text or Parquet file (`ingest.spans`); a file
    capped by `max_records` is read whole, since the cap counts from the file's start."""
    block = int(cfg.ray.block_mb * 2**20)
    tasks = []
    for index, path in enumerate(files):
        blocks = None if cfg.max_records else spans(path, block, cfg.text_split)
        for start, end, first in blocks or [(0, -1, 0)]:
            tasks.append(dict(path=str(path), file=index, start=start, end=end, first=first))
    return tasks


def _read_and_prepare(tasks: dict, *, cfg: DataConfig, hashing: dict | None, schema: pa.Schema):
    """Read each task's file or block and yield prepared Arrow batches with their row ids."""
    names = list(features())
    for path, file, start, end, first in zip(
        tasks["path"], tasks["file"], tasks["start"], tasks["end"], tasks["first"]
    ):
        span = None if end < 0 else Span(int(start), int(end), int(first))
        records = ingest_file(
            Path(path),
            fields=cfg.fields,
            text_split=cfg.text_split,
            strict=cfg.strict,
            max_records=cfg.max_records,
            span=span,
        )
        base, rows = (int(file) << FILE_BITS) + int(first), []
        for row in records:
            rows.append(row)
            if len(rows) == BATCH_ROWS:
                yield _prepared(rows, base, cfg, hashing, names, schema)
                base, rows = base + len(rows), []
        if rows:
            yield _prepared(rows, base, cfg, hashing, names, schema)


def _prepared(rows, base, cfg, hashing, names, schema) -> pa.Table:
    batch = prepare_batch(batch_of(rows, names), cfg=cfg, hashing=hashing)
    batch["id"] = list(range(base, base + len(rows)))
    return pa.Table.from_pydict(batch, schema=schema)


def _pair_with_earliest(group: dict) -> dict:
    """All rows of one hash partition (band, key, id, source): each later row with the earliest row of the same
    key in the same band."""
    rows, originals, sources = [], [], []
    for band in np.unique(group["band"]):
        mine = np.flatnonzero(group["band"] == band)
        mine = mine[np.argsort(group["id"][mine], kind="stable")]
        later, first = dedup.first_of_equal(group["key"], mine)
        rows.append(group["id"][later])
        originals.append(group["id"][first])
        sources.append(group["source"][first])
    return {
        "row": np.concatenate(rows),
        "original": np.concatenate(originals),
        "original_source": np.concatenate(sources),
    }


def _keyed(batch: dict, *, columns: list[str], parts: int, skip: np.ndarray) -> dict:
    """The rows of a batch that take part in deduplication, once per key column, keyed for the shuffle. Rows
    rejected before deduplication have zero keys; `skip` holds the exact duplicates, which near dedup leaves."""
    keep = (batch["exact_hash"] != 0) & ~np.isin(batch["id"], skip)
    keys = [batch[column][keep] for column in columns]
    key = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    return {
        "part": (key.astype(np.uint64) % np.uint64(parts)).astype(np.int64),
        "band": np.repeat(np.arange(len(columns)), keep.sum()),
        "key": key,
        "id": np.tile(batch["id"][keep], len(columns)),
        "source": np.tile(batch["source"][keep], len(columns)),
    }


def _pairs(prepared, columns: list[str], *, parts: int, skip: np.ndarray):
    """(row, original, original_source) for every row whose key in one of `columns` equals an earlier row's."""
    keyed = prepared.select_columns(
        list(dict.fromkeys(["id", "source", "exact_hash", *columns]))
    ).map_batches(_keyed, batch_format="numpy", fn_kwargs=dict(columns=columns, parts=parts, skip=skip))
    return keyed.groupby("part", num_partitions=parts).map_groups(_pair_with_earliest, batch_format="numpy")


_MEET = pa.schema(
    [
        ("part", pa.int64()),
        ("key", pa.int64()),
        ("row", pa.int64()),
        ("original", pa.int64()),
        ("original_source", pa.string()),
        ("signature_row", pa.list_(pa.uint32())),
        ("signature", pa.list_(pa.uint32())),
    ]
)
"""Candidate pairs and signature rows in one table, to meet in a shuffle: a signature row has `row` -1."""


def _pairs_by(table: pa.Table, *, side: str, parts: int) -> pa.Table:
    """Candidate pairs, keyed by the id of their `side` row."""
    key = table[side].to_numpy()
    columns = {name: table[name] if name in table.column_names else None for name in _MEET.names}
    columns |= {"key": pa.array(key), "part": pa.array(key % parts)}
    return pa.table(
        {n: c if c is not None else pa.nulls(len(table), _MEET.field(n).type) for n, c in columns.items()},
        schema=_MEET,
    )


def _signatures_by_id(table: pa.Table, *, parts: int) -> pa.Table:
    key = table["id"].to_numpy()
    size = len(table)
    return pa.table(
        {
            "part": pa.array(key % parts),
            "key": pa.array(key),
            "row": pa.array(np.full(size, -1, np.int64)),
            "original": pa.array(np.full(size, -1, np.int64)),
            "original_source": pa.nulls(size, pa.string()),
            "signature_row": pa.nulls(size, pa.list_(pa.uint32())),
            "signature": table["signature"],
        },
        schema=_MEET,
    )


def _meet(group: pa.Table, *, threshold: float | None) -> pa.Table:
    """One partition of pairs and signature rows: each pair takes the signature of its keyed row. Without a
    threshold that is the row's own (kept as `signature_row`); with one, the original's, and only the pairs
    whose two signatures estimate a Jaccard similarity at or above it are returned, with that estimate."""
    is_pair = group["row"].to_numpy() >= 0
    pairs, signatures = group.filter(pa.array(is_pair)), group.filter(pa.array(~is_pair))
    sig_keys = signatures["key"].to_numpy()
    order = np.argsort(sig_keys, kind="stable")
    found = order[np.searchsorted(sig_keys, pairs["key"].to_numpy(), sorter=order)]
    attached = signatures["signature"].take(pa.array(found, type=pa.int64()))
    if threshold is None:
        return pairs.set_column(pairs.schema.get_field_index("signature_row"), "signature_row", attached)
    similarity = np.zeros(0)
    if len(pairs):
        width = len(attached[0])
        mine = pairs["signature_row"].combine_chunks().flatten().to_numpy().reshape(-1, width)
        theirs = attached.combine_chunks().flatten().to_numpy().reshape(-1, width)
        similarity = (mine == theirs).mean(axis=1)
    keep = pa.array(similarity >= threshold)
    return pa.table(
        {
            "row": pairs["row"].filter(keep),
            "original": pairs["original"].filter(keep),
            "original_source": pairs["original_source"].filter(keep),
            "similarity": pa.array(similarity).filter(keep),
        }
    )


def _verified(candidates, prepared, *, threshold: float, parts: int):
    """The candidate pairs whose MinHash signatures estimate a Jaccard similarity at or above `threshold`: the
    pairs meet the signatures of their rows, then of their originals, in two shuffles by id."""
    signatures = prepared.select_columns(["id", "signature"]).map_batches(
        _signatures_by_id, batch_format="pyarrow", fn_kwargs=dict(parts=parts)
    )
    pairs = candidates
    for side, keep_at in (("row", None), ("original", threshold)):
        keyed = pairs.map_batches(_pairs_by, batch_format="pyarrow", fn_kwargs=dict(side=side, parts=parts))
        pairs = (
            keyed.union(signatures)
            .groupby("part", num_partitions=parts)
            .map_groups(_meet, batch_format="pyarrow", fn_kwargs=dict(threshold=keep_at))
        )
    return pairs


def _collect(ds, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    tables = [t for t in ds.iter_batches(batch_format="pyarrow", batch_size=None) if len(t)]
    table = pa.concat_tables(tables, promote_options="default") if tables else None
    return {c: (table[c].to_numpy() if table is not None else np.zeros(0)) for c in columns}


def find_duplicates(prepared, cfg: DataConfig, parts: int) -> tuple[Duplicates, dict[int, str]]:
    """Exact, then verified near duplicates, across the whole dataset; settled on the driver in row order."""
    found: dict[int, tuple[int, float]] = {}
    source_of: dict[int, str] = {}
    exact_rows = np.zeros(0, dtype=np.int64)
    if cfg.exact_dedup:
        pairs = _collect(_pairs(prepared, ["exact_hash"], parts=parts, skip=exact_rows), PAIR)
        for row, original, source in zip(*(pairs[c].tolist() for c in PAIR)):
            found[row] = (original, float("nan"))
            source_of[original] = source
        exact_rows = np.sort(pairs["row"].astype(np.int64))
    if cfg.near_dedup.enabled:
        bands, _ = dedup.lsh_params(cfg.near_dedup.threshold, cfg.near_dedup.num_perm)
        candidates = _pairs(prepared, [f"band_{b}" for b in range(bands)], parts=parts, skip=exact_rows)
        verified = _verified(candidates, prepared, threshold=cfg.near_dedup.threshold, parts=parts)
        near = _collect(verified, (*PAIR, "similarity"))
        order = np.lexsort((near["original"], near["row"]))
        for i in order.tolist():
            row, original = int(near["row"][i]), int(near["original"][i])
            if row in found or original in found:  # settled by an earlier original, or matches a duplicate
                continue
            found[row] = (original, float(near["similarity"][i]))
            source_of[original] = str(near["original_source"][i])
    duplicates = Duplicates.from_found(found) if found else NO_DUPLICATES
    return duplicates, {int(o): source_of[int(o)] for o in np.unique(duplicates.originals).tolist()}


class _Filter:
    """The stages after deduplication, run in actors: the evaluation n-grams, the embedding model and the
    domain profile load once per actor rather than once per batch."""

    def __init__(
        self, cfg: DataConfig, duplicates: Duplicates, semantic_model: Path | None, schema: pa.Schema
    ):
        from r1kit.data.clean import eval_ngrams

        self.cfg, self.duplicates, self.schema = cfg, duplicates, schema
        self.eval_ngrams = eval_ngrams(cfg) if cfg.decontam.enabled else None
        self.embedder = self.profile = None
        if semantic_model is not None:
            from r1kit.data.semantic import Embedder

            self.embedder = Embedder(semantic_model)
        if cfg.domain.enabled:
            from r1kit.data.domain import DomainProfile

            self.profile = DomainProfile(cfg.domain.keywords, cfg.domain.documents)

    def __call__(self, table: pa.Table) -> pa.Table:
        batch = table.to_pydict()
        ids = batch.pop("id")
        batch = filter_batch(
            batch, ids, cfg=self.cfg, duplicates=self.duplicates, eval_ngrams=self.eval_ngrams
        )
        rows = rows_of(batch)
        if self.embedder is not None:
            from r1kit.data.semantic import check_consistency

            check_consistency(rows, self.embedder, self.cfg)
        if self.profile is not None:
            from r1kit.data.domain import check_relevance

            check_relevance(rows, self.profile, self.cfg.domain.min_score)
        out = batch_of(rows, batch.keys())
        out["id"] = ids
        return pa.Table.from_pydict(out, schema=self.schema)


def run(ray, files: list[Path], cfg: DataConfig, hashing: dict | None, semantic_model: Path | None) -> RayRun:
    """Read, prepare, deduplicate and filter `files` on Ray; the rows come back in the local order."""
    import time

    timings: dict[str, float] = {}
    t = time.perf_counter()
    tasks = read_tasks(files, cfg)
    schema = _schema(hashing)
    try:
        prepared = (
            ray.data.from_items(tasks, override_num_blocks=len(tasks))
            .map_batches(
                _read_and_prepare,
                batch_size=1,
                fn_kwargs=dict(cfg=cfg, hashing=hashing, schema=schema),
            )
            .materialize()
        )
        timings["read_prepare"] = round(time.perf_counter() - t, 3)
        records = prepared.count()
        if records == 0:
            raise no_records(files)
        t = time.perf_counter()
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        duplicates, source_of = NO_DUPLICATES, {}
        if hashing is not None:
            columns = 1 + (hashing["bands"] if hashing["near"] else 0)
            parts = max(cpus, -(-records * columns // 2_000_000))
            duplicates, source_of = find_duplicates(prepared, cfg, parts)
            timings["dedup"] = round(time.perf_counter() - t, 3)
            t = time.perf_counter()
        kept_schema = _schema(None)
        final = (
            prepared.select_columns(kept_schema.names)
            .map_batches(
                _Filter,
                batch_format="pyarrow",
                batch_size=BATCH_ROWS,
                compute=ray.data.ActorPoolStrategy(size=cpus),
                fn_constructor_kwargs=dict(
                    cfg=cfg, duplicates=duplicates, semantic_model=semantic_model, schema=kept_schema
                ),
            )
            .materialize()
        )
        timings["filter"] = round(time.perf_counter() - t, 3)
    except Exception as exc:  # Ray wraps what a task raised
        error = _user_error(exc)
        if error is None:
            raise
        raise error from None

    def rows() -> Iterator[tuple[int, dict]]:
        last = -1
        for batch in final.iter_batches(batch_format="pyarrow", batch_size=BATCH_ROWS):
            for row in rows_of(batch.to_pydict()):
                index = row.pop("id")
                if index <= last:  # the order the writer and the duplicates' "earliest" depend on
                    raise RuntimeError(f"Ray returned row {index:#x} after row {last:#x}")
                last = index
                yield index, row

    return RayRun(rows(), duplicates, source_of, timings)


def _user_error(exc: BaseException) -> UserError | None:
    """The UserError (a strict run's bad line, a bad word list) a task raised, however Ray wrapped it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, UserError):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return None
