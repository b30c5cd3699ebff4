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
from assay.corpora.readers import (
    ByteRange,
    arrow_schema,
    detect_format,
    jsonl_fields_found,
    jsonl_split_points,
    read_arrow,
    read_jsonl,
    read_parquet,
    read_text_file,
    read_text_lines,
    read_warc,
)
from assay.corpora.records import FieldMap, schema_has_path
from assay.corpora.schema import DOCS_SCHEMA, QUARANTINE_SCHEMA
from assay.corpora.shards import COMPRESSION, sha256_file, write_table_atomic

TXT_MODES = ("file", "line")


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
    # big uncompressed JSONL inputs are split into line-aligned byte ranges of about this size (0: never)
    split_bytes: int = 0
    max_record_bytes: int = 64 * 1024 * 1024
    raw_cap: int = 64 * 1024
    txt_mode: str = "file"  # .txt inputs: one document per file, or per non-blank line ("line")

    def __post_init__(self) -> None:
        if self.txt_mode not in TXT_MODES:
            raise ValueError(f"--txt-mode must be one of {', '.join(TXT_MODES)}, not {self.txt_mode!r}")
        if self.split_bytes < 0:
            raise ValueError(
                f"--split-bytes must be 0 (never split) or a positive size, not {self.split_bytes}"
            )

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


# stripped in this order from a file name to give its source name
EXTENSIONS = (".gz", ".zst", ".zstd", ".bz2", ".jsonl", ".json", ".ndjson", ".parquet", ".arrow")
EXTENSIONS += (".warc", ".arc", ".txt")

# Small .txt files share a unit (and its shards): a unit per file costs a task, a unit record
# and a shard of one document each.
SMALL_TEXT_BYTES = 4 * 1024 * 1024
TEXT_GROUP_BYTES = 64 * 1024 * 1024
TEXT_GROUP_FILES = 1000

# the fields besides the text, and the options that name them
FIELD_OPTIONS = (
    ("id_field", "--id-field"),
    ("url_field", "--url-field"),
    ("source_field", "--source-field"),
)

_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str | int) -> int:
    """`64MB`, `64M`, `64MiB`, `1.5G`, `4096` or `0` as bytes (K, M, G, T are powers of 1024,
    as for --shard-mb). A ValueError names what it could not read."""
    import re

    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", str(text).upper())
    if not found:
        raise ValueError(f"{text!r} is not a size (e.g. 64MB, 1.5G, 4096 or 0)")
    return int(float(found.group(1)) * _SIZE_UNITS[found.group(2)])


# ---------------------------------------------------------------- planning


def default_source(key: str) -> str:
    """A file's source name: its base name without format extensions (cc_en_head-0091)."""
    name = PurePosixPath(key).name
    for ext in EXTENSIONS:
        name = name.removesuffix(ext)
    return name


def plan_units(files: list[InputFile], options: IngestOptions) -> list[dict[str, Any]]:
    """One unit per input file; big Parquet files split by row-group ranges, small .txt files
    grouped. A field named by an option that no record of an input has is a ValueError."""
    import fsspec

    units, planned = [], []
    for file in files:
        kind, compression = detect_format(file.path)
        fs, fpath = fsspec.core.url_to_fs(file.path)
        size = fs.size(fpath)
        base = {"path": file.path, "key": file.key, "kind": kind, "compression": compression, "bytes": size}
        if file.source:
            base["source"] = file.source
        meta = _parquet_metadata(fs, fpath, file.path) if kind == "parquet" and size != 0 else None
        planned.append({**base, "fs": fs, "fpath": fpath, "parquet_meta": meta})
        if kind == "jsonl" and compression is None and 0 < options.split_bytes < size:
            with fs.open(fpath, "rb") as raw:
                points = jsonl_split_points(raw, size, options.split_bytes)
            ends = [p[0] for p in points[1:]] + [size]
            for part, ((start, first_line), end) in enumerate(zip(points, ends)):
                units.append({**base, "byte_range": [start, end], "first_line": first_line, "part": part})
            continue
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
    check_fields(planned, options)
    return _group_small_text(units)


def _group_small_text(units: list[dict]) -> list[dict]:
    """Runs of small .txt files, in input order, become one unit each (`files` lists them)."""
    out: list[dict] = []
    for unit in units:
        small = unit["kind"] == "txt" and unit["bytes"] is not None and unit["bytes"] < SMALL_TEXT_BYTES
        group = out[-1] if out and "files" in out[-1] else None
        if not small:
            out.append(unit)
        elif (
            group is not None
            and group["bytes"] + unit["bytes"] <= TEXT_GROUP_BYTES
            and len(group["files"]) < TEXT_GROUP_FILES
        ):
            group["files"].append(unit)
            group["bytes"] += unit["bytes"]
        else:
            out.append({"path": unit["path"], "kind": "txt", "bytes": unit["bytes"], "files": [unit]})
    return out


def check_fields(files: list[dict], options: IngestOptions) -> None:
    """Refuse field names that match nothing, which would otherwise quarantine every record or
    leave a column silently null.

    The text field must be in some record of every input (a record without it is quarantined
    `missing_text`). A field named with another option (`--url-field metadata.url`) may be absent
    from an input (ids are then derived, urls null) but must be in some record of the run.
    First records are read first; a whole input only when its first record lacks a field.
    """
    defaults = IngestOptions()
    text = options.text_field
    named: dict[str, str] = {}
    for attr, flag in FIELD_OPTIONS:
        path = getattr(options, attr)
        if path != getattr(defaults, attr) and path != text:
            named.setdefault(path, flag)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:  # one small read per input: remote inputs wait in parallel
        firsts = list(pool.map(lambda f: _fields_found(f, [text, *named], whole=False), files))
    with_records, found_named, first_keys = [], set(), {}
    for f, (found, keys) in zip(files, firsts):
        if keys is None:  # no record to have any field
            continue
        with_records.append(f)
        first_keys[f["path"]] = keys
        found_named |= found
        if text not in found and text not in _fields_found(f, [text], whole=True)[0]:
            raise ValueError(
                f"{f['path']}: no record has the text field {text!r} (--text-field); " + _keys(keys)
            )
    missing = [p for p in named if p not in found_named]
    for f in with_records:
        if not missing:
            return
        found = _fields_found(f, missing, whole=True)[0]
        missing = [p for p in missing if p not in found]
    if missing:
        f = with_records[0]
        raise ValueError(
            f"{missing[0]!r} ({named[missing[0]]}): no record of any input has this field; "
            f"{f['path']}: " + _keys(first_keys[f["path"]])
        )


def _keys(keys: list[str]) -> str:
    return f"the first record's top-level keys are: {', '.join(keys) or '(none)'}"


def _fields_found(f: dict, paths: list[str], whole: bool) -> tuple[set[str], list[str] | None]:
    """Which paths a planned input has (see jsonl_fields_found); WARC and .txt have no fields."""
    kind = f["kind"]
    if kind not in ("jsonl", "parquet", "arrow") or f["bytes"] == 0:
        return set(paths), None
    if kind == "parquet":
        meta = f["parquet_meta"]
        if meta is None or meta.num_rows == 0:  # cut short (its unit quarantines it), or no rows
            return set(paths), None
        schema = meta.schema.to_arrow_schema()
        return {p for p in paths if schema_has_path(schema, p)}, schema.names
    with f["fs"].open(f["fpath"], "rb") as raw:
        if kind == "jsonl":
            return jsonl_fields_found(raw, f["compression"], paths, whole)
        read = arrow_schema(raw)
    if read is None or not read[1]:
        return set(paths), None
    return {p for p in paths if schema_has_path(read[0], p)}, read[0].names


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


class DocShards:
    """Docs shards whose bytes depend on the sequence of documents alone, never on how a reader
    happened to block them: row groups of exactly `row_group_size` rows (the last one shorter),
    a shard closed at `max_rows` rows or once its text reaches `max_bytes`. That is what lets the
    byte-range units of one file merge into the very shards a single unit writes.

    Each shard is written under a temporary name and renamed when complete.
    """

    def __init__(
        self, folder: Path, name_format: str, max_rows: int, max_bytes: int, row_group_size: int = 20_000
    ):
        self.folder, self.name_format = Path(folder), name_format
        self.max_rows, self.max_bytes, self.row_group_size = max_rows, max_bytes, row_group_size
        self.shards: list[dict] = []
        self._pending: list[pa.Table] = []
        self._n_pending = 0
        self._writer = None
        self._tmp: Path | None = None
        self._rows = self._bytes = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._pending.append(table.cast(DOCS_SCHEMA))
            self._n_pending += table.num_rows
            if self._n_pending >= self.row_group_size:
                self._drain(final=False)

    def _drain(self, final: bool) -> None:
        import numpy as np
        import pyarrow.compute as pc

        table = pa.concat_tables(self._pending) if self._pending else DOCS_SCHEMA.empty_table()
        while table.num_rows >= self.row_group_size or (final and table.num_rows):
            n = min(self.row_group_size, self.max_rows - self._rows, table.num_rows)
            sizes = np.cumsum(pc.binary_length(table.column("text").slice(0, n)).fill_null(0).to_numpy())
            over = np.flatnonzero(self._bytes + sizes >= self.max_bytes)
            if len(over):
                n = int(over[0]) + 1
            self._emit(table.slice(0, n).combine_chunks(), int(sizes[n - 1]))
            table = table.slice(n)
        self._pending = [table] if table.num_rows else []
        self._n_pending = table.num_rows

    def _emit(self, chunk: pa.Table, text_bytes: int) -> None:
        import pyarrow.parquet as pq

        from assay.corpora.atomic import temp_path_for

        if self._writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._final = self.folder / self.name_format.format(len(self.shards))
            self._tmp = temp_path_for(self._final)
            self._writer = pq.ParquetWriter(self._tmp, DOCS_SCHEMA, compression=COMPRESSION)
        self._writer.write_table(chunk, row_group_size=self.row_group_size)
        self._rows += chunk.num_rows
        self._bytes += text_bytes
        if self._rows >= self.max_rows or self._bytes >= self.max_bytes:
            self._close_current()

    def _close_current(self) -> None:
        if self._writer is not None:
            self._writer.close()
            os.replace(self._tmp, self._final)
            self.shards.append({"name": self._final.name, "rows": self._rows})
            self._writer = None
            self._rows = self._bytes = 0

    def close(self) -> list[dict]:
        self._drain(final=True)
        self._close_current()
        return self.shards

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()  # may fail again on a full disk: the temporary goes anyway
            except OSError:
                pass
            finally:
                self._tmp.unlink(missing_ok=True)
                self._writer = None


def unit_record_path(root: Path, key: str, index: int) -> Path:
    return root / ".assay" / "units" / f"ingest-{key}" / f"u{index:05d}.json"


def ingest_unit(root: str, key: str, index: int, unit: dict, options: dict) -> dict:
    """Read one unit into staged shards; writes its unit record last (the completion marker)."""
    root_p = Path(root)
    record_path = unit_record_path(root_p, key, index)
    if record_path.exists():
        with open(record_path) as f:
            return json.load(f)
    opts = IngestOptions(**options)
    stage = root_p / "docs" / ".staging" / key
    writer = DocShards(stage, f"u{index:05d}-{{:04d}}.parquet", opts.shard_rows, opts.shard_bytes)
    quarantined: list[pa.Table] = []
    counts = []  # per input file of the unit
    started = time.time()
    done = {"read": 0, "bytes": 0}  # over the files before the current one, for progress
    try:
        for file in unit.get("files", [unit]):
            counts.append(_read_file(file, opts, writer, quarantined, done))
        shards = writer.close()
    except BaseException:
        writer.abort()
        raise
    n_read = sum(c["records_read"] for c in counts)
    progress.report(n_read, int(unit.get("bytes_share", unit.get("bytes", 0))), final=True)
    n_docs = sum(c["docs"] for c in counts)
    n_quarantined = sum(t.num_rows for t in quarantined)
    if quarantined:
        write_table_atomic(pa.concat_tables(quarantined).combine_chunks(), stage / f"q{index:05d}.parquet")
    record = {
        "unit": index,
        "path": unit["path"],
        "records_read": n_read,
        "docs": n_docs,
        "quarantined": n_quarantined,
        "inputs": counts,
        "shards": shards,
        "seconds": round(time.time() - started, 3),
    }
    if n_read != n_docs + n_quarantined:  # a reader bug, never the input's fault: fail loudly
        raise RuntimeError(f"{unit['path']}: read {n_read} != {n_docs} docs + {n_quarantined} quarantined")
    write_json_atomic(record_path, record)
    return record


def _read_file(file: dict, opts: IngestOptions, writer: DocShards, quarantined: list, done: dict) -> dict:
    """One input file (or its unit's row groups) through its reader into the unit's writer."""
    import fsspec

    fields = opts.fields()
    if opts.source is None:
        from dataclasses import replace

        fields = replace(fields, default_source=file.get("source") or default_source(file["key"]))
    n_read = n_docs = n_quarantined = 0
    own_quarantine: list[pa.Table] = []
    path, kind, compression = file["path"], file["kind"], file["compression"]
    fs, fpath = fsspec.core.url_to_fs(path)
    with fs.open(fpath, "rb") as opened:
        raw = opened
        if kind == "jsonl" and "byte_range" in file:
            start, end = file["byte_range"]
            raw = ByteRange(opened, start, end)
            blocks = read_jsonl(raw, None, fields, path, file["key"], file["first_line"], start)
        elif kind == "jsonl":
            blocks = read_jsonl(raw, compression, fields, path, file["key"])
        elif kind == "parquet":
            blocks = read_parquet(raw, fields, path, file["key"], file.get("row_groups"))
        elif kind == "arrow":
            blocks = read_arrow(raw, fields, path, file["key"])
        elif kind == "txt":
            read_text = read_text_lines if opts.txt_mode == "line" else read_text_file
            blocks = read_text(raw, compression, fields, path, file["key"])
        else:
            blocks = read_warc(raw, compression, fields, path, file["key"])
        share = int(file.get("bytes_share", file.get("bytes", 0)))
        streamed = kind in ("jsonl", "warc", "txt")  # the read position tells how far it got
        for block in blocks:
            n_read += block.n_read
            n_docs += block.docs.num_rows
            n_quarantined += block.quarantine.num_rows
            if block.docs.num_rows:
                writer.write(block.docs)
            if block.quarantine.num_rows:
                own_quarantine.append(block.quarantine)
            at = min(raw.tell(), share) if streamed else 0
            progress.report(done["read"] + n_read, done["bytes"] + at)
    if own_quarantine:
        # in record order: a block reports its too-large lines first, so the order would
        # otherwise depend on where blocks (and byte ranges) begin
        import pyarrow.compute as pc

        table = pa.concat_tables(own_quarantine)
        quarantined.append(table.take(pc.sort_indices(table, [("line", "ascending")])))
    done["read"] += n_read
    done["bytes"] += share
    return {"path": path, "records_read": n_read, "docs": n_docs, "quarantined": n_quarantined}


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
        records = _merge_ranges(stage, units, records, options)
        plan = _make_plan(root, stage, records, manifest)
        write_json_atomic(plan_path, plan)
    _execute_plan(root, stage, plan)

    per_input: dict[str, dict] = {}
    for unit, rec in zip(units, records):
        for file, counts in zip(unit.get("files", [unit]), rec["inputs"]):
            entry = per_input.setdefault(
                file["path"],
                {
                    "path": file["path"],
                    "key": file["key"],
                    "kind": file["kind"],
                    "compression": file["compression"],
                    "bytes": file["bytes"],
                    "records_read": 0,
                    "docs": 0,
                    "quarantined": 0,
                },
            )
            for k in ("records_read", "docs", "quarantined"):
                entry[k] += counts[k]
    for dup in plan["duplicates"]:
        per_input[dup["input"]]["docs"] -= dup["count"]
        per_input[dup["input"]]["quarantined"] += dup["count"]
    for entry in per_input.values():
        if not entry["records_read"]:  # counted and said, never silently skipped
            entry["note"] = "empty file (0 bytes)" if entry["bytes"] == 0 else "no records in this file"

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


def _merge_ranges(stage: Path, units: list[dict], records: list[dict], options: IngestOptions) -> list[dict]:
    """The byte-range units of each split file become one unit's worth of staged shards, the same
    bytes a single unit would have written (DocShards), in the first range's record.

    Idempotent: the merged shards are named `m<unit>-NNNN` (the ranges' own files stay until the
    stage is removed) and `m<unit>.json`, written last, marks the merge of a file done.
    """
    import pyarrow.parquet as pq

    records = [dict(r) for r in records]
    by_file: dict[str, list[int]] = {}
    for i, unit in enumerate(units):
        if "byte_range" in unit:
            by_file.setdefault(unit["path"], []).append(i)
    for indices in by_file.values():
        if len(indices) < 2:
            continue
        first = indices[0]
        marker = stage / f"m{first:05d}.json"
        if marker.exists():
            merged = json.loads(marker.read_text())
        else:
            sink = DocShards(stage, f"m{first:05d}-{{:04d}}.parquet", options.shard_rows, options.shard_bytes)
            quarantine = []
            for i in indices:
                for shard in records[i]["shards"]:
                    pf = pq.ParquetFile(stage / shard["name"])
                    for g in range(pf.num_row_groups):
                        sink.write(pf.read_row_group(g))
                if records[i]["quarantined"]:
                    quarantine.append(pq.read_table(stage / f"q{i:05d}.parquet"))
            merged = {"shards": sink.close(), "quarantined": sum(t.num_rows for t in quarantine)}
            if quarantine:
                table = pa.concat_tables(quarantine).combine_chunks()
                write_table_atomic(table, stage / f"qm{first:05d}.parquet")
            write_json_atomic(marker, merged)
        for i in indices:
            records[i] = {**records[i], "shards": [], "quarantined": 0}
        records[first].update(shards=merged["shards"], quarantined=merged["quarantined"])
        records[first]["quarantine_file"] = f"qm{first:05d}.parquet"
    return records


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
    q_staged = [r.get("quarantine_file", f"q{r['unit']:05d}.parquet") for r in records if r["quarantined"]]
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
