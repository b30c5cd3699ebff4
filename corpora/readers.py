"""Readers: a source file (or part of one) in, blocks of documents and quarantine rows out.

Every record a reader sees ends up in exactly one of the two, so the balance
`records read = documents + quarantined` holds per input.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from assay.corpora.records import (
    PRE_ENCODED_META,
    FieldMap,
    QuarantineBuffer,
    build_docs,
    drop_nulls,
    encode_meta,
    field_column,
    has_path,
    json_default,
    lookup,
    meta_exclusions,
    text_problems,
    without_paths,
)
from assay.corpora.schema import DOCS_SCHEMA

BLOCK_BYTES = 8 * 1024 * 1024


@dataclass
class Block:
    docs: pa.Table
    quarantine: pa.Table
    n_read: int


COMPRESSIONS = ((".gz", "gzip"), (".zst", "zstd"), (".zstd", "zstd"), (".bz2", "bzip2"))
_DECOMPRESS_COMMAND = {"gzip": "gunzip", "zstd": "unzstd", "bzip2": "bunzip2"}


def format_of(path: str) -> tuple[str, str | None] | None:
    """(kind, compression) from the file name, or None when Assay does not read such files.

    kind is jsonl|parquet|warc|arrow|txt, compression gzip|zstd|bzip2|None. A compressed Parquet
    or Arrow file is a ValueError: both need random access (and compress their pages themselves).
    """
    name = path.lower()
    compression = None
    for ext, comp in COMPRESSIONS:
        if name.endswith(ext):
            compression, name = comp, name[: -len(ext)]
    if name.endswith((".parquet", ".arrow")):
        kind = "parquet" if name.endswith(".parquet") else "arrow"
        if compression:
            raise ValueError(
                f"{path}: a {compression}-compressed {kind.title()} file cannot be read (it needs random "
                f"access); decompress it first, e.g. `{_DECOMPRESS_COMMAND[compression]} -k {path}`"
            )
        return kind, None
    if name.endswith((".warc", ".arc")):
        return "warc", compression
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl", compression
    if name.endswith(".txt"):
        return "txt", compression
    return None


def detect_format(path: str) -> tuple[str, str | None]:
    """Like format_of, but an unknown format is a ValueError."""
    found = format_of(path)
    if found is None:
        raise ValueError(
            f"{path}: unknown input format (expected .jsonl or .txt [.gz|.zst|.bz2], .parquet, .arrow "
            "or .warc[.gz|.zst|.bz2])"
        )
    return found


# ---------------------------------------------------------------- decompression with break detection


def _decompressed_chunks(
    raw: io.BufferedIOBase, compression: str | None, read_size: int = 4 * 1024 * 1024
) -> Iterator[tuple[bytes, str | None]]:
    """Yield (chunk, error); error is set on the last chunk when the stream is cut or corrupt.

    Decompressing by hand (not gzip.GzipFile) keeps every byte that was readable before a break.
    A file of zero bytes is an empty stream, not a broken one, whatever its compression.
    """
    first = raw.read(read_size)
    if not first:
        return
    raw = _Replay(first, raw)
    if compression is None:
        while chunk := raw.read(read_size):
            yield chunk, None
        return
    if compression == "gzip":
        d = zlib.decompressobj(wbits=31)
        while True:
            comp = raw.read(read_size)
            if not comp:
                if not d.eof:
                    yield d.flush(), "truncated gzip stream (no end-of-stream marker)"
                return
            while comp:
                try:
                    out = d.decompress(comp)
                except zlib.error as exc:
                    yield b"", f"corrupt gzip stream: {exc}"
                    return
                if out:
                    yield out, None
                comp = b""
                if d.eof and d.unused_data:  # concatenated gzip members
                    comp, d = d.unused_data, zlib.decompressobj(wbits=31)
        return
    if compression == "zstd":
        import zstandard

        d = zstandard.ZstdDecompressor().decompressobj()
        finished = False
        while True:
            comp = raw.read(read_size)
            if not comp:
                if not finished:
                    yield b"", "truncated zstd stream"
                return
            out = b""
            try:
                while comp:  # concatenated frames: whatever follows one frame starts the next
                    if d.eof:
                        d = zstandard.ZstdDecompressor().decompressobj()
                    out += d.decompress(comp)
                    finished, comp = d.eof, d.unused_data if d.eof else b""
            except zstandard.ZstdError as exc:
                if out:
                    yield out, None
                yield b"", f"corrupt zstd stream: {exc}"
                return
            if out:
                yield out, None
        return
    if compression == "bzip2":
        import bz2

        # bzip2 decodes whole blocks (up to 900 kB): a break loses the block it falls in
        d = bz2.BZ2Decompressor()
        while True:
            comp = raw.read(read_size)
            if not comp:
                if not d.eof:
                    yield b"", "truncated bzip2 stream"
                return
            out = b""
            try:
                while comp:
                    if d.eof:  # concatenated streams (pbzip2, lbzip2 write them)
                        d = bz2.BZ2Decompressor()
                    out += d.decompress(comp)
                    comp = d.unused_data if d.eof else b""
            except (OSError, EOFError) as exc:
                yield b"", f"corrupt bzip2 stream: {exc}"
                return
            if out:
                yield out, None
    raise ValueError(f"unsupported compression {compression!r}")


class _Replay:
    """A stream whose first bytes were already read: hands them out again, then reads on."""

    def __init__(self, head: bytes, raw: io.BufferedIOBase):
        self.head, self.raw = head, raw

    def read(self, n: int) -> bytes:
        if self.head:
            out, self.head = self.head, b""
            return out
        return self.raw.read(n)


def _prefetched(chunks: Iterator, depth: int = 4) -> Iterator:
    """Decompress in a background thread (zlib and zstd release the GIL) while blocks are parsed."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def produce() -> None:
        try:
            for item in chunks:
                q.put(item)
        except BaseException as exc:  # re-raised in the consumer
            q.put(exc)
        q.put(done)

    threading.Thread(target=produce, daemon=True).start()
    while (item := q.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


# ---------------------------------------------------------------- JSONL


def _line_bounds(buf: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start/end offsets of the newline-terminated lines in buf (buf ends with a newline)."""
    nl = np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == 10)
    starts = np.empty_like(nl)
    starts[0:1] = 0
    starts[1:] = nl[:-1] + 1
    return starts, nl


def _strings_for_timestamps(t: pa.DataType) -> pa.DataType:
    """Arrow infers ISO-looking strings as timestamps; keep them as the strings the source wrote."""
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t):
        return pa.string()
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _strings_for_timestamps(f.type)) for f in t])
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(_strings_for_timestamps(t.value_type))
    return t


def _parse_block_fast(lines: list[bytes], fields: FieldMap, schema_hint: dict) -> pa.Table | None:
    """All lines at once through Arrow's JSON reader; None when anything needs a closer look.

    `schema_hint` carries the block-to-block explicit schema: date-like strings are pinned to
    strings so that one parse suffices (a second parse only when a new date-like field appears).
    """
    import pyarrow.json as pj

    buf = b"\n".join(lines) + b"\n"
    # ~1 MB blocks let Arrow parse on every core
    read_options = pj.ReadOptions(use_threads=True, block_size=1 << 20)
    hint = schema_hint.get("schema") or pa.schema([])
    pin = _text_field_pin(fields.text)
    schema = hint if pin.name in hint.names else hint.append(pin)
    try:
        for _attempt in range(3):
            table = pj.read_json(
                io.BytesIO(buf),
                read_options=read_options,
                parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer"),
            )
            retyped = pa.schema([pa.field(f.name, _strings_for_timestamps(f.type)) for f in table.schema])
            if retyped.equals(table.schema):
                break
            schema = retyped
        table.validate(full=True)  # catches invalid UTF-8, which the parser lets through
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    if table.num_rows != len(lines):  # two objects on one line, or a blank-looking line
        return None
    text = field_column(table, fields.text)
    if text is None or not _is_string(text.type):
        return None
    schema_hint["schema"] = pa.schema(
        [f for f in table.schema if not (pa.types.is_struct(f.type) or pa.types.is_list(f.type))]
    )
    return table


def _text_field_pin(path: str) -> pa.Field:
    """The text field typed as a string for Arrow's parser (a number there is a parse error, not
    text), nested as its path says: `metadata.text` pins `metadata: struct<text: string>`."""
    *parents, name = path.split(".")
    t = pa.string()
    for parent in reversed(parents):
        t, name = pa.struct([(name, t)]), parent
    return pa.field(name, t)


def _parse_line(line: bytes, fields: FieldMap) -> tuple[dict | None, str, str]:
    """One line the slow way: (record, reason, detail)."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, "utf8", f"invalid UTF-8 at byte {exc.start}"
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return None, "json", str(exc)
    if not isinstance(rec, dict):
        return None, "not_object", f"JSON {type(rec).__name__}, expected an object"
    text = lookup(rec, fields.text)
    if text is None:
        return None, "missing_text", f"no {fields.text!r} field"
    if not isinstance(text, str):
        return None, "text_not_string", f"{fields.text!r} is {type(text).__name__}"
    if not text.strip():
        return None, "empty_text", "text is empty or whitespace"
    return rec, "", ""


def _records_to_table(records: list[dict], fields: FieldMap) -> pa.Table:
    """Slow-path records to a table shaped like the fast path's (meta fields as JSON-able values)."""
    # columns named by the field paths themselves, which build_docs finds as top-level names
    cols: dict[str, list] = {fields.text: [lookup(r, fields.text) for r in records]}
    for key in (fields.id, fields.url, fields.source):
        vals = [lookup(r, key) for r in records]
        cols[key] = [None if v is None else str(v) if not isinstance(v, str) else v for v in vals]
    table = pa.table({k: pa.array(v, pa.string()) for k, v in cols.items()})
    metas = []
    for r in records:
        top, nested = meta_exclusions(list(r), fields)
        metas.append(drop_nulls(without_paths({k: v for k, v in r.items() if k not in top}, nested)))
    # Pre-encoded meta travels as a column that build_docs passes through untouched.
    return table.append_column(PRE_ENCODED_META, pa.array([encode_meta(m) for m in metas], pa.string()))


def _line_blocks(
    raw: io.BufferedIOBase, compression: str | None, first_line: int = 0, base_offset: int = 0
) -> Iterator[tuple[bytes, int, int, str | None]]:
    """Blocks of whole lines as (block, lines before it, bytes before it, None).

    When the stream breaks, the last item is (the bytes after the last whole line, lines before
    them, their offset, the error). A final line without a newline gets one. A byte range of a
    file starts counting at its first line and byte (`first_line`, `base_offset`).
    """
    pending = b""
    line_no = first_line  # lines consumed so far
    offset = base_offset  # decompressed bytes consumed so far
    for chunk, error in _prefetched(_decompressed_chunks(raw, compression)):
        pending += chunk
        if len(pending) < BLOCK_BYTES and error is None:
            continue
        cut = pending.rfind(b"\n") + 1
        if cut:
            block, pending = pending[:cut], pending[cut:]
            yield block, line_no, offset, None
            line_no += block.count(b"\n")
            offset += len(block)
        if error is not None:
            yield pending, line_no, offset, error
            return
    if pending.strip():  # a final line without a newline is still a record
        yield pending + b"\n", line_no, offset, None


def _truncated_block(rest: bytes, line_no: int, offset: int, error: str, quarantine: QuarantineBuffer):
    """The record a stream broke in, as one `truncated` row (none when only whitespace is left)."""
    if rest.strip() or not rest:
        # not rest: the break fell on a line boundary; nothing half-read, but say so
        quarantine.add(line_no + 1, offset, "truncated", error, rest)
        return Block(DOCS_SCHEMA.empty_table(), quarantine.take(), 1)
    return None


def read_jsonl(
    raw: io.BufferedIOBase,
    compression: str | None,
    fields: FieldMap,
    source_file: str,
    input_key: str,
    first_line: int = 0,
    base_offset: int = 0,
) -> Iterator[Block]:
    """Stream a JSON-lines file in blocks of whole lines (line numbers are 1-based).

    `raw` may be a byte range of the file that starts on a line start (see ByteRange): its
    lines are numbered, and its offsets counted, from `first_line` and `base_offset`.
    """
    quarantine = QuarantineBuffer(source_file, fields.raw_cap)
    schema_hint: dict = {}
    for block, line_no, offset, error in _line_blocks(raw, compression, first_line, base_offset):
        if error is None:
            yield _jsonl_block(
                block, line_no, offset, fields, source_file, input_key, quarantine, schema_hint
            )
        elif (cut := _truncated_block(block, line_no, offset, error, quarantine)) is not None:
            yield cut


def _jsonl_block(
    block: bytes,
    first_line: int,
    base_offset: int,
    fields: FieldMap,
    source_file: str,
    input_key: str,
    quarantine: QuarantineBuffer,
    schema_hint: dict,
) -> Block:
    starts, ends = _line_bounds(block)
    lengths = ends - starts
    line_numbers = np.arange(first_line + 1, first_line + 1 + len(starts))
    # Blank lines separate nothing and are not records.
    candidate = lengths > 0
    short = np.flatnonzero(candidate & (lengths <= 16))
    for i in short:
        if not block[starts[i] : ends[i]].strip():
            candidate[i] = False
    too_large = candidate & (lengths > fields.max_record_bytes)
    for i in np.flatnonzero(too_large):
        quarantine.add(
            int(line_numbers[i]),
            base_offset + int(starts[i]),
            "too_large",
            f"{int(lengths[i])} bytes > limit {fields.max_record_bytes}",
            block[starts[i] : ends[i]],
        )
    keep_idx = np.flatnonzero(candidate & ~too_large)
    n_read = int(candidate.sum())
    lines = [block[starts[i] : ends[i]] for i in keep_idx]
    # Arrow's JSON reader is for blocks of objects only: a line starting with anything but `{`
    # (a bare `null` there crashes pyarrow 26's reader outright) takes the line-by-line path
    objects = len(lines) and bool(np.all(np.frombuffer(block, dtype=np.uint8)[starts[keep_idx]] == 123))
    table = _parse_block_fast(lines, fields, schema_hint) if objects else None
    if table is not None:
        keep, reasons = text_problems(field_column(table, fields.text), fields.max_record_bytes)
        if reasons:
            for j, reason in enumerate(reasons):
                if reason:
                    i = keep_idx[j]
                    quarantine.add(
                        int(line_numbers[i]),
                        base_offset + int(starts[i]),
                        reason,
                        REASON_DETAIL[reason],
                        lines[j],
                    )
            table = table.filter(keep)
            keep_idx = keep_idx[np.asarray(keep.to_numpy(zero_copy_only=False), dtype=bool)]
    elif lines:
        good: list[dict] = []
        good_idx: list[int] = []
        for j, line in enumerate(lines):
            rec, reason, detail = _parse_line(line, fields)
            i = keep_idx[j]
            if rec is None:
                quarantine.add(int(line_numbers[i]), base_offset + int(starts[i]), reason, detail, line)
            else:
                good.append(rec)
                good_idx.append(i)
        table = _records_to_table(good, fields) if good else None
        keep_idx = np.asarray(good_idx, dtype=np.int64)
    if table is None or table.num_rows == 0:
        docs = DOCS_SCHEMA.empty_table()
    else:
        docs = build_docs(table, fields, input_key, source_file, pa.array(line_numbers[keep_idx]))
    return Block(docs, quarantine.take(), n_read)


REASON_DETAIL = {
    "missing_text": "text field is absent or null",
    "empty_text": "text is empty or whitespace",
    "too_large": "text is larger than the size limit",
}


# ---------------------------------------------------------------- Parquet and Arrow

BATCH_ROWS = 65536


def read_parquet(
    raw: io.BufferedIOBase,
    fields: FieldMap,
    source_file: str,
    input_key: str,
    row_groups: list[int] | None = None,
) -> Iterator[Block]:
    """Stream a Parquet file (optionally a subset of its row groups) in record batches.

    A file cut short has lost its footer (the index of its row groups), so nothing in it can be
    located: it becomes one `truncated` quarantine row.
    """
    import pyarrow.parquet as pq

    quarantine = QuarantineBuffer(source_file, fields.raw_cap)
    try:
        pf = pq.ParquetFile(raw)
    except (pa.ArrowInvalid, OSError) as exc:
        raw.seek(0, io.SEEK_END)
        size = raw.tell()
        if size == 0:  # an empty file: no records, not a broken one
            return
        raw.seek(0)
        head = raw.read(fields.raw_cap)
        quarantine.add(0, 0, "truncated", f"{size} bytes, Parquet footer unreadable: {exc}", head, size)
        yield Block(DOCS_SCHEMA.empty_table(), quarantine.take(), 1)
        return
    groups = list(range(pf.num_row_groups)) if row_groups is None else row_groups
    for g in groups:
        first_row = sum(pf.metadata.row_group(i).num_rows for i in range(g))
        try:  # a whole row group first: a corrupt page anywhere in it fails the group alone
            batches = list(pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[g]))
        except (pa.ArrowException, OSError, ValueError) as exc:
            n = pf.metadata.row_group(g).num_rows
            detail = f"row group {g} (rows {first_row}..{first_row + n - 1}) unreadable: {exc}"
            quarantine.add(first_row, None, "truncated", detail, b"")
            yield Block(DOCS_SCHEMA.empty_table(), quarantine.take(), 1)
            continue
        for batch in batches:
            table = pa.Table.from_batches([batch])
            offsets = np.arange(first_row, first_row + table.num_rows)
            first_row += table.num_rows
            yield _columnar_block(table, offsets, fields, source_file, input_key, quarantine)


def read_arrow(raw: io.BufferedIOBase, fields: FieldMap, source_file: str, input_key: str) -> Iterator[Block]:
    """Stream an Arrow IPC file: the stream format `datasets.save_to_disk` writes, or the file format.

    A stream cut inside a message keeps every batch before the break and quarantines the rest
    as one `truncated` row.
    """
    quarantine = QuarantineBuffer(source_file, fields.raw_cap)
    # The file format is the stream format framed by a magic string and a footer.
    head = raw.read(8)
    if not head:  # an empty file: no records, not a broken one
        return
    if head[:6] != b"ARROW1":
        raw.seek(0)
    pending: list[pa.RecordBatch] = []
    first_row = n_pending = 0
    error = None
    try:
        for batch in pa.ipc.open_stream(raw):
            pending.append(batch)
            n_pending += batch.num_rows
            if n_pending >= BATCH_ROWS:
                table = pa.Table.from_batches(pending)
                yield _columnar_block(
                    table,
                    np.arange(first_row, first_row + n_pending),
                    fields,
                    source_file,
                    input_key,
                    quarantine,
                )
                first_row += n_pending
                pending, n_pending = [], 0
    except (pa.ArrowInvalid, OSError) as exc:
        error = exc
    if pending:
        table = pa.Table.from_batches(pending)
        offsets = np.arange(first_row, first_row + n_pending)
        yield _columnar_block(table, offsets, fields, source_file, input_key, quarantine)
        first_row += n_pending
    if error is not None:
        quarantine.add(
            first_row, raw.tell(), "truncated", f"Arrow stream breaks after row {first_row}: {error}", b""
        )
        yield Block(DOCS_SCHEMA.empty_table(), quarantine.take(), 1)


def _columnar_block(
    table: pa.Table,
    offsets: np.ndarray,
    fields: FieldMap,
    source_file: str,
    input_key: str,
    quarantine: QuarantineBuffer,
) -> Block:
    """Rows of a Parquet or Arrow batch to documents; rows without usable text to quarantine."""
    n = table.num_rows
    invalid: dict[int, tuple[int, bytes]] = {}  # row -> (byte of the first invalid UTF-8, raw text)
    col = field_column(table, fields.text)  # a struct field (`metadata.text`) picked out by Arrow
    if col is None:
        reasons, keep = ["missing_text"] * n, pa.array([False] * n)
    elif pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type) or _is_string(col.type):
        col, invalid = _as_utf8(col)
        keep, reasons = text_problems(col, fields.max_record_bytes)
    else:
        reasons, keep = ["text_not_string"] * n, pa.array([False] * n)
    if reasons:
        rows = None
        for j, reason in enumerate(reasons):
            if not reason:
                continue
            row = int(offsets[j])
            if j in invalid:
                at, raw = invalid[j]
                detail = f"row {row}: {fields.text!r} has invalid UTF-8 at byte {at}"
                quarantine.add(row, None, "utf8", detail, raw)
                continue
            rows = rows or _rows_for_raw(table, fields.text, col, invalid)
            quarantine.add(
                row, None, reason, f"row {row}: {reason}", orjson.dumps(rows[j], default=json_default)
            )
        table = table.filter(keep)
        col = col.filter(keep) if col is not None else None
        offsets = offsets[np.asarray(keep.to_numpy(zero_copy_only=False), dtype=bool)]
    if not table.num_rows:
        return Block(DOCS_SCHEMA.empty_table(), quarantine.take(), n)
    docs = build_docs(table, fields, input_key, source_file, pa.array(offsets), text=col)
    return Block(docs, quarantine.take(), n)


def _rows_for_raw(table: pa.Table, path: str, text, invalid: dict) -> list[dict | None]:
    """The rows as Python values for quarantine's `raw`, with the text as decoded (rows whose
    text is not UTF-8 are left out: their raw is the text's bytes)."""
    if text is not None and path in table.column_names:
        return table.set_column(table.column_names.index(path), path, text).to_pylist()
    if not invalid:
        return table.to_pylist()
    return [None if j in invalid else table.slice(j, 1).to_pylist()[0] for j in range(table.num_rows)]


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _as_utf8(col: pa.ChunkedArray) -> tuple[pa.Array, dict[int, tuple[int, bytes]]]:
    """A binary or string column as strings; values that are not valid UTF-8 become null.

    Returns the column and, per invalid row, (byte offset of the error, the raw bytes).
    """
    col = col.combine_chunks()
    try:
        if _is_string(col.type):
            col.validate(full=True)
            return col, {}
        return col.cast(pa.string()), {}  # the cast checks UTF-8
    except pa.ArrowInvalid:
        pass  # some value is not UTF-8: find which, row by row
    values: list[str | None] = []
    invalid: dict[int, tuple[int, bytes]] = {}
    for j, v in enumerate(col.cast(pa.binary()).to_pylist() if _is_string(col.type) else col.to_pylist()):
        try:
            values.append(None if v is None else v.decode("utf-8"))
        except UnicodeDecodeError as exc:
            values.append(None)
            invalid[j] = (exc.start, v)
    return pa.array(values, pa.string()), invalid


# ---------------------------------------------------------------- byte ranges of big JSONL files


class ByteRange:
    """Bytes [start, end) of a seekable file, read as a stream of their own (one work unit of a
    big uncompressed JSON-lines file; `tell` counts from `start`)."""

    def __init__(self, raw: io.BufferedIOBase, start: int, end: int):
        raw.seek(start)
        self.raw, self.start, self.left = raw, start, end - start

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        out = self.raw.read(self.left if n is None or n < 0 else min(n, self.left))
        self.left -= len(out)
        return out

    def tell(self) -> int:
        return self.raw.tell() - self.start


def jsonl_split_points(
    raw: io.BufferedIOBase, size: int, split_bytes: int, read_size: int = 16 * 1024 * 1024
) -> list[tuple[int, int]]:
    """Where to cut an uncompressed JSON-lines file into byte ranges of about `split_bytes`:
    (start, lines before it) per range, each start a line start, the first (0, 0).

    One pass that only counts newlines (derived ids and quarantine rows carry line numbers, so
    a range must know how many lines come before it); no JSON is parsed.
    """
    points = [(0, 0)]
    pos = lines = 0
    raw.seek(0)
    while pos + split_bytes < size:
        target = pos + split_bytes  # the range starts at the first line start at or after this
        while pos < target - 1:
            chunk = raw.read(min(read_size, target - 1 - pos))
            if not chunk:
                return points
            lines += chunk.count(b"\n")
            pos += len(chunk)
        while True:  # to the end of the line that byte target-1 is in
            chunk = raw.read(64 * 1024)
            if not chunk:
                return points
            at = chunk.find(b"\n")
            if at >= 0:
                pos, lines = pos + at + 1, lines + 1
                raw.seek(pos)
                break
            pos += len(chunk)
        if pos >= size:
            break
        points.append((pos, lines))
    return points


# ---------------------------------------------------------------- plain text

# bytes.strip()'s whitespace: a line of only these is blank, as in JSONL
_ASCII_SPACE = np.zeros(256, dtype=bool)
_ASCII_SPACE[[9, 10, 11, 12, 13, 32]] = True


def read_text_file(
    raw: io.BufferedIOBase, compression: str | None, fields: FieldMap, source_file: str, input_key: str
) -> Iterator[Block]:
    """A whole text file as one document, id `<input_key>` (the file is the record, offset 0)."""
    quarantine = QuarantineBuffer(source_file, fields.raw_cap)
    parts: list[bytes] = []
    size, error = 0, None
    for chunk, err in _decompressed_chunks(raw, compression):
        error = err  # set on the last chunk only
        if size + len(chunk) <= fields.max_record_bytes:
            parts.append(chunk)
        elif size < fields.raw_cap:  # only the head is kept of a file too large to be a record
            parts.append(chunk[: fields.raw_cap - size])
        size += len(chunk)
    data = b"".join(parts)
    reason = detail = ""
    if error is not None:
        reason, detail = "truncated", f"{error} after {size} bytes"
    elif size > fields.max_record_bytes:
        reason, detail = "too_large", f"{size} bytes > limit {fields.max_record_bytes}"
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            reason, detail = "utf8", f"invalid UTF-8 at byte {exc.start}"
        else:
            if not text.strip():
                reason, detail = "empty_text", "the file is empty or only whitespace"
    if reason:
        quarantine.add(0, 0 if reason != "utf8" else None, reason, detail, data, size)
        yield Block(DOCS_SCHEMA.empty_table(), quarantine.take(), 1)
        return
    table = pa.table({fields.text: pa.array([text], pa.string()), fields.id: [input_key]})
    yield Block(build_docs(table, fields, input_key, source_file, pa.array([0])), quarantine.take(), 1)


def read_text_lines(
    raw: io.BufferedIOBase, compression: str | None, fields: FieldMap, source_file: str, input_key: str
) -> Iterator[Block]:
    """One document per non-blank line, ids `<input_key>:<line>` (1-based, as for JSONL)."""
    quarantine = QuarantineBuffer(source_file, fields.raw_cap)
    for block, line_no, offset, error in _line_blocks(raw, compression):
        if error is None:
            yield _text_lines_block(block, line_no, offset, fields, source_file, input_key, quarantine)
        elif (cut := _truncated_block(block, line_no, offset, error, quarantine)) is not None:
            yield cut


def _text_lines_block(
    block: bytes,
    first_line: int,
    base_offset: int,
    fields: FieldMap,
    source_file: str,
    input_key: str,
    quarantine: QuarantineBuffer,
) -> Block:
    starts, ends = _line_bounds(block)
    line_numbers = np.arange(first_line + 1, first_line + 1 + len(starts))
    # a line is blank when it holds no byte but whitespace: count the others per line, at once
    solid = np.concatenate(([0], np.cumsum(~_ASCII_SPACE[np.frombuffer(block, dtype=np.uint8)])))
    records = solid[ends] - solid[starts] > 0
    too_large = records & (ends - starts > fields.max_record_bytes)
    for i in np.flatnonzero(too_large):
        size = int(ends[i] - starts[i])
        detail = f"{size} bytes > limit {fields.max_record_bytes}"
        quarantine.add(
            int(line_numbers[i]),
            base_offset + int(starts[i]),
            "too_large",
            detail,
            block[starts[i] : ends[i]],
        )
    keep_idx = np.flatnonzero(records & ~too_large)
    n_read = int(records.sum())
    if not len(keep_idx):
        return Block(DOCS_SCHEMA.empty_table(), quarantine.take(), n_read)
    # every line with its newline, straight from the block's bytes; the newline is trimmed below
    offsets = np.append(starts, ends[-1] + 1).astype(np.int64)
    lines = pa.Array.from_buffers(
        pa.large_binary(), len(starts), [None, pa.py_buffer(offsets), pa.py_buffer(block)]
    ).take(pa.array(keep_idx))
    text, invalid = _as_utf8(pa.chunked_array([lines]))
    text = pc.utf8_rtrim(text, characters="\r\n")
    for j, (at, raw_line) in invalid.items():
        i = keep_idx[j]
        quarantine.add(
            int(line_numbers[i]),
            base_offset + int(starts[i]),
            "utf8",
            f"invalid UTF-8 at byte {at}",
            raw_line,
        )
    keep, reasons = text_problems(text, fields.max_record_bytes)
    for j, reason in enumerate(reasons):
        if reason and j not in invalid:  # e.g. a line of only non-ASCII spaces: empty_text
            i = keep_idx[j]
            quarantine.add(
                int(line_numbers[i]),
                base_offset + int(starts[i]),
                reason,
                REASON_DETAIL[reason],
                lines[j].as_py(),
            )
    if reasons:
        text = text.filter(keep)
        keep_idx = keep_idx[np.asarray(keep.to_numpy(zero_copy_only=False), dtype=bool)]
    if not len(text):
        return Block(DOCS_SCHEMA.empty_table(), quarantine.take(), n_read)
    table = pa.table({fields.text: text})
    docs = build_docs(table, fields, input_key, source_file, pa.array(line_numbers[keep_idx]))
    return Block(docs, quarantine.take(), n_read)


# ---------------------------------------------------------------- which fields an input has


def jsonl_fields_found(
    raw: io.BufferedIOBase, compression: str | None, paths: list[str], whole: bool = False
) -> tuple[set[str], list[str] | None]:
    """Which of these field paths the first record of a JSON-lines stream has (`whole`: any of
    its records, reading until every path is found), and the first record's top-level keys
    (None when no line is a JSON object)."""
    missing = set(paths)
    first: list[str] | None = None
    for line in _stream_lines(raw, compression, read_size=64 * 1024):
        # after the first record, parse only lines that can hold a missing field's name
        leaves = [p.rsplit(".", 1)[-1].encode() for p in missing]
        if first is not None and b"\\u" not in line and not any(leaf in line for leaf in leaves):
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(rec, dict):
            continue
        if first is None:
            first = list(rec)
        missing = {p for p in missing if not has_path(rec, p)}
        if not missing or not whole:
            break
    return set(paths) - missing, first


def _stream_lines(raw: io.BufferedIOBase, compression: str | None, read_size: int) -> Iterator[bytes]:
    """The lines of a stream, a little read at a time (a break ends it after the bytes read)."""
    pending = bytearray()  # amortised appends: a long line arrives in many small chunks
    for chunk, _error in _decompressed_chunks(raw, compression, read_size):
        cut = chunk.rfind(b"\n") + 1
        if cut:
            pending += chunk[:cut]
            yield from bytes(pending).split(b"\n")[:-1]
            pending = bytearray(chunk[cut:])
        else:
            pending += chunk
    if pending:
        yield bytes(pending)


def arrow_schema(raw: io.BufferedIOBase) -> tuple[pa.Schema, bool] | None:
    """An Arrow IPC file's schema and whether it holds any row; None when it cannot be read
    (a file cut short: its unit quarantines it)."""
    if raw.read(8)[:6] != b"ARROW1":
        raw.seek(0)
    try:
        reader = pa.ipc.open_stream(raw)
    except (pa.ArrowInvalid, OSError):
        return None
    try:
        has_rows = any(batch.num_rows for batch in reader)  # stops at the first batch with rows
    except (pa.ArrowInvalid, OSError):
        has_rows = True  # rows or not, the break is the unit's to report
    return reader.schema, has_rows


# ---------------------------------------------------------------- WARC

WARC_BLOCK_DOCS = 2000


def read_warc(
    raw: io.BufferedIOBase, compression: str | None, fields: FieldMap, source_file: str, input_key: str
) -> Iterator[Block]:
    """HTML responses of a WARC file, main text extracted with trafilatura (datatrove's extractor).

    A file cut short (or a corrupt gzip member) keeps every record before the break; the record
    the break falls in becomes one `truncated` quarantine row.
    """
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.readers.warc import process_record
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed

    breaks: tuple[type[BaseException], ...] = (EOFError, OSError, zlib.error, ArchiveLoadFailed)
    stream = raw
    if compression == "gzip":
        import gzip

        stream = gzip.GzipFile(fileobj=raw)  # also reads whole-file gzip, which warcio refuses
    elif compression == "zstd":
        import zstandard

        stream = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        breaks += (zstandard.ZstdError,)
    elif compression == "bzip2":
        import bz2

        stream = bz2.BZ2File(raw)
    from trafilatura.deduplication import LRU_TEST

    # trafilatura drops text segments it has seen before in this process: start each file afresh,
    # so a file's documents never depend on what the process extracted earlier
    LRU_TEST.clear()
    extractor = Trafilatura(favour_precision=True)
    quarantine = QuarantineBuffer(source_file, fields.raw_cap)
    rows: dict[str, list] = {"text": [], "id": [], "url": [], "meta": [], "offset": []}
    n_read = 0
    watched = _Watched(stream, breaks)
    records = ArchiveIterator(watched)
    index = 0  # the record being read
    while True:
        try:
            record = next(records, None)
            if record is None:
                if watched.error is not None:  # warcio ended quietly on a break between records
                    raise watched.error
                break
            parsed = process_record(record)
            # An uncompressed file cut inside a record ends before its Content-Length.
            while record.raw_stream.read(1 << 16):
                pass
            if getattr(record.raw_stream, "limit", 0) > 0:
                raise EOFError(f"record ends {record.raw_stream.limit} bytes before its Content-Length")
        except breaks as exc:
            n_read += 1
            quarantine.add(index, None, "truncated", f"WARC breaks in record {index}: {exc}", b"")
            break
        except Exception as exc:  # noqa: BLE001 - warcio fails on a mangled header in many ways
            # nothing marks where the next record starts: the rest of the file is lost with it
            n_read += 1
            detail = f"WARC breaks in record {index}: malformed record ({type(exc).__name__}: {exc})"
            quarantine.add(index, None, "truncated", detail, b"")
            break
        index += 1
        if parsed is None:  # not HTML (or undecodable): not a document candidate
            continue
        n_read += 1
        text = extractor.extract(parsed["text"]) or ""
        if not text.strip():
            quarantine.add(index - 1, None, "extract_empty", parsed.get("url") or "", parsed["text"].encode())
            continue
        rows["text"].append(text)
        rows["id"].append(parsed["id"])
        rows["url"].append(parsed.get("url"))
        rows["meta"].append(orjson.dumps({"date": parsed["date"]} if parsed.get("date") else {}).decode())
        rows["offset"].append(index - 1)
        if len(rows["text"]) >= WARC_BLOCK_DOCS:
            yield _warc_block(rows, fields, source_file, input_key, quarantine, n_read)
            rows, n_read = {k: [] for k in rows}, 0
    yield _warc_block(rows, fields, source_file, input_key, quarantine, n_read)


class _Watched:
    """A stream that remembers the break it raised: warcio reads an EOFError that comes while it
    looks for the next record's header as the end of the file."""

    def __init__(self, stream, breaks: tuple[type[BaseException], ...]):
        self.stream, self.breaks, self.error = stream, breaks, None

    def read(self, size: int = -1) -> bytes:
        try:
            return self.stream.read(size)
        except self.breaks as exc:
            self.error = exc
            raise


def _warc_block(
    rows: dict[str, list],
    fields: FieldMap,
    source_file: str,
    input_key: str,
    quarantine: QuarantineBuffer,
    n: int,
) -> Block:
    docs = DOCS_SCHEMA.empty_table()
    if rows["text"]:
        table = pa.table(
            {
                fields.text: pa.array(rows["text"], pa.string()),
                fields.id: pa.array(rows["id"], pa.string()),
                fields.url: pa.array(rows["url"], pa.string()),
                PRE_ENCODED_META: pa.array(rows["meta"], pa.string()),
            }
        )
        docs = build_docs(table, fields, input_key, source_file, pa.array(rows["offset"], pa.int64()))
    return Block(docs, quarantine.take(), n)
