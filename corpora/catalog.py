"""catalog.duckdb: SQL views over the Parquet files of a corpus root.

Views use absolute paths, so the file opens from any working directory in the stock `duckdb`
CLI. The views list the files the manifest names (the root's truth: no directory listing per
open, a half-published file is never read). A root that was moved, or whose manifest changed,
is noticed by `open_catalog`, which rebuilds the views before opening: every Assay command sees
a current catalog. A rebuild is written under a temporary name and renamed into place, so
readers that have the catalog open are never disturbed.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from assay.corpora.storage import duckdb_connect, is_url, join, url_fs

if TYPE_CHECKING:
    import pyarrow as pa

CATALOG_NAME = "catalog.duckdb"
# Bumped when the views a given manifest yields change, so every catalog is rebuilt once.
CATALOG_LAYOUT = "assay-catalog/2"
# Modules that add views or macros of their own: "module:function(root) -> list[str] of SQL".
CATALOG_EXTENSIONS: list[str] = [
    "assay.corpora.facts:catalog_statements",
    "assay.corpora.targets:catalog_statements",
]

_EMPTY_DOCS = (
    "SELECT NULL::VARCHAR AS id, NULL::VARCHAR AS text, NULL::VARCHAR AS source, NULL::VARCHAR AS url, "
    "NULL::VARCHAR AS meta, NULL::VARCHAR AS source_file, NULL::BIGINT AS source_offset WHERE false"
)
_EMPTY_QUARANTINE = (
    "SELECT NULL::VARCHAR AS source_file, NULL::BIGINT AS line, NULL::BIGINT AS byte_offset, "
    "NULL::VARCHAR AS reason, NULL::VARCHAR AS detail, NULL::BLOB AS raw, NULL::BIGINT AS raw_size WHERE false"
)


class ReadOnlyError(ValueError):
    """A statement tried to change the catalog through a read-only connection."""


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def view_name(name: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", name.lower())


def parquet_glob(folder: Path) -> str | None:
    """read_parquet(...) over a folder's shards, or None when it has none yet."""
    if not folder.is_dir() or not any(folder.glob("part-*.parquet")):
        return None
    return f"read_parquet({sql_literal(str(folder.resolve() / 'part-*.parquet'))})"


_LIST_LITERAL_MAX = 64  # up to this many files a view lists them as a readable SQL list


def parquet_list(files: list[str], options: str = "") -> str | None:
    """read_parquet([...]) over exactly these files (None for none): the manifest's files, so a
    file on disk that the manifest does not name (half published, or stray) is never read.
    `options` are read_parquet's named arguments, e.g. "filename=true"."""
    if not files:
        return None
    extra = f", {options}" if options else ""
    if len(files) == 1:
        return f"read_parquet({sql_literal(files[0])}{extra})"
    if len(files) <= _LIST_LITERAL_MAX or any("\n" in f for f in files):
        return f"read_parquet([{', '.join(sql_literal(f) for f in files)}]{extra})"
    # DuckDB parses a list literal element by element: 100k paths take seconds on every bind of
    # the view. One string split at bind time is 10x faster (bench/planning.py).
    return f"read_parquet(string_split({sql_literal(chr(10).join(files))}, chr(10)){extra})"


@dataclass
class Sources:
    """What the catalog's views read: file lists (or globs) per view, annotation sets with their
    columns. Built from the manifest (`manifest_sources`) or, the old way, from a directory
    listing (`listing_sources`: kept for drift checks and the planning bench)."""

    docs: str | None = None
    quarantine: str | None = None
    # annotation set -> (read_parquet source, columns other than id)
    annotations: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    triples: dict[str, str] = field(default_factory=dict)


def _parts(entry: dict, table: str, name: str) -> list[str]:
    """The shard files of one table of an annotation set, from its manifest keys (an extractor's
    tables other than its own name are keyed `table/part`)."""
    keys = entry.get("shards") or {}
    if table == name:
        return sorted(k for k in keys if "/" not in k)
    prefix = table + "/"
    return sorted(k[len(prefix) :] for k in keys if k.startswith(prefix))


def manifest_sources(root: str | Path, manifest: dict, verify: bool = False) -> Sources:
    """The views' inputs from the manifest alone: no listing of the shard folders, one stat per
    annotation table (a table a command removed, e.g. a replaced fact set's mentions, is left out).

    With `verify`, files the manifest names but the disk lacks are left out too (one stat per
    file: the fallback when a view over the manifest's files cannot be created)."""

    remote = is_url(root)

    def present(files: list[str]) -> list[str]:
        return [f for f in files if os.path.exists(f)] if verify and not remote else files

    base = join(root)  # resolved once: 100k shards mean 100k paths
    src = Sources()
    src.docs = parquet_list(present([f"{base}/{s['name']}" for s in manifest.get("shards", [])]))
    src.quarantine = parquet_list(present([f"{base}/{q['name']}" for q in manifest.get("quarantine", [])]))
    for name, entry in sorted(manifest.get("annotations", {}).items()):
        extractor = entry.get("kind") == "extractor"
        tables = entry.get("columns") or {name: None}
        for table, columns in tables.items():
            folder = f"{base}/{'triples' if extractor else 'annotations'}/{table}"
            parts = _parts(entry, table, name)
            if not parts or (not remote and not os.path.isdir(folder)):
                continue
            files = present([f"{folder}/{p}" for p in parts])
            if not files:
                continue
            if extractor:
                src.triples[table] = parquet_list(files)
            else:  # each annotations/<table>/ folder is a set of its own, as listed before
                if columns is None:
                    import pyarrow.parquet as pq

                    columns = pq.read_schema(files[0]).names
                src.annotations[table] = (parquet_list(files), [c for c in columns if c != "id"])
    src.annotations = dict(sorted(src.annotations.items()))
    src.triples = dict(sorted(src.triples.items()))
    return src


def listing_sources(root: Path) -> Sources:
    """The views' inputs from a directory listing (the catalog before the manifest was its truth)."""
    import pyarrow.parquet as pq

    root = root.resolve()
    src = Sources(docs=parquet_glob(root / "docs"), quarantine=parquet_glob(root / "quarantine"))
    for name, folder in annotation_sets(root).items():
        first = next(folder.glob("part-*.parquet"))
        cols = [c for c in pq.read_schema(first).names if c != "id"]
        src.annotations[name] = (parquet_glob(folder), cols)
    triples = root / "triples"
    if triples.is_dir():
        for folder in sorted(p for p in triples.iterdir() if p.is_dir()):
            glob = parquet_glob(folder)
            if glob:
                src.triples[folder.name] = glob
    return src


def _small_listing(root: str | Path) -> list[str]:
    """A few stats, not one per shard: the shard folders themselves and each annotation table's
    folder (a folder's mtime changes when a file is added to it or removed, so a file deleted
    behind the manifest's back still triggers a rebuild), and the entries of mixtures/, facts/
    and targets/ (a handful of files each)."""

    out: list[str] = []
    if is_url(root):  # no folder mtimes on an object store: the manifest, and the mixtures' manifests
        fs, inner = url_fs(root)
        fs.invalidate_cache()  # another process may have published one since (s3fs caches every folder it listed)
        found = fs.glob(f"{inner}/mixtures/*/manifest.json", detail=True)
        for path, info in sorted(found.items()):
            tag = info.get("ETag") or info.get("LastModified") or info.get("mtime")
            out.append(f"{path[len(inner) + 1 :]}:{info.get('size')}:{tag}")
        return out
    for sub in ("docs", "quarantine"):
        try:
            out.append(f"{sub}:{(root / sub).stat().st_mtime_ns}")
        except FileNotFoundError:
            pass
    for sub in ("annotations", "triples", "mixtures", "facts", "targets"):
        base = root / sub
        if not base.is_dir():
            continue
        for entry in sorted(os.scandir(base), key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            out.append(f"{sub}/{entry.name}:{st.st_size}:{st.st_mtime_ns}")
    return out


def fingerprint(root: str | Path, manifest_bytes: bytes | None = None) -> str:
    """Changes when the root moves, its manifest changes (shards or annotation sets published),
    or a mixture, fact set or targets set is added or replaced. Reads the manifest and lists
    only the small folders: cheap at 100k shards."""
    from assay.corpora.manifest import read_manifest_bytes

    if manifest_bytes is None:
        manifest_bytes = read_manifest_bytes(root) or b""
    h = hashlib.sha256(f"{CATALOG_LAYOUT}\n{join(root)}\n".encode())
    h.update(hashlib.sha256(manifest_bytes).digest())
    for line in _small_listing(root):
        h.update(line.encode() + b"\n")
    for ext in CATALOG_EXTENSIONS:
        h.update(ext.encode())
    return h.hexdigest()


def listing_fingerprint(root: Path) -> str:
    """The old fingerprint: every published Parquet file of the root, found by listing (slow at
    100k shards; kept for the planning bench)."""
    h = hashlib.sha256(str(root.resolve()).encode())
    for sub in ("docs", "annotations", "triples", "quarantine", "mixtures", "facts", "targets"):
        base = root / sub
        if base.is_dir():
            for p in sorted(base.rglob("*.parquet")):
                if not p.name.startswith("."):
                    h.update(str(p.relative_to(root)).encode())
    for ext in CATALOG_EXTENSIONS:
        h.update(ext.encode())
    return h.hexdigest()


def annotation_sets(root: Path) -> dict[str, Path]:
    """Annotation folders holding shards, by listing (see `manifest_sources` for the truth)."""
    base = root / "annotations"
    if not base.is_dir():
        return {}
    return {p.name: p for p in sorted(base.iterdir()) if p.is_dir() and any(p.glob("part-*.parquet"))}


def view_statements(root: str | Path, sources: Sources | None = None) -> list[str]:
    """The SQL that (re)creates every view of the catalog (from the manifest unless given)."""
    from assay.corpora.manifest import load_manifest

    remote = is_url(root)
    root = Path(root).resolve() if not remote else root
    if sources is None:
        sources = manifest_sources(root, load_manifest(root))
    stmts = []
    docs, quarantine = sources.docs, sources.quarantine
    stmts.append(f"CREATE OR REPLACE VIEW docs AS {('SELECT * FROM ' + docs) if docs else _EMPTY_DOCS}")
    stmts.append(
        f"CREATE OR REPLACE VIEW quarantine AS {('SELECT * FROM ' + quarantine) if quarantine else _EMPTY_QUARANTINE}"
    )
    # One wide view: every annotation set joined to the documents by id.
    select = ["d.id", "d.source", "d.url"]
    joins = []
    taken = {"id", "source", "url"}
    for i, (name, (src, columns)) in enumerate(sources.annotations.items()):
        alias = f"a{i}"
        for col in columns:
            out = col if col not in taken else f"{view_name(name)}_{col}"
            taken.add(out)
            select.append(f"{alias}.{ident(col)} AS {ident(out)}")
        joins.append(f"LEFT JOIN {src} {alias} USING (id)")
        stmts.append(
            f"CREATE OR REPLACE VIEW {ident('annotations_' + view_name(name))} AS SELECT * FROM {src}"
        )
    stmts.append(
        f"CREATE OR REPLACE VIEW annotations AS SELECT {', '.join(select)} FROM docs d {' '.join(joins)}"
    )
    for table, src in sources.triples.items():
        stmts.append(f"CREATE OR REPLACE VIEW {ident(view_name(table))} AS SELECT * FROM {src}")
    if remote:  # a published mixture is the shards its manifest names (the manifest is the commit)
        from assay.corpora.mixture import list_mixtures, load_mixture

        for name in list_mixtures(root):
            shards = load_mixture(root, name)["shards"]
            src = parquet_list([join(root, "mixtures", name, s["name"]) for s in shards])
            stmts.append(
                f"CREATE OR REPLACE VIEW {ident('mixture_' + view_name(name))} AS SELECT * FROM {src}"
            )
    elif (root / "mixtures").is_dir():
        for folder in sorted(p for p in (root / "mixtures").iterdir() if p.is_dir()):
            src = parquet_glob(folder)
            if src:
                stmts.append(
                    f"CREATE OR REPLACE VIEW {ident('mixture_' + view_name(folder.name))} AS SELECT * FROM {src}"
                )
    for ext in CATALOG_EXTENSIONS:  # facts and targets: local roots only
        if remote:
            break
        module, func = ext.split(":")
        stmts.extend(getattr(importlib.import_module(module), func)(root))
    return stmts


def refresh_catalog(root: str | Path, sources: Sources | None = None) -> Path:
    """Rebuild every view (cheap: views only, no data is copied).

    The new catalog is built under a temporary name and renamed onto catalog.duckdb, so a reader
    that has the old one open (`assay sql`, `duckdb -readonly catalog.duckdb`) keeps reading it
    undisturbed and the next open sees the new one; refreshes take a lock, so the last rename is
    always the newest manifest's catalog."""
    import duckdb

    from assay.corpora.atomic import temp_path_for
    from assay.corpora.manifest import _parse, empty_manifest, file_lock, local_state_dir, read_manifest_bytes

    root = root if is_url(root) else Path(root)
    path = catalog_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(local_state_dir(root) / "catalog.lock"):
        raw = read_manifest_bytes(root) or b""
        manifest = None
        if sources is None:
            manifest = _parse(raw.decode(), join(root, "manifest.json")) if raw else empty_manifest()
            sources = manifest_sources(root, manifest)
        _sweep_temporaries(path)
        tmp = temp_path_for(path)
        wal = Path(str(tmp) + ".wal")
        try:
            con = duckdb_connect(root, tmp, read_only=False)
            try:
                try:
                    _create_views(con, view_statements(root, sources))
                except duckdb.IOException:
                    if manifest is None:
                        raise
                    # a file the manifest names is gone (deleted by hand): views over what is left
                    con.execute("ROLLBACK")
                    _create_views(con, view_statements(root, manifest_sources(root, manifest, verify=True)))
                con.execute(
                    "CREATE TABLE assay_catalog AS SELECT ? AS root, ? AS fingerprint, now() AS built_at",
                    [join(root), fingerprint(root, raw)],
                )
                con.execute("CHECKPOINT")
            finally:
                con.close()
            # a write-ahead log left by a writer killed on the old file must not replay onto the new one
            Path(str(path) + ".wal").unlink(missing_ok=True)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
            wal.unlink(missing_ok=True)
    return path


def _create_views(con, stmts: list[str]) -> None:
    con.execute("BEGIN")
    for stmt in stmts:
        con.execute(stmt)
    con.execute("COMMIT")


def catalog_path(root: str | Path) -> Path:
    """ROOT/catalog.duckdb; a URL root's catalog is a local file (DuckDB writes only local files)
    under the root's local state folder (see `assay.corpora.manifest.local_state_dir`)."""
    from assay.corpora.manifest import local_state_dir

    return local_state_dir(root) / CATALOG_NAME if is_url(root) else Path(root) / CATALOG_NAME


def _sweep_temporaries(path: Path) -> None:
    """Remove catalog builds a killed refresh left (call under the catalog lock: then no other
    refresh is building one)."""
    from assay.corpora.atomic import TMP_SUFFIX

    for stale in path.parent.glob(f".{path.name}.*{TMP_SUFFIX}*"):
        stale.unlink(missing_ok=True)


def ensure_catalog(root: str | Path) -> None:
    """What a rerun that finds its work done still owes: a current catalog, and no temporaries
    of a refresh that was killed."""
    from assay.corpora.manifest import file_lock, local_state_dir

    if not catalog_is_current(root):
        refresh_catalog(root)
        return
    with file_lock(local_state_dir(root) / "catalog.lock"):
        _sweep_temporaries(catalog_path(root))


def catalog_is_current(root: str | Path) -> bool:
    import duckdb

    path = catalog_path(root)
    if not path.exists():
        return False
    try:
        con = duckdb.connect(str(path), read_only=True)
        try:
            row = con.execute("SELECT fingerprint FROM assay_catalog").fetchone()
        finally:
            con.close()
    except duckdb.Error:
        return False
    return row is not None and row[0] == fingerprint(root)


def open_catalog(root: str | Path, read_only: bool = True, check: bool = False):
    """A DuckDB connection to the root's catalog, rebuilt first if the manifest changed.

    With `check`, the root is first listed and compared with its manifest: a file the manifest
    names but the disk lacks is an error (see `drift`)."""

    from assay.corpora.manifest import read_manifest_bytes

    root = root if is_url(root) else Path(root)
    if read_manifest_bytes(root) is None:
        raise FileNotFoundError(f"{root}: not a corpus root (no manifest.json); run `assay ingest` first")
    if check:
        found = drift(root)
        if found["missing"]:
            raise ValueError(
                f"{root}: {len(found['missing'])} file(s) the manifest names are missing, "
                f"e.g. {found['missing'][0]}"
            )
    if not catalog_is_current(root):
        refresh_catalog(root)
    return duckdb_connect(root, catalog_path(root), read_only)


def manifest_files(root: str | Path, manifest: dict) -> set[str]:
    """Every published Parquet file the manifest names, relative to the root."""
    out = {s["name"] for s in manifest.get("shards", [])}
    out |= {q["name"] for q in manifest.get("quarantine", [])}
    for name, entry in manifest.get("annotations", {}).items():
        base = "triples" if entry.get("kind") == "extractor" else "annotations"
        for table in entry.get("columns") or {name: None}:
            out |= {f"{base}/{table}/{p}" for p in _parts(entry, table, name)}
    return out


def drift(root: str | Path) -> dict[str, list[str]]:
    """The root's shard folders listed and compared with the manifest (the one listing Assay
    does, on request): `missing` files the manifest names that are not there, `unlisted`
    Parquet files there that the manifest does not name (a killed run's output, a stray copy)."""
    from assay.corpora.manifest import load_manifest

    named = manifest_files(root, load_manifest(root))
    found = set()
    if is_url(root):
        fs, base = url_fs(root)
        for sub in ("docs", "quarantine", "annotations", "triples"):
            for f in fs.find(f"{base}/{sub}"):
                name = f.rsplit("/", 1)[-1]
                if name.startswith("part-") and name.endswith(".parquet"):
                    found.add(f[len(base) + 1 :])
        return {"missing": sorted(named - found), "unlisted": sorted(found - named)}
    root = Path(root)
    for sub in ("docs", "quarantine", "annotations", "triples"):
        base = root / sub
        if base.is_dir():
            found |= {
                str(p.relative_to(root)) for p in base.rglob("part-*.parquet") if not p.name.startswith(".")
            }
    return {"missing": sorted(named - found), "unlisted": sorted(found - named)}


def unique_names(names: list[str]) -> list[str]:
    """Column names made unique the way DuckDB does it: a repeated `id` becomes `id_1`, `id_2`."""
    seen: set[str] = set()
    out = []
    for name in names:
        new, k = name, 0
        while new in seen:
            k += 1
            new = f"{name}_{k}"
        seen.add(new)
        out.append(new)
    return out


def _query_error(exc: Exception) -> Exception:
    """DuckDB's message, first line; a write through the read-only connection says so plainly."""
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "read-only" in str(exc):
        return ReadOnlyError(
            f"the catalog is opened read-only: `assay sql` runs queries, not writes (DuckDB said: {first})"
        )
    return ValueError(str(exc))


@contextmanager
def query_reader(root: str | Path, query: str, batch_rows: int = 65_536) -> Iterator[pa.RecordBatchReader]:
    """Stream a read-only query's result as Arrow batches (never the whole result in memory).

    Duplicate output names (``SELECT d.id, a.* ... USING (id)``) are made unique as DuckDB does."""
    import duckdb
    import pyarrow as pa

    con = open_catalog(root, read_only=True)
    try:
        try:
            result = con.sql(query)
            reader = result.to_arrow_reader(batch_rows) if result is not None else None
        except duckdb.Error as exc:
            raise _query_error(exc) from None
        if reader is None:  # a statement without a result
            yield pa.RecordBatchReader.from_batches(pa.schema([]), [])
            return
        schema = pa.schema(
            [f.with_name(n) for f, n in zip(reader.schema, unique_names(reader.schema.names))],
            metadata=reader.schema.metadata,
        )

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                for batch in reader:
                    yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)
            except duckdb.Error as exc:
                raise _query_error(exc) from None

        yield pa.RecordBatchReader.from_batches(schema, batches())
    finally:
        con.close()


def run_query(root: str | Path, query: str) -> pa.Table:
    """Run one read-only query into an Arrow table; a write gets a ReadOnlyError naming the problem."""
    with query_reader(root, query) as reader:
        return reader.read_all()


COPY_FORMATS = {
    "csv": "FORMAT CSV, HEADER true",
    "json": "FORMAT JSON, ARRAY true",
    "parquet": "FORMAT PARQUET, COMPRESSION zstd",
}


def copy_query(root: str | Path, query: str, out: str | Path, fmt: str) -> int:
    """Write a query's result to a local file with DuckDB's COPY (streamed, atomic); returns rows."""
    import duckdb

    from assay.corpora.atomic import atomic_path

    if fmt not in COPY_FORMATS:
        raise ValueError(f"format must be one of {', '.join(COPY_FORMATS)}, not {fmt!r}")
    body = query.strip().rstrip(";")
    con = open_catalog(root, read_only=True)
    try:
        with atomic_path(out) as tmp:
            row = con.execute(f"COPY ({body}) TO {sql_literal(str(tmp))} ({COPY_FORMATS[fmt]})").fetchone()
        return int(row[0]) if row else 0
    except duckdb.ParserException:
        pass  # not a query COPY can wrap (a write, PRAGMA ...): run it as it is, below
    except duckdb.Error as exc:
        raise _query_error(exc) from None
    finally:
        con.close()
    with query_reader(root, query) as reader:
        table = reader.read_all()
    _write_table(table, out, fmt)
    return table.num_rows


def _write_table(table: pa.Table, out: str | Path, fmt: str) -> None:
    import orjson
    import pyarrow.csv as pacsv

    from assay.corpora.atomic import atomic_path, write_bytes_atomic
    from assay.corpora.shards import write_table_atomic

    if fmt == "parquet":
        write_table_atomic(table, out)
    elif fmt == "csv":
        with atomic_path(out) as tmp:
            pacsv.write_csv(table, tmp)
    else:
        write_bytes_atomic(out, orjson.dumps(table.to_pylist(), default=str))
