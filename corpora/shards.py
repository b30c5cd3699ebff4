"""Writing Parquet shards: size-bounded, zstd-compressed, atomic, with checksums."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from assay.corpora.atomic import temp_path_for

COMPRESSION = "zstd"


def sha256_file(path: str | os.PathLike, chunk: int = 8 * 1024 * 1024) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_table_atomic(table: pa.Table, path: str | os.PathLike, row_group_size: int = 20_000) -> dict:
    """Write one Parquet file under a temporary name, rename it; returns its manifest entry."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        pq.write_table(table, tmp, compression=COMPRESSION, row_group_size=row_group_size)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"rows": table.num_rows, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def parquet_bytes(table: pa.Table, row_group_size: int = 20_000) -> bytes:
    """The bytes `write_table_atomic` would write for `table` (same writer settings)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=COMPRESSION, row_group_size=row_group_size)
    return sink.getvalue().to_pybytes()


def write_table_url(table: pa.Table, url: str, row_group_size: int = 20_000) -> dict:
    """Write one Parquet file to an fsspec URL (s3://...) as a single PUT: object stores have no
    rename, but replace an object whole, so a reader sees the old object or the new one."""
    import fsspec

    data = parquet_bytes(table, row_group_size)
    fs, path = fsspec.core.url_to_fs(url)
    fs.pipe_file(path, data)
    return {"rows": table.num_rows, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def sha256_url(url: str, chunk: int = 8 * 1024 * 1024) -> str:
    """sha256 of a file behind an fsspec URL, streamed."""
    import fsspec

    h = hashlib.sha256()
    with fsspec.open(url, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class ShardWriter:
    """Streams tables into numbered shards of at most `max_rows` rows / `max_bytes` text bytes.

    Each shard is written under a temporary name and renamed when closed, so a reader (or a
    rerun after a kill) never sees half a shard.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        schema: pa.Schema,
        name_format: str,
        max_rows: int = 100_000,
        max_bytes: int = 512 * 1024 * 1024,
        row_group_size: int = 20_000,
    ):
        self.folder = Path(folder)
        self.schema = schema
        self.name_format = name_format
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.row_group_size = row_group_size
        self.shards: list[dict] = []
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._rows = 0
        self._bytes = 0

    def _open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / self.name_format.format(len(self.shards))
        self._tmp = temp_path_for(final)
        self._final = final
        self._writer = pq.ParquetWriter(self._tmp, self.schema, compression=COMPRESSION)
        self._rows = self._bytes = 0

    def write(self, table: pa.Table) -> None:
        while table.num_rows:
            if self._writer is None:
                self._open()
            room = self.max_rows - self._rows
            take = table.slice(0, room)
            # Keep the byte bound too: cut where cumulative size crosses it (at least one row).
            nbytes = take.nbytes
            if self._bytes + nbytes > self.max_bytes and take.num_rows > 1:
                per_row = max(nbytes / take.num_rows, 1)
                fit = max(int((self.max_bytes - self._bytes) / per_row), 1)
                take = take.slice(0, fit)
                nbytes = take.nbytes
            self._writer.write_table(take.cast(self.schema), row_group_size=self.row_group_size)
            self._rows += take.num_rows
            self._bytes += nbytes
            table = table.slice(take.num_rows)
            if self._rows >= self.max_rows or self._bytes >= self.max_bytes:
                self._close_current()

    def _close_current(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        os.replace(self._tmp, self._final)
        self.shards.append({"name": self._final.name, "rows": self._rows})
        self._writer = None

    def close(self) -> list[dict]:
        self._close_current()
        return self.shards

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._tmp.unlink(missing_ok=True)
            self._writer = None
