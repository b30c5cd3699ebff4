"""Corpus-level deduplication, planned as stages of work units on annotate's executors.

`assay annotate --scorer minhash` (or `exact_dup`) lands here: a scorer whose result needs the
whole corpus declares `corpus_level = True` and `annotate` hands it to `run_corpus_scorer`.

minhash, three stages (datatrove wires four by hand, one executor each):

1. signatures  one unit per docs shard: Arrow batches -> band keys, streamed to
               `<work>/sigs/part-NNNNN.parquet` (node, id, b00..bNN; node = shard << 32 | row).
2. clusters    one unit, in DuckDB (parallel over the cores by itself): every band's buckets
               with two or more members give edges to the bucket's smallest node
               (`<work>/edges.parquet`), then connected components by min-label propagation
               with pointer jumping; each component is named by its smallest `id`.
3. annotate    one unit per docs shard: `annotations/minhash/part-NNNNN.parquet`.

exact_dup, three: keys per shard, one DuckDB grouping (smallest id per key that occurs more
than once), annotation per shard.

Memory: stage 1 holds one batch (about 1 MiB of text) and its (permutations x 8k shingles) block; the DuckDB
stages run under `memory_limit` (ASSAY_DEDUP_MEMORY, default 1GB) and spill to
`<work>/tmp` beyond it, so a worker's peak does not grow with the corpus.

Resuming: every unit writes its output atomically and then a record under `<work>/records/`;
a rerun of the same command skips units with a record, so a killed run redoes only the
missing units of the stage it was in. The work folder `<root>/.assay/work/<name>-<key>/`
(key: scorer name and version, which covers the options and the docs shards) is removed once
every annotation shard is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from assay.corpora import progress
from assay.corpora.atomic import atomic_path, write_json_atomic
from assay.corpora.manifest import load_manifest
from assay.corpora.shards import write_table_atomic
from assay.pipelines.executor import ExecutorConfig, run_units
from assay.scorers.registry import make_scorer

_CACHE: dict[tuple, Any] = {}
MAX_ROUNDS = 1000  # label propagation converges in O(log diameter) rounds with pointer jumping


def _scorer(spec: str, root: str):
    key = (spec, root)
    if key not in _CACHE:
        _CACHE[key] = make_scorer(spec, root)
    return _CACHE[key]


def work_dir(root: Path, scorer) -> Path:
    key = hashlib.sha256(f"{scorer.name}\n{scorer.version}".encode()).hexdigest()[:12]
    return Path(root) / ".assay" / "work" / f"{scorer.name}-{key}"


def _sql_path(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _connect(work: Path, settings: dict, tag: str):
    import duckdb

    tmp = work / "tmp" / tag
    tmp.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{settings.get('memory') or '1GB'}'")
    con.execute(f"SET threads = {int(settings.get('threads') or 1)}")
    con.execute(f"SET temp_directory = {_sql_path(tmp)}")
    con.execute("SET preserve_insertion_order = false")
    return con


def _copy_parquet(con, query: str, path: Path) -> None:
    """COPY a query to Parquet under a temporary name, renamed when complete."""
    with atomic_path(path) as tmp:
        con.execute(f"COPY ({query}) TO {_sql_path(tmp)} (FORMAT parquet, ROW_GROUP_SIZE 122880)")


def _done(work: Path, stage: str, unit_index: int) -> tuple[Path, dict | None]:
    record = work / "records" / stage / f"u{unit_index:05d}.json"
    return record, (json.loads(record.read_text()) if record.exists() else None)


def _finish(record: Path, started: float, **fields: Any) -> dict:
    out = {**fields, "seconds": round(time.time() - started, 3)}
    write_json_atomic(record, out)
    return out


BATCH_BYTES = 1024 * 1024  # text per batch: temporaries are ~20x this; 1 MiB is also the fastest (cache)


def _doc_batches(root: Path, shard: str, batch_size: int):
    """Docs batches of at most `batch_size` rows and about BATCH_BYTES of text (one long document
    alone), read without Arrow's thread pool, whose per-thread arenas cost ~50 MB of RSS."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    docs = pq.ParquetFile(root / shard)
    for batch in docs.iter_batches(batch_size=batch_size, columns=["id", "text"], use_threads=False):
        sizes = np.asarray(pc.binary_length(batch.column("text")).fill_null(0), dtype=np.int64)
        ends = np.cumsum(sizes)
        start = 0
        while start < batch.num_rows:
            base = ends[start - 1] if start else 0
            stop = max(start + 1, int(np.searchsorted(ends, base + BATCH_BYTES, side="right")))
            yield batch.slice(start, stop - start)
            start = stop


def _stream_units(root: Path, unit: dict, batch_size: int, out: Path, make_columns) -> int:
    """Write `make_columns(batch, first_row)` for every docs batch of a shard into one Parquet file."""
    import pyarrow.parquet as pq

    writer = None
    n = 0
    with atomic_path(out) as tmp:
        try:
            for batch in _doc_batches(root, unit["shard"], batch_size):
                table = make_columns(batch, unit["index"] << 32 | n)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
                n += batch.num_rows
                progress.report(n)
            if writer is None:  # an empty shard still gets a file with the schema
                writer = pq.ParquetWriter(tmp, make_columns(None, 0).schema)
        finally:
            if writer is not None:
                writer.close()
    progress.report(n, final=True)
    return n


# --- minhash ------------------------------------------------------------------------------------


def minhash_signatures(unit_index: int, unit: dict, root: str, spec: str, work: str, settings: dict) -> dict:
    import numpy as np
    import pyarrow as pa

    work_p, root_p = Path(work), Path(root)
    record, done = _done(work_p, "signatures", unit_index)
    if done:
        return done
    started = time.time()
    scorer = _scorer(spec, root)
    bands = [f"b{b:02d}" for b in range(scorer.bands)]

    def columns(batch, first):
        if batch is None:
            empty = {"node": pa.array([], pa.int64()), "id": pa.array([], pa.string())}
            return pa.table(empty | {name: pa.array([], pa.int64()) for name in bands})
        keys, has = scorer.band_keys(batch.column(batch.schema.get_field_index("text")))
        arrays = {
            "node": pa.array(first + np.arange(batch.num_rows, dtype=np.int64)),
            "id": batch.column(batch.schema.get_field_index("id")),
        }
        mask = ~has
        for b, name in enumerate(bands):
            arrays[name] = pa.array(keys[:, b], mask=mask)
        return pa.table(arrays)

    out = work_p / "sigs" / f"part-{unit['index']:05d}.parquet"
    n = _stream_units(root_p, unit, settings.get("batch_size") or 4096, out, columns)
    return _finish(record, started, unit=unit_index, shard=unit["shard"], docs=n)


def minhash_clusters(unit_index: int, unit: dict, root: str, spec: str, work: str, settings: dict) -> dict:
    """Bucket collisions of every band, then their connected components, each named by its
    smallest document id. One unit: DuckDB parallelises it over the cores itself and spills
    past `memory_limit`; the edges are kept, so a rerun killed in the components starts there."""
    work_p = Path(work)
    record, done = _done(work_p, "clusters", unit_index)
    if done:
        return done
    started = time.time()
    scorer = _scorer(spec, root)
    con = _connect(work_p, settings, "clusters")
    sigs = _sql_path(work_p / "sigs" / "*.parquet")
    edges = work_p / "edges.parquet"
    if not edges.exists():
        cols = ", ".join(f"b{b:02d}" for b in range(scorer.bands))
        # UNPIVOT drops the null keys of documents without shingles; every member of a bucket
        # gets an edge to the bucket's smallest node
        _copy_parquet(
            con,
            f"""WITH t AS (UNPIVOT (SELECT node, {cols} FROM read_parquet({sigs})) ON {cols} INTO NAME band VALUE k),
                     g AS (SELECT band, k, min(node) AS a FROM t GROUP BY band, k HAVING count(*) > 1)
                SELECT DISTINCT g.a AS a, t.node AS b FROM t JOIN g USING (band, k) WHERE t.node <> g.a""",
            edges,
        )
    con.execute(f"CREATE TABLE e AS SELECT a, b FROM read_parquet({_sql_path(edges)})")
    n_edges = con.execute("SELECT count(*) FROM e").fetchone()[0]
    # start each node at its smallest neighbour and repeat (neighbours' labels, then a label's
    # own label: pointer jumping) until no label changes
    con.execute(
        "CREATE TABLE lab AS SELECT n, min(l) AS l FROM "
        "(SELECT a AS n, a AS l FROM e UNION ALL SELECT b AS n, a AS l FROM e) GROUP BY n"
    )
    rounds = 0
    while True:
        rounds += 1
        con.execute(
            """CREATE OR REPLACE TABLE nxt AS SELECT n, min(l) AS l FROM (
                   SELECT n, l FROM lab
                   UNION ALL SELECT e.b AS n, x.l FROM e JOIN lab x ON x.n = e.a
                   UNION ALL SELECT e.a AS n, x.l FROM e JOIN lab x ON x.n = e.b) GROUP BY n"""
        )
        con.execute(
            "CREATE OR REPLACE TABLE nxt AS SELECT x.n, least(x.l, y.l) AS l FROM nxt x JOIN nxt y ON y.n = x.l"
        )
        changed = con.execute("SELECT count(*) FROM nxt JOIN lab USING (n) WHERE nxt.l <> lab.l").fetchone()[
            0
        ]
        con.execute("DROP TABLE lab")
        con.execute("ALTER TABLE nxt RENAME TO lab")
        if changed == 0:
            break
        if rounds >= MAX_ROUNDS:
            raise RuntimeError(f"minhash components did not converge in {MAX_ROUNDS} rounds")
    con.execute(
        f"CREATE TABLE named AS SELECT lab.n, lab.l, s.id FROM lab JOIN read_parquet({sigs}) s ON s.node = lab.n"
    )
    query = """SELECT named.n AS node, g.cluster, g.size FROM named JOIN
                   (SELECT l, min(id) AS cluster, count(*) AS size FROM named GROUP BY l) g USING (l)
               ORDER BY node"""
    _copy_parquet(con, query, work_p / "clusters.parquet")
    nodes, clusters = con.execute("SELECT count(*), count(DISTINCT l) FROM named").fetchone()
    con.close()
    return _finish(
        record,
        started,
        unit=unit_index,
        edges=int(n_edges),
        rounds=rounds,
        duplicate_docs=int(nodes),
        clusters=int(clusters),
    )


def minhash_annotate(unit_index: int, unit: dict, root: str, spec: str, work: str, settings: dict) -> dict:
    work_p, root_p = Path(work), Path(root)
    record, done = _done(work_p, "annotate", unit_index)
    if done:
        return done
    started = time.time()
    scorer = _scorer(spec, root)
    lo, hi = unit["index"] << 32, (unit["index"] + 1) << 32
    con = _connect(work_p, settings, f"annotate-{unit_index}")
    sigs = _sql_path(work_p / "sigs" / f"part-{unit['index']:05d}.parquet")
    clusters = _sql_path(work_p / "clusters.parquet")
    table = con.sql(
        f"""SELECT s.id, coalesce(c.cluster, s.id) AS dup_cluster, coalesce(c.size, 1) AS dup_cluster_size,
                   (c.cluster IS NULL OR c.cluster = s.id) AS dup_is_first
            FROM read_parquet({sigs}) s
            LEFT JOIN (SELECT * FROM read_parquet({clusters}) WHERE node >= {lo} AND node < {hi}) c USING (node)
            ORDER BY s.node"""
    ).to_arrow_table()
    con.close()
    schema = _annotation_schema(scorer)
    table = table.cast(schema)
    write_table_atomic(table, root_p / "annotations" / scorer.name / Path(unit["shard"]).name)
    progress.report(table.num_rows, final=True)
    return _finish(record, started, unit=unit_index, shard=unit["shard"], docs=table.num_rows)


# --- exact --------------------------------------------------------------------------------------


def exact_keys(unit_index: int, unit: dict, root: str, spec: str, work: str, settings: dict) -> dict:
    import numpy as np
    import pyarrow as pa

    work_p, root_p = Path(work), Path(root)
    record, done = _done(work_p, "keys", unit_index)
    if done:
        return done
    started = time.time()
    scorer = _scorer(spec, root)

    def columns(batch, first):
        if batch is None:
            return pa.table(
                {
                    k: pa.array([], t)
                    for k, t in (("node", pa.int64()), ("id", pa.string()), ("key", pa.string()))
                }
            )
        return pa.table(
            {
                "node": pa.array(first + np.arange(batch.num_rows, dtype=np.int64)),
                "id": batch.column(batch.schema.get_field_index("id")),
                "key": scorer.keys(batch.column(batch.schema.get_field_index("text"))),
            }
        )

    out = work_p / "keys" / f"part-{unit['index']:05d}.parquet"
    n = _stream_units(root_p, unit, settings.get("batch_size") or 4096, out, columns)
    return _finish(record, started, unit=unit_index, shard=unit["shard"], docs=n)


def exact_groups(unit_index: int, unit: dict, root: str, spec: str, work: str, settings: dict) -> dict:
    work_p = Path(work)
    record, done = _done(work_p, "groups", unit_index)
    if done:
        return done
    started = time.time()
    con = _connect(work_p, settings, "groups")
    keys = _sql_path(work_p / "keys" / "*.parquet")
    out = work_p / "dups.parquet"
    _copy_parquet(
        con,
        f"SELECT key, min(id) AS first, count(*) AS size FROM read_parquet({keys}) GROUP BY key HAVING count(*) > 1",
        out,
    )
    groups, docs = con.execute(
        f"SELECT count(*), coalesce(sum(size), 0) FROM read_parquet({_sql_path(out)})"
    ).fetchone()
    con.close()
    return _finish(record, started, unit=unit_index, clusters=int(groups), duplicate_docs=int(docs))


def exact_annotate(unit_index: int, unit: dict, root: str, spec: str, work: str, settings: dict) -> dict:
    work_p, root_p = Path(work), Path(root)
    record, done = _done(work_p, "annotate", unit_index)
    if done:
        return done
    started = time.time()
    scorer = _scorer(spec, root)
    con = _connect(work_p, settings, f"annotate-{unit_index}")
    keys = _sql_path(work_p / "keys" / f"part-{unit['index']:05d}.parquet")
    table = con.sql(
        f"""SELECT k.id, k.key AS dup_exact_cluster, (d.first IS NULL OR d.first = k.id) AS dup_exact_first
            FROM read_parquet({keys}) k LEFT JOIN read_parquet({_sql_path(work_p / "dups.parquet")}) d USING (key)
            ORDER BY k.node"""
    ).to_arrow_table()
    con.close()
    table = table.cast(_annotation_schema(scorer))
    write_table_atomic(table, root_p / "annotations" / scorer.name / Path(unit["shard"]).name)
    progress.report(table.num_rows, final=True)
    return _finish(record, started, unit=unit_index, shard=unit["shard"], docs=table.num_rows)


# --- planning -----------------------------------------------------------------------------------


def _annotation_schema(scorer):
    import pyarrow as pa

    return pa.schema([("id", pa.string()), *scorer.output_schema()])


def stages(scorer, shards: list[str]) -> list[tuple[str, str, list[dict]]]:
    """(stage, unit function, units) in order, for a corpus-level scorer."""
    per_shard = [{"shard": s, "index": i} for i, s in enumerate(shards)]
    if scorer.name == "minhash":
        return [
            ("signatures", "minhash_signatures", per_shard),
            ("clusters", "minhash_clusters", [{}]),
            ("annotate", "minhash_annotate", per_shard),
        ]
    if scorer.name == "exact_dup":
        return [
            ("keys", "exact_keys", per_shard),
            ("groups", "exact_groups", [{}]),
            ("annotate", "exact_annotate", per_shard),
        ]
    raise ValueError(f"no corpus-level plan for scorer {scorer.name!r}")


def run_corpus_scorer(
    root: str | Path,
    spec: str,
    scorer,
    config: ExecutorConfig | None = None,
    batch_size: int | None = None,
    quiet: bool = False,
) -> dict:
    """Run every stage of a corpus-level scorer; returns docs, seconds and per-stage figures."""
    root = Path(root)
    config = config or ExecutorConfig()
    _CACHE.clear()  # units in this process must see the corpus as it is now
    manifest = load_manifest(root)
    shards = [s["name"] for s in manifest["shards"]]
    rows = sum(s.get("rows", 0) for s in manifest["shards"])
    work = work_dir(root, scorer)
    settings = {"batch_size": batch_size, "memory": os.environ.get("ASSAY_DEDUP_MEMORY", "1GB")}
    started = time.time()
    for old in (root / ".assay" / "work").glob(f"{scorer.name}-*"):
        if old != work:  # another version's half-done run: its results can no longer be used
            shutil.rmtree(old, ignore_errors=True)
    plan = stages(scorer, shards)
    figures: dict[str, dict] = {}
    for number, (stage, func, units) in enumerate(plan, start=1):
        record_dir = work / "records" / stage

        def count_done(record_dir: Path = record_dir) -> int:
            return len(list(record_dir.glob("u*.json"))) if record_dir.exists() else 0

        t0, before = time.time(), count_done()
        # DuckDB threads: a stage of one unit has the machine to itself; otherwise a worker's share
        threads = (
            (os.cpu_count() or 1) if len(units) == 1 else max(1, (os.cpu_count() or 1) // config.workers)
        )
        threads = int(os.environ.get("ASSAY_DEDUP_THREADS", threads))
        args = {
            "root": str(root),
            "spec": spec,
            "work": str(work),
            "settings": settings | {"threads": threads},
        }
        run_units(
            f"assay.pipelines.dedup:{func}",
            units,
            args,
            root / ".assay" / "logs" / f"{work.name}-{stage}",
            config,
            count_done,
            f"{scorer.name} {number}/{len(plan)} {stage}",
            quiet=quiet,
            totals={"docs": rows} if units and "shard" in units[0] else None,
        )
        records = [json.loads(p.read_text()) for p in sorted(record_dir.glob("u*.json"))]
        figures[stage] = {
            "units_run": count_done() - before,  # units this call ran (a resumed run skips the rest)
            "wall_seconds": round(time.time() - t0, 3),
            "unit_seconds": round(sum(r.get("seconds", 0.0) for r in records), 3),
            **{
                k: sum(r[k] for r in records)
                for k in ("edges", "clusters", "duplicate_docs")
                if records and k in records[0]
            },
        }
    shutil.rmtree(work, ignore_errors=True)
    for stage in {s for s, _, _ in plan}:
        shutil.rmtree(root / ".assay" / "logs" / f"{work.name}-{stage}", ignore_errors=True)
    return {"docs": rows, "seconds": round(time.time() - started, 3), "stages": figures}
