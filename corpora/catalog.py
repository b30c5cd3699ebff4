"""catalog.duckdb: SQL views over the Parquet files of a corpus root.

Views use absolute paths, so the file opens from any working directory in the stock `duckdb`
CLI. A root that was moved (or gained files) is noticed by `open_catalog`, which rebuilds the
views before opening: every Assay command sees a current catalog.
"""

from __future__ import annotations

import hashlib
import importlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

CATALOG_NAME = "catalog.duckdb"
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


def fingerprint(root: Path) -> str:
    """Changes when the root moves or its set of published files changes."""
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
    base = root / "annotations"
    if not base.is_dir():
        return {}
    return {p.name: p for p in sorted(base.iterdir()) if p.is_dir() and any(p.glob("part-*.parquet"))}


def view_statements(root: Path) -> list[str]:
    """The SQL that (re)creates every view of the catalog."""
    import pyarrow.parquet as pq

    root = root.resolve()
    stmts = []
    docs = parquet_glob(root / "docs")
    stmts.append(f"CREATE OR REPLACE VIEW docs AS {('SELECT * FROM ' + docs) if docs else _EMPTY_DOCS}")
    quarantine = parquet_glob(root / "quarantine")
    stmts.append(
        f"CREATE OR REPLACE VIEW quarantine AS {('SELECT * FROM ' + quarantine) if quarantine else _EMPTY_QUARANTINE}"
    )
    # One wide view: every annotation set joined to the documents by id.
    select = ["d.id", "d.source", "d.url"]
    joins = []
    taken = {"id", "source", "url"}
    for i, (name, folder) in enumerate(annotation_sets(root).items()):
        alias = f"a{i}"
        first = next(folder.glob("part-*.parquet"))
        for col in pq.read_schema(first).names:
            if col == "id":
                continue
            out = col if col not in taken else f"{view_name(name)}_{col}"
            taken.add(out)
            select.append(f"{alias}.{ident(col)} AS {ident(out)}")
        joins.append(f"LEFT JOIN {parquet_glob(folder)} {alias} USING (id)")
        stmts.append(
            f"CREATE OR REPLACE VIEW {ident('annotations_' + view_name(name))} AS SELECT * FROM {parquet_glob(folder)}"
        )
    stmts.append(
        f"CREATE OR REPLACE VIEW annotations AS SELECT {', '.join(select)} FROM docs d {' '.join(joins)}"
    )
    triples = root / "triples"
    if triples.is_dir():
        for folder in sorted(p for p in triples.iterdir() if p.is_dir()):
            src = parquet_glob(folder)
            if src:
                stmts.append(f"CREATE OR REPLACE VIEW {ident(view_name(folder.name))} AS SELECT * FROM {src}")
    mixtures = root / "mixtures"
    if mixtures.is_dir():
        for folder in sorted(p for p in mixtures.iterdir() if p.is_dir()):
            src = parquet_glob(folder)
            if src:
                stmts.append(
                    f"CREATE OR REPLACE VIEW {ident('mixture_' + view_name(folder.name))} AS SELECT * FROM {src}"
                )
    for ext in CATALOG_EXTENSIONS:
        module, func = ext.split(":")
        stmts.extend(getattr(importlib.import_module(module), func)(root))
    return stmts


def refresh_catalog(root: str | Path) -> Path:
    """Rebuild every view (cheap: views only, no data is copied)."""
    import duckdb

    root = Path(root)
    path = root / CATALOG_NAME
    con = duckdb.connect(str(path))
    try:
        existing = [
            r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
        ]
        con.execute("BEGIN")
        for name in existing:
            con.execute(f"DROP VIEW IF EXISTS {ident(name)}")
        for macro in con.execute(
            "SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type = 'table_macro' AND NOT internal"
        ).fetchall():
            con.execute(f"DROP MACRO TABLE IF EXISTS {ident(macro[0])}")
        for stmt in view_statements(root):
            con.execute(stmt)
        con.execute(
            "CREATE OR REPLACE TABLE assay_catalog AS SELECT ? AS root, ? AS fingerprint, now() AS built_at",
            [str(root.resolve()), fingerprint(root)],
        )
        con.execute("COMMIT")
    finally:
        con.close()
    return path


def catalog_is_current(root: Path) -> bool:
    import duckdb

    path = root / CATALOG_NAME
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


def open_catalog(root: str | Path, read_only: bool = True):
    """A DuckDB connection to the root's catalog, rebuilt first if the root changed."""
    import duckdb

    root = Path(root)
    if not (root / "manifest.json").exists():
        raise FileNotFoundError(f"{root}: not a corpus root (no manifest.json); run `assay ingest` first")
    if not catalog_is_current(root):
        refresh_catalog(root)
    return duckdb.connect(str(root / CATALOG_NAME), read_only=read_only)


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
