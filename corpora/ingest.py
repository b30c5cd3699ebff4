"""Ingest: input files -> docs shards + quarantine, as resumable work units.

Phase 1 (parallel): each work unit (an input file, or a range of row groups of a big Parquet
file) is read into staged shards under `docs/.staging/<run>/` plus a unit record. Phase 2 (one
process): duplicate ids across the whole corpus are quarantined, staged shards are renamed to
`docs/part-NNNNN.parquet` in input order, and the manifest is written. Both phases are
idempotent, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa

from assay.corpora import progress
from assay.corpora.atomic import sweep_temporaries, write_json_atomic
from assay.corpora.inputs import InputFile
from assay.corpora.manifest import load_manifest, save_manifest, tool_versions
from assay.corpora.readers import detect_format, read_arrow, read_jsonl, read_parquet, read_warc
from assay.corpora.records import FieldMap
from assay.corpora.schema import DOCS_SCHEMA, QUARANTINE_SCHEMA
from assay.corpora.shards import ShardWriter, sha256_file, write_table_atomic


@dataclass(frozen=True)
class IngestOptions:
    text_field: str = "text"
    id_field: str = "id"
    url_field: str = "url"
    source_field: str = "source"
    source: str | None = None
    id_prefix: str | None = None  # derived ids become <prefix>/<path under the named folder>:<offset>
    shard_rows: int = 100_000
    shard_bytes: int = 512 * 1024 * 1024
    unit_rows: int = 1_000_000  # big Parquet inputs are split into units of about this many rows
    max_record_bytes: int = 64 * 1024 * 1024
    raw_cap: int = 64 * 1024

    def fields(self) -> FieldMap:
        return FieldMap(
            text=self.text_field,
            id=self.id_field,
            url=self.url_field,
            source=self.source_field,
            default_source=self.source,
            max_record_bytes=self.max_record_bytes,
            raw_cap=self.raw_cap,
        )


# ---------------------------------------------------------------- planning


def default_source(key: str) -> str:
    """A file's source name: its base name without format extensions (cc_en_head-0091)."""
    name = PurePosixPath(key).name
    for ext in (".gz", ".zst", ".zstd", ".jsonl", ".json", ".ndjson", ".parquet", ".arrow", ".warc", ".arc"):
        name = name.removesuffix(ext)
    return name


def plan_units(files: list[InputFile], options: IngestOptions) -> list[dict[str, Any]]:
    """One unit per input file; big Parquet files split by row-group ranges."""
    import fsspec

    units = []
    for file in files:
        kind, compression = detect_format(file.path)
        fs, fpath = fsspec.core.url_to_fs(file.path)
        size = fs.size(fpath)
        base = {"path": file.path, "key": file.key, "kind": kind, "compression": compression, "bytes": size}
        if file.source:
            base["source"] = file.source
        meta = _parquet_metadata(fs, fpath, file.path) if kind == "parquet" else None
        if meta is None:  # not Parquet, or a Parquet file cut short: one unit, which quarantines it
            units.append(base)
            continue
        group, rows = [], 0
        for g in range(meta.num_row_groups):
            group.append(g)
            rows += meta.row_group(g).num_rows
            if rows >= options.unit_rows:
                units.append({**base, "row_groups": group})
                group, rows = [], 0
        if group or not units or units[-1]["path"] != file.path:
            units.append({**base, "row_groups": group})
    return units


def _parquet_metadata(fs, fpath: str, path: str):
    """The file's Parquet metadata; None when its footer is unreadable (a file cut short)."""
    import pyarrow.parquet as pq

    with fs.open(fpath, "rb") as f:
        head = f.read(4)
        if len(head) == 4 and head != b"PAR1":
            raise ValueError(f"{path}: not a Parquet file (it does not start with PAR1)")
        f.seek(0)
        try:
            return pq.ParquetFile(f).metadata
        except (pa.ArrowInvalid, OSError):
            return None


def run_key(units: list[dict], options: IngestOptions) -> str:
    """Identifies an ingest run by what it reads and how; a rerun with the same key resumes."""
    blob = json.dumps({"units": units, "options": asdict(options)}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


# ---------------------------------------------------------------- phase 1: one unit


def unit_record_path(root: Path, key: str, index: int) -> Path:
    return root / ".assay" / "units" / f"ingest-{key}" / f"u{index:05d}.json"


def ingest_unit(root: str, key: str, index: int, unit: dict, options: dict) -> dict:
    """Read one unit into staged shards; writes its unit record last (the completion marker)."""
    import fsspec

    root_p = Path(root)
    record_path = unit_record_path(root_p, key, index)
    if record_path.exists():
        with open(record_path) as f:
            return json.load(f)
    opts = IngestOptions(**options)
    fields = opts.fields()
    if opts.source is None:
        from dataclasses import replace

        fields = replace(fields, default_source=unit.get("source") or default_source(unit["key"]))
    stage = root_p / "docs" / ".staging" / key
    writer = ShardWriter(
        stage,
        DOCS_SCHEMA,
        f"u{index:05d}-{{:04d}}.parquet",
        max_rows=opts.shard_rows,
        max_bytes=opts.shard_bytes,
    )
    quarantined: list[pa.Table] = []
    n_read = n_docs = 0
    started = time.time()
    fs, fpath = fsspec.core.url_to_fs(unit["path"])
    with fs.open(fpath, "rb") as raw:
        if unit["kind"] == "jsonl":
            blocks = read_jsonl(raw, unit["compression"], fields, unit["path"], unit["key"])
        elif unit["kind"] == "parquet":
            blocks = read_parquet(raw, fields, unit["path"], unit["key"], unit.get("row_groups"))
        elif unit["kind"] == "arrow":
            blocks = read_arrow(raw, fields, unit["path"], unit["key"])
        else:
            blocks = read_warc(raw, unit["compression"], fields, unit["path"], unit["key"])
        share = int(unit.get("bytes_share", unit.get("bytes", 0)))
        streamed = unit["kind"] in ("jsonl", "warc")  # the read position tells how far it got
        try:
            for block in blocks:
                n_read += block.n_read
                n_docs += block.docs.num_rows
                if block.docs.num_rows:
                    writer.write(block.docs)
                if block.quarantine.num_rows:
                    quarantined.append(block.quarantine)
                progress.report(n_read, min(raw.tell(), share) if streamed else 0)
        except BaseException:
            writer.abort()
            raise
    shards = writer.close()
    progress.report(n_read, share, final=True)
    n_quarantined = sum(t.num_rows for t in quarantined)
    if quarantined:
        write_table_atomic(pa.concat_tables(quarantined), stage / f"q{index:05d}.parquet")
    record = {
        "unit": index,
        "path": unit["path"],
        "records_read": n_read,
        "docs": n_docs,
        "quarantined": n_quarantined,
        "shards": shards,
        "seconds": round(time.time() - started, 3),
    }
    if n_read != n_docs + n_quarantined:  # a reader bug, never the input's fault: fail loudly
        raise RuntimeError(f"{unit['path']}: read {n_read} != {n_docs} docs + {n_quarantined} quarantined")
    write_json_atomic(record_path, record)
    return record


# ---------------------------------------------------------------- phase 2: finalize


def finalize(root: str | Path, key: str, units: list[dict], options: IngestOptions, run_info: dict) -> dict:
    """Quarantine duplicate ids, publish shards in input order, write the manifest."""
    root = Path(root)
    stage = root / "docs" / ".staging" / key
    manifest = load_manifest(root)
    plan_path = stage / "plan.json"
    records = [json.loads(unit_record_path(root, key, i).read_text()) for i in range(len(units))]
    if plan_path.exists():
        plan = json.loads(plan_path.read_text())
    else:
        plan = _make_plan(root, stage, records, manifest)
        write_json_atomic(plan_path, plan)
    _execute_plan(root, stage, plan)

    per_input: dict[str, dict] = {}
    for unit, rec in zip(units, records):
        entry = per_input.setdefault(
            unit["path"],
            {
                "path": unit["path"],
                "key": unit["key"],
                "kind": unit["kind"],
                "compression": unit["compression"],
                "bytes": unit["bytes"],
                "records_read": 0,
                "docs": 0,
                "quarantined": 0,
            },
        )
        for k in ("records_read", "docs", "quarantined"):
            entry[k] += rec[k]
    for dup in plan["duplicates"]:
        per_input[dup["input"]]["docs"] -= dup["count"]
        per_input[dup["input"]]["quarantined"] += dup["count"]

    manifest["inputs"].extend(per_input.values())
    for move in plan["docs"]:
        manifest["shards"].append({"name": move["final"], **_file_entry(root / move["final"], move["rows"])})
    for move in plan["quarantine"]:
        manifest["quarantine"].append(
            {"name": move["final"], **_file_entry(root / move["final"], move["rows"])}
        )
    totals = {
        "records_read": sum(e["records_read"] for e in per_input.values()),
        "docs": sum(e["docs"] for e in per_input.values()),
        "quarantined": sum(e["quarantined"] for e in per_input.values()),
    }
    manifest["runs"].append(
        {"stage": "ingest", "run": key, **run_info, **totals, "versions": tool_versions()}
    )
    save_manifest(root, manifest)
    import shutil

    shutil.rmtree(stage, ignore_errors=True)
    for leftover in (stage.parent, root / ".assay" / "units"):
        if leftover.exists() and not any(leftover.iterdir()):
            leftover.rmdir()
    shutil.rmtree(root / ".assay" / "units" / f"ingest-{key}", ignore_errors=True)
    sweep_temporaries(root / "docs")
    return {"inputs": list(per_input.values()), **totals}


def _file_entry(path: Path, rows: int) -> dict:
    return {"rows": rows, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _make_plan(root: Path, stage: Path, records: list[dict], manifest: dict) -> dict:
    """Decide every rename and every duplicate before touching a file."""
    import duckdb

    staged = [s["name"] for r in records for s in r["shards"]]
    rows = {s["name"]: s["rows"] for r in records for s in r["shards"]}
    existing = [str(root / s["name"]) for s in manifest["shards"]]
    next_doc = len(manifest["shards"])
    next_q = len(manifest["quarantine"])
    duplicates: dict[str, list[int]] = {}
    dup_summary: list[dict] = []
    if staged:
        files = existing + [str(stage / n) for n in staged]
        con = duckdb.connect()
        order = {f: i for i, f in enumerate(files)}
        con.execute("CREATE TEMP TABLE file_order(filename VARCHAR, ord INTEGER)")
        con.executemany("INSERT INTO file_order VALUES (?, ?)", list(order.items()))
        dups = con.execute(
            """
            WITH ids AS (
              SELECT id, filename, file_row_number AS row, source_file
              FROM read_parquet(?, filename = true, file_row_number = true)
            ), ranked AS (
              SELECT ids.*, row_number() OVER (PARTITION BY id ORDER BY o.ord, row) AS k
              FROM ids JOIN file_order o USING (filename)
            )
            SELECT filename, row, source_file FROM ranked WHERE k > 1 ORDER BY filename, row
            """,
            [files],
        ).fetchall()
        con.close()
        counts: dict[str, int] = {}
        for filename, row, source_file in dups:
            name = Path(filename).name
            if filename in existing:
                raise RuntimeError(
                    f"{filename}: published shard has a duplicate id; the corpus is inconsistent"
                )
            duplicates.setdefault(name, []).append(int(row))
            counts[source_file] = counts.get(source_file, 0) + 1
        dup_summary = [{"input": k, "count": v} for k, v in counts.items()]
    docs_moves = []
    for i, name in enumerate(staged):
        final = f"docs/part-{next_doc + i:05d}.parquet"
        drop = duplicates.get(name, [])
        docs_moves.append({"staged": name, "final": final, "drop_rows": drop, "rows": rows[name] - len(drop)})
    q_staged = [f"q{r['unit']:05d}.parquet" for r in records if r["quarantined"]]
    q_staged += [f"dup-{m['staged']}" for m in docs_moves if m["drop_rows"]]
    q_moves = [
        {"staged": name, "final": f"quarantine/part-{next_q + i:05d}.parquet", "rows": None}
        for i, name in enumerate(q_staged)
    ]
    return {"docs": docs_moves, "quarantine": q_moves, "duplicates": dup_summary}


def _execute_plan(root: Path, stage: Path, plan: dict) -> None:
    """Idempotent: every step is skipped when its result already exists."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for move in plan["docs"]:
        src, dst = stage / move["staged"], root / move["final"]
        if not src.exists():
            continue
        if move["drop_rows"]:
            table = pq.read_table(src)
            drop = pa.array(move["drop_rows"], pa.int64())
            keep = pc.invert(pc.is_in(pa.array(range(table.num_rows), pa.int64()), drop))
            # the quarantine rows first: a kill between the two writes loses nothing
            write_table_atomic(_duplicates_as_quarantine(table.take(drop)), stage / f"dup-{move['staged']}")
            write_table_atomic(table.filter(keep), dst)
            src.unlink()
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
    for move in plan["quarantine"]:
        src, dst = stage / move["staged"], root / move["final"]
        if src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        move["rows"] = pq.ParquetFile(dst).metadata.num_rows


def _duplicates_as_quarantine(docs: pa.Table) -> pa.Table:
    import orjson

    rows = docs.to_pylist()
    raws = [orjson.dumps(r) for r in rows]
    return pa.table(
        {
            "source_file": docs.column("source_file"),
            "line": docs.column("source_offset"),
            "byte_offset": pa.nulls(docs.num_rows, pa.int64()),
            "reason": pa.array(["duplicate_id"] * docs.num_rows),
            "detail": pa.array([f"id {r['id']!r} already in the corpus" for r in rows]),
            "raw": pa.array([r[:65536] for r in raws], pa.binary()),
            "raw_size": pa.array([len(r) for r in raws], pa.int64()),
        },
        schema=QUARANTINE_SCHEMA,
    )


def ingest_unit_task(unit_index: int, unit: dict, root: str, key: str, options: dict) -> dict:
    """Entry point for a datatrove task (keyword arguments as the executor passes them)."""
    return ingest_unit(root, key, unit_index, unit, options)
