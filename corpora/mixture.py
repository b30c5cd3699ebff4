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
from assay.corpora.storage import duckdb_connect, exists, is_url, open_read, url_fs

FORMAT = "assay-mixture/1"
MIXTURE_SCHEMA = pa.schema([*DOCS_SCHEMA, ("score", pa.float64()), ("copy", pa.int32())])
# What `assay export` writes for a trainer: the document id, its text, where it came from, and
# the source record's other fields (`meta`: a JSON object in JSONL, JSON text in Parquet).
EXPORT_FIELDS = ("id", "text", "source", "url", "meta")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def mixture_path(root: str | Path, name: str) -> Path | str:
    """The mixture's folder: a Path, or a URL string for an `s3://` root."""
    if is_url(root):
        return f"{str(root).rstrip('/')}/mixtures/{name}"
    return Path(root) / "mixtures" / name


def check_name(root: str | Path, name: str, force: bool = False) -> None:
    """A mixture name is a plain folder name, and its catalog view must not clash with another's."""
    from assay.corpora.catalog import view_name

    if not _NAME.match(name or ""):
        raise ValueError(
            f"mixture name {name!r}: use letters, digits, '_', '-' or '.', not starting with a symbol"
        )
    folder = mixture_path(root, name)
    if exists(f"{folder}/manifest.json" if isinstance(folder, str) else folder) and not force:
        raise ValueError(f"mixture {name!r} already exists in {root}; choose another name or pass --force")
    for other in list_mixtures(root):
        if other != name and view_name(other) == view_name(name):
            raise ValueError(
                f"mixture {name!r} would share the catalog view mixture_{view_name(name)} with {other!r}"
            )


def docs_shards_sql(root: str | Path) -> str:
    """read_parquet(...) over the docs shards the root's manifest names (URLs for a URL root,
    read by a connection from `storage.duckdb_connect`)."""
    from assay.corpora.catalog import parquet_list
    from assay.corpora.manifest import load_manifest
    from assay.corpora.storage import join

    files = [join(root, s["name"]) for s in load_manifest(root)["shards"]]
    if not files:
        raise ValueError(f"{root}: the corpus has no docs shards")
    return parquet_list(files, "filename=true, file_row_number=true")


def locate_docs(root: str | Path, ids: pa.Array) -> list[tuple[Path | str, np.ndarray, np.ndarray]]:
    """Where each id lives: per docs shard (in order), its row numbers (ascending) and the
    positions of those ids in `ids`. Reads only the id column of the docs shards."""
    con = duckdb_connect(root)
    try:
        con.register("wanted", pa.table({"id": ids, "pos": pa.array(np.arange(len(ids), dtype=np.int64))}))
        found = con.sql(
            f"SELECT filename, file_row_number AS row, pos FROM {docs_shards_sql(root)} "
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
        out.append(
            (files[start] if is_url(files[start]) else Path(files[start]), rows[start:end], pos[start:end])
        )
        start = end
    return out


def read_rows(path: str | Path, rows: np.ndarray, columns: list[str] | None = None) -> pa.Table:
    """The given rows (ascending) of one Parquet file (local, or an fsspec URL), reading only the
    row groups that hold them."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(open_read(path) if is_url(path) else path)
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
    pieces: Iterator[tuple[Path | str, np.ndarray, np.ndarray, int]],
    manifest: dict,
    recipe_text: str | None = None,
    force: bool = False,
) -> dict:
    """Publish a mixture from a stream of (docs shard, its row numbers ascending, their scores,
    copy number): each piece is read from its shard and appended in the order given, so the
    caller never holds more than one shard's selection."""
    from assay.corpora.atomic import write_bytes_atomic, write_json_atomic
    from assay.corpora.catalog import refresh_catalog
    from assay.corpora.manifest import local_state_dir
    from assay.corpora.shards import ShardWriter, sha256_file, write_table_atomic

    remote = is_url(root)
    root = str(root).rstrip("/") if remote else Path(root)
    work = local_state_dir(root) / "tmp"  # ROOT/.assay/tmp; for a URL root under $ASSAY_CACHE
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
        if remote:  # uploaded with its manifest last (the commit), then the local build is removed
            if exists(f"{final}/manifest.json") and not force:
                raise ValueError(f"mixture {name!r} appeared in {root} while selecting; nothing was replaced")
            manifest = upload_mixture(tmp, root, name)
            shutil.rmtree(tmp, ignore_errors=True)
            refresh_catalog(root)
            return manifest
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
    if is_url(root):  # a mixture is published once its manifest is
        fs, inner = url_fs(f"{str(root).rstrip('/')}/mixtures")
        fs.invalidate_cache()  # another process may have published one since (s3fs caches every folder it listed)
        found = fs.glob(f"{inner}/*/manifest.json") if fs.exists(inner) else []
        return sorted(p.rsplit("/", 2)[1] for p in found)
    base = Path(root) / "mixtures"
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "manifest.json").is_file())


def load_mixture(root: str | Path, name: str) -> dict:
    """A mixture's manifest."""
    import json

    folder = mixture_path(root, name)
    path = f"{folder}/manifest.json" if isinstance(folder, str) else folder / "manifest.json"
    if not exists(path):
        known = ", ".join(list_mixtures(root)) or "none"
        raise ValueError(f"no mixture {name!r} in {root} (mixtures: {known})")
    if isinstance(path, str):
        fs, inner = url_fs(path)
        manifest = json.loads(fs.cat_file(inner))
    else:
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
        with _open_shard(root, name, s["name"]) as source:
            yield from pq.ParquetFile(source).iter_batches(batch_size, columns=columns)


def _open_shard(root: str | Path, name: str, shard: str):
    """A mixture shard opened for reading (through fsspec for a URL root)."""
    folder = mixture_path(root, name)
    return open_read(f"{folder}/{shard}" if isinstance(folder, str) else folder / shard)


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
    if is_url(out):
        return _export_to_url(root, name, fmt, str(out), gzip)
    out = Path(out)
    if out.is_dir() and any(out.glob("part-*")):
        raise ValueError(f"{out} already holds part-* files; export into an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    files = []
    suffix = "parquet" if fmt == "parquet" else ("jsonl.gz" if gzip else "jsonl")
    for i, shard in enumerate(manifest["shards"]):
        dest = out / f"part-{i:05d}.{suffix}"
        source = (
            pq.ParquetFile(_open_shard(root, name, shard["name"]))
            if is_url(root)
            else pq.ParquetFile(mixture_path(root, name) / shard["name"])
        )
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


def _export_to_url(root: str | Path, name: str, fmt: str, out: str, gzip: bool) -> list[dict]:
    """Export to an fsspec URL: the files are written in a local temporary folder, then each is
    uploaded whole (one PUT per object: a reader never sees a half file)."""
    import tempfile

    fs, inner = url_fs(out)
    if fs.glob(f"{inner}/part-*"):
        raise ValueError(f"{out} already holds part-* files; export into an empty folder")
    with tempfile.TemporaryDirectory(prefix="assay-export-") as tmp:
        files = export_mixture(root, name, fmt, tmp, gzip=gzip)
        for f in files:
            fs.put_file(str(Path(tmp) / f["name"]), f"{inner}/{f['name']}")
    return files


def upload_mixture(src: Path, url: str, name: str) -> dict:
    """Upload a built mixture folder to `mixtures/<name>/` of an `s3://` root: shards, recipe,
    and the mixture's manifest last (the commit: `list_mixtures` and `load_mixture` see a mixture
    only once its manifest is there). Replacing a mixture uploads its shards under new names
    (`part-NNNNN.<build>.parquet`), so a reader of the old manifest, or a kill before the
    commit, never meets a half-replaced mixture; the old files are removed after the commit.
    Returns the manifest committed."""
    import json

    manifest = json.loads((src / "manifest.json").read_text())
    fs, inner = url_fs(f"{url.rstrip('/')}/mixtures/{name}")
    fs.invalidate_cache()
    old = set(fs.find(inner)) if fs.exists(inner) else set()
    build = f".{uuid.uuid4().hex[:8]}" if old else ""
    for shard in manifest["shards"]:
        local = src / shard["name"]
        if build:
            shard["name"] = shard["name"].replace(".parquet", f"{build}.parquet")
        fs.put_file(str(local), f"{inner}/{shard['name']}")
    keep = [s["name"] for s in manifest["shards"]] + ["manifest.json"]
    if (src / "recipe.yaml").is_file():  # one small object, replaced whole
        keep.append("recipe.yaml")
        fs.put_file(str(src / "recipe.yaml"), f"{inner}/recipe.yaml")
    if build:
        fs.pipe_file(f"{inner}/manifest.json", json.dumps(manifest, indent=2).encode())
    else:
        fs.put_file(str(src / "manifest.json"), f"{inner}/manifest.json")
    for leftover in sorted(old - {f"{inner}/{n}" for n in keep}):
        fs.rm_file(leftover)
    return manifest
