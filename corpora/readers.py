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

from assay.corpora.records import PRE_ENCODED_META, FieldMap, QuarantineBuffer, build_docs, text_problems
from assay.corpora.schema import DOCS_SCHEMA, QUARANTINE_SCHEMA

BLOCK_BYTES = 8 * 1024 * 1024


@dataclass
class Block:
    docs: pa.Table
    quarantine: pa.Table
    n_read: int


def detect_format(path: str) -> tuple[str, str | None]:
    """(kind, compression) from the file name: jsonl|parquet|warc and gzip|zstd|None."""
    name = path.lower()
    compression = None
    for ext, comp in ((".gz", "gzip"), (".zst", "zstd"), (".zstd", "zstd")):
        if name.endswith(ext):
            compression, name = comp, name[: -len(ext)]
    if name.endswith(".parquet"):
        return "parquet", compression
    if name.endswith(".warc") or name.endswith(".arc"):
        return "warc", compression
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl", compression
    raise ValueError(f"{path}: unknown input format (expected .jsonl[.gz|.zst], .parquet or .warc.gz)")


# ---------------------------------------------------------------- decompression with break detection


def _decompressed_chunks(
    raw: io.BufferedIOBase, compression: str | None
) -> Iterator[tuple[bytes, str | None]]:
    """Yield (chunk, error); error is set on the last chunk when the stream is cut or corrupt.

    Decompressing by hand (not gzip.GzipFile) keeps every byte that was readable before a break.
    """
    read_size = 4 * 1024 * 1024
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
            try:
                out = d.decompress(comp)
            except zstandard.ZstdError as exc:
                yield b"", f"corrupt zstd stream: {exc}"
                return
            finished = d.eof
            if finished and d.unused_data:
                rest, d = d.unused_data, zstandard.ZstdDecompressor().decompressobj()
                out += d.decompress(rest)
                finished = d.eof
            if out:
                yield out, None
        return
    raise ValueError(f"unsupported compression {compression!r}")


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
    schema = schema_hint.get("schema") or pa.schema([(fields.text, pa.string())])
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
    schema_hint["schema"] = pa.schema(
        [f for f in table.schema if not (pa.types.is_struct(f.type) or pa.types.is_list(f.type))]
    )
    return table


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
    text = rec.get(fields.text)
    if text is None:
        return None, "missing_text", f"no {fields.text!r} field"
    if not isinstance(text, str):
        return None, "text_not_string", f"{fields.text!r} is {type(text).__name__}"
    if not text.strip():
        return None, "empty_text", "text is empty or whitespace"
    return rec, "", ""


def _records_to_table(records: list[dict], fields: FieldMap) -> pa.Table:
    """Slow-path records to a table shaped like the fast path's (meta fields as JSON-able values)."""
    cols: dict[str, list] = {fields.text: [r[fields.text] for r in records]}
    for key in (fields.id, fields.url, fields.source):
        vals = [r.get(key) for r in records]
        cols[key] = [None if v is None else str(v) if not isinstance(v, str) else v for v in vals]
    table = pa.table({k: pa.array(v, pa.string()) for k, v in cols.items()})
    exclude = {fields.text, fields.id, fields.url, fields.source}
    metas = [{k: v for k, v in r.items() if k not in exclude} for r in records]
    # Pre-encoded meta travels as a column that build_docs passes through untouched.
    return table.append_column(PRE_ENCODED_META, pa.array([orjson.dumps(m).decode() for m in metas]))


def read_jsonl(
    raw: io.BufferedIOBase, compression: str | None, fields: FieldMap, source_file: str, input_key: str
) -> Iterator[Block]:
    """Stream a JSON-lines file in blocks of whole lines (line numbers are 1-based)."""
    pending = b""
    line_no = 0  # lines consumed so far
    offset = 0  # decompressed bytes consumed so far
    quarantine = QuarantineBuffer(source_file, fields.raw_cap)
    schema_hint: dict = {}
    for chunk, error in _prefetched(_decompressed_chunks(raw, compression)):
        pending += chunk
        if len(pending) < BLOCK_BYTES and error is None:
            continue
        cut = pending.rfind(b"\n") + 1
        if cut:
            block, pending = pending[:cut], pending[cut:]
            yield _jsonl_block(
                block, line_no, offset, fields, source_file, input_key, quarantine, schema_hint
            )
            line_no += block.count(b"\n")
            offset += len(block)
        if error is not None:
            if pending.strip():
                quarantine.add(line_no + 1, offset, "truncated", error, pending)
                yield Block(DOCS_SCHEMA.empty_table(), quarantine.take(), 1)
            elif not pending:
                # The break fell on a line boundary: nothing half-read, but say so.
                quarantine.add(line_no + 1, offset, "truncated", error, b"")
                yield Block(DOCS_SCHEMA.empty_table(), quarantine.take(), 1)
            return
    if pending.strip():  # a final line without a newline is still a record
        yield _jsonl_block(
            pending + b"\n", line_no, offset, fields, source_file, input_key, quarantine, schema_hint
        )


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
    table = _parse_block_fast(lines, fields, schema_hint) if lines else None
    if table is not None:
        keep, reasons = text_problems(table.column(fields.text), fields.max_record_bytes)
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


# ---------------------------------------------------------------- Parquet


def read_parquet(
    raw: io.BufferedIOBase,
    fields: FieldMap,
    source_file: str,
    input_key: str,
    row_groups: list[int] | None = None,
) -> Iterator[Block]:
    """Stream a Parquet file (optionally a subset of its row groups) in record batches."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(raw)
    groups = list(range(pf.num_row_groups)) if row_groups is None else row_groups
    quarantine = QuarantineBuffer(source_file, fields.raw_cap)
    for g in groups:
        first_row = sum(pf.metadata.row_group(i).num_rows for i in range(g))
        for batch in pf.iter_batches(batch_size=65536, row_groups=[g]):
            table = pa.Table.from_batches([batch])
            offsets = np.arange(first_row, first_row + table.num_rows)
            first_row += table.num_rows
            yield _parquet_block(table, offsets, fields, source_file, input_key, quarantine)


def _parquet_block(
    table: pa.Table,
    offsets: np.ndarray,
    fields: FieldMap,
    source_file: str,
    input_key: str,
    quarantine: QuarantineBuffer,
) -> Block:
    n = table.num_rows
    if fields.text not in table.column_names:
        reasons = ["missing_text"] * n
        keep = pa.array([False] * n)
    else:
        col = table.column(fields.text)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            reasons, keep = ["text_not_string"] * n, pa.array([False] * n)
        else:
            try:
                col.validate(full=True)
            except pa.ArrowInvalid:
                col = _replace_invalid_utf8(col)
                table = table.set_column(table.column_names.index(fields.text), fields.text, col)
            keep, reasons = text_problems(col, fields.max_record_bytes)
    if reasons:
        rows = None
        for j, reason in enumerate(reasons):
            if reason:
                rows = rows or table.to_pylist()
                raw = orjson.dumps(rows[j], default=str)
                quarantine.add(int(offsets[j]), None, reason, f"row {int(offsets[j])}: {reason}", raw)
        table = table.filter(keep)
        offsets = offsets[np.asarray(keep.to_numpy(zero_copy_only=False), dtype=bool)]
    docs = build_docs(table, fields, input_key, source_file, pa.array(offsets)) if table.num_rows else None
    return Block(docs if docs is not None else DOCS_SCHEMA.empty_table(), quarantine.take(), n)


def _replace_invalid_utf8(col: pa.ChunkedArray) -> pa.Array:
    """Null out strings that are not valid UTF-8 (they are then quarantined as missing text)."""
    values = []
    for v in col.cast(pa.binary()).to_pylist():
        try:
            values.append(None if v is None else v.decode("utf-8"))
        except UnicodeDecodeError:
            values.append(None)
    return pa.array(values, pa.string())


# ---------------------------------------------------------------- WARC


def read_warc(raw: io.BufferedIOBase, fields: FieldMap, source_file: str, input_key: str) -> Iterator[Block]:
    """HTML responses of a WARC file, main text extracted with trafilatura (datatrove's extractor)."""
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.readers.warc import process_record
    from warcio.archiveiterator import ArchiveIterator

    extractor = Trafilatura(favour_precision=True)
    quarantine = QuarantineBuffer(source_file, fields.raw_cap)
    texts, ids, urls, metas, offsets = [], [], [], [], []
    n_read = 0
    for index, record in enumerate(ArchiveIterator(raw)):
        if record.rec_type not in ("response", "conversion"):
            continue
        parsed = process_record(record)
        if parsed is None:  # not HTML (or undecodable): not a document candidate
            continue
        n_read += 1
        text = extractor.extract(parsed["text"]) or ""
        if not text.strip():
            quarantine.add(index, None, "extract_empty", parsed.get("url") or "", parsed["text"].encode())
            continue
        texts.append(text)
        ids.append(parsed["id"])
        urls.append(parsed.get("url"))
        metas.append({"date": parsed.get("date")} if parsed.get("date") else {})
        offsets.append(index)
    if texts:
        table = pa.table(
            {
                fields.text: pa.array(texts, pa.string()),
                fields.id: pa.array(ids, pa.string()),
                fields.url: pa.array(urls, pa.string()),
                PRE_ENCODED_META: pa.array([orjson.dumps(m).decode() for m in metas]),
            }
        )
        docs = build_docs(table, fields, input_key, source_file, pa.array(offsets, pa.int64()))
    else:
        docs = DOCS_SCHEMA.empty_table()
    yield Block(docs, quarantine.take() if len(quarantine) else QUARANTINE_SCHEMA.empty_table(), n_read)
