"""A selected mixture on disk: `mixtures/<name>/part-NNNNN.parquet`, `manifest.json`, `recipe.yaml`.

Shards hold the documents' own columns (`id, text, source, url, meta, source_file,
source_offset`) plus `score` (the rank the recipe computed) and `copy` (0 for a document's first
occurrence, 1 for its second, ...: a repeated document appears once per copy). Rows come in
passes: every chosen document once in corpus order, then the second copies, and so on; a
trainer's loader shuffles. The whole folder is built under `.assay/tmp/` and renamed into
`mixtures/` when complete, so a failed or killed selection leaves no mixture behind. The catalog
shows each mixture as the view `mixture_<name>`.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from assay.corpora.schema import DOCS_SCHEMA

FORMAT = "assay-mixture/1"
MIXTURE_SCHEMA = pa.schema([*DOCS_SCHEMA, ("score", pa.float64()), ("copy", pa.int32())])
# What `assay export` writes for a trainer: the document id, its text, where it came from, and
# the source record's other fields (`meta`: a JSON object in JSONL, JSON text in Parquet).
EXPORT_FIELDS = ("id", "text", "source", "url", "meta")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def mixture_path(root: str | Path, name: str) -> Path:
    return Path(root) / "mixtures" / name


def check_name(root: str | Path, name: str, force: bool = False) -> None:
    """A mixture name is a plain folder name, and its catalog view must not clash with another's."""
    from assay.corpora.catalog import view_name

    if not _NAME.match(name or ""):
        raise ValueError(
            f"mixture name {name!r}: use letters, digits, '_', '-' or '.', not starting with a symbol"
        )
    if mixture_path(root, name).exists() and not force:
        raise ValueError(f"mixture {name!r} already exists in {root}; choose another name or pass --force")
    for other in list_mixtures(root):
        if other != name and view_name(other) == view_name(name):
            raise ValueError(
                f"mixture {name!r} would share the catalog view mixture_{view_name(name)} with {other!r}"
            )


def locate_docs(root: str | Path, ids: pa.Array) -> list[tuple[Path, np.ndarray, np.ndarray]]:
    """Where each id lives: per docs shard (in order), its row numbers (ascending) and the
    positions of those ids in `ids`. Reads only the id column of the docs shards."""
    import duckdb

    from assay.corpora.catalog import sql_literal

    docs = (Path(root) / "docs").resolve()
    con = duckdb.connect()
    try:
        con.register("wanted", pa.table({"id": ids, "pos": pa.array(np.arange(len(ids), dtype=np.int64))}))
        found = con.sql(
            f"SELECT filename, file_row_number AS row, pos FROM read_parquet("
            f"{sql_literal(str(docs / 'part-*.parquet'))}, filename=true, file_row_number=true) "
            "JOIN wanted USING (id) ORDER BY filename, row"
        ).to_arrow_table()
    finally:
        con.close()
    if found.num_rows != len(ids):
        raise ValueError(f"{len(ids) - found.num_rows} selected ids are not in the docs shards of {root}")
    files = found.column("filename").to_pylist()
    rows = found.column("row").to_numpy()
    pos = found.column("pos").to_numpy()
    out = []
    start = 0
    for end in [i for i in range(1, len(files)) if files[i] != files[i - 1]] + [len(files)]:
        out.append((Path(files[start]), rows[start:end], pos[start:end]))
        start = end
    return out


def read_rows(path: str | Path, rows: np.ndarray, columns: list[str] | None = None) -> pa.Table:
    """The given rows (ascending) of one Parquet file, reading only the row groups that hold them."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    group_of = np.searchsorted(starts, rows, side="right") - 1
    groups = np.unique(group_of)
    table = pf.read_row_groups(groups.tolist(), columns=columns)
    # where each chosen group begins inside the table just read
    offset = np.zeros(len(sizes), dtype=np.int64)
    offset[groups] = np.concatenate([[0], np.cumsum(np.asarray(sizes)[groups])[:-1]])
    return table.take(pa.array(rows - starts[group_of] + offset[group_of]))


def write_mixture(
    root: str | Path,
    name: str,
    ids: pa.Array,
    counts: np.ndarray,
    scores: np.ndarray,
    manifest: dict,
    recipe_text: str | None = None,
    force: bool = False,
) -> dict:
    """Copy the chosen documents (each `counts[i]` times) shard by shard and publish the mixture."""

    def pieces() -> Iterator[tuple[Path, np.ndarray, np.ndarray, int]]:
        places = locate_docs(root, ids) if len(ids) else []
        for copy in range(int(counts.max()) if len(counts) else 0):
            for path, rows, pos in places:
                keep = counts[pos] > copy
                if keep.any():
                    yield path, rows[keep], scores[pos[keep]], copy

    return write_mixture_pieces(root, name, pieces(), manifest, recipe_text, force)


def write_mixture_pieces(
    root: str | Path,
    name: str,
    pieces: Iterator[tuple[Path, np.ndarray, np.ndarray, int]],
    manifest: dict,
    recipe_text: str | None = None,
    force: bool = False,
) -> dict:
    """Publish a mixture from a stream of (docs shard, its row numbers ascending, their scores,
    copy number): each piece is read from its shard and appended in the order given, so the
    caller never holds more than one shard's selection."""
    from assay.corpora.atomic import write_bytes_atomic, write_json_atomic
    from assay.corpora.catalog import refresh_catalog
    from assay.corpora.shards import ShardWriter, sha256_file, write_table_atomic

    root = Path(root)
    work = root / ".assay" / "tmp"
    for stale in work.glob(f"mixture-{name}-*"):  # left by a killed run of this name
        shutil.rmtree(stale, ignore_errors=True)
    tmp = work / f"mixture-{name}-{uuid.uuid4().hex[:8]}"
    writer = ShardWriter(tmp, MIXTURE_SCHEMA, "part-{:05d}.parquet")
    try:
        for path, rows, scores, copy in pieces:
            table = read_rows(path, rows, DOCS_SCHEMA.names)
            table = table.append_column("score", pa.array(scores, pa.float64(), from_pandas=True))
            table = table.append_column("copy", pa.array(np.full(table.num_rows, copy, np.int32)))
            writer.write(table)
        shards = writer.close()
        if not shards:  # an empty selection still gets a (0-row) shard, so its view exists
            write_table_atomic(MIXTURE_SCHEMA.empty_table(), tmp / "part-00000.parquet")
            shards = [{"name": "part-00000.parquet", "rows": 0}]
        for s in shards:
            f = tmp / s["name"]
            s.update(bytes=f.stat().st_size, sha256=sha256_file(f))
        manifest = {"format": FORMAT, **manifest, "shards": shards}
        write_json_atomic(tmp / "manifest.json", manifest)
        if recipe_text is not None:
            write_bytes_atomic(tmp / "recipe.yaml", recipe_text.encode())
        final = mixture_path(root, name)
        final.parent.mkdir(parents=True, exist_ok=True)
        old = None
        if final.exists():
            if not force:
                raise ValueError(f"mixture {name!r} appeared in {root} while selecting; nothing was replaced")
            old = work / f"replaced-{name}-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    refresh_catalog(root)
    return manifest


def list_mixtures(root: str | Path) -> list[str]:
    base = Path(root) / "mixtures"
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "manifest.json").is_file())


def load_mixture(root: str | Path, name: str) -> dict:
    """A mixture's manifest."""
    import json

    path = mixture_path(root, name) / "manifest.json"
    if not path.is_file():
        known = ", ".join(list_mixtures(root)) or "none"
        raise ValueError(f"no mixture {name!r} in {root} (mixtures: {known})")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not an Assay mixture manifest (format {manifest.get('format')!r})")
    return manifest


def mixture_batches(
    root: str | Path, name: str, columns: list[str] | None = None, batch_size: int = 8192
) -> Iterator[pa.RecordBatch]:
    """Stream a mixture's rows (with repetition), shard by shard."""
    import pyarrow.parquet as pq

    manifest = load_mixture(root, name)
    for s in manifest["shards"]:
        yield from pq.ParquetFile(mixture_path(root, name) / s["name"]).iter_batches(
            batch_size, columns=columns
        )


def export_mixture(root: str | Path, name: str, fmt: str, out: str | Path, gzip: bool = False) -> list[dict]:
    """Write the mixture for a trainer: one file per mixture shard with the fields EXPORT_FIELDS."""
    import gzip as gz

    import orjson
    import pyarrow.parquet as pq

    from assay.corpora.atomic import atomic_path
    from assay.corpora.shards import sha256_file, write_table_atomic

    if fmt not in ("jsonl", "parquet"):
        raise ValueError(f"unknown export format {fmt!r}; use jsonl or parquet")
    manifest = load_mixture(root, name)
    out = Path(out)
    if out.is_dir() and any(out.glob("part-*")):
        raise ValueError(f"{out} already holds part-* files; export into an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    files = []
    suffix = "parquet" if fmt == "parquet" else ("jsonl.gz" if gzip else "jsonl")
    for i, shard in enumerate(manifest["shards"]):
        dest = out / f"part-{i:05d}.{suffix}"
        source = pq.ParquetFile(mixture_path(root, name) / shard["name"])
        if fmt == "parquet":
            write_table_atomic(source.read(columns=list(EXPORT_FIELDS)), dest)
        else:
            with (
                atomic_path(dest) as tmp,
                gz.open(tmp, "wb", compresslevel=6) if gzip else open(tmp, "wb") as f,
            ):
                for batch in source.iter_batches(8192, columns=list(EXPORT_FIELDS)):
                    for row in batch.to_pylist():
                        # meta is JSON text already: embed it as an object without parsing it again
                        row["meta"] = orjson.Fragment(row["meta"]) if row["meta"] else None
                        f.write(orjson.dumps(row) + b"\n")
        files.append({"name": dest.name, "rows": shard["rows"], "sha256": sha256_file(dest)})
    return files
