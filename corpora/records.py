"""Turning parsed source records into document columns and quarantine rows (format-agnostic)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from assay.corpora.schema import DEFAULT_MAX_RECORD_BYTES, DEFAULT_RAW_CAP, DOCS_SCHEMA, QUARANTINE_SCHEMA


@dataclass(frozen=True)
class FieldMap:
    """Which source fields become which document columns."""

    text: str = "text"
    id: str = "id"
    url: str = "url"
    source: str = "source"
    default_source: str | None = None  # used when a record has no `source` field
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    raw_cap: int = DEFAULT_RAW_CAP


# Readers that already hold each record's other fields pass them JSON-encoded in this column.
PRE_ENCODED_META = "__meta_json__"


class QuarantineBuffer:
    """Collects rejected records; becomes one Arrow table."""

    def __init__(self, source_file: str, raw_cap: int):
        self.source_file = source_file
        self.raw_cap = raw_cap
        self.rows: dict[str, list] = {f.name: [] for f in QUARANTINE_SCHEMA}

    def add(
        self,
        line: int,
        byte_offset: int | None,
        reason: str,
        detail: str,
        raw: bytes,
        size: int | None = None,
    ) -> None:
        """One rejected record; `size` is its full size when `raw` holds only its start."""
        r = self.rows
        r["source_file"].append(self.source_file)
        r["line"].append(line)
        r["byte_offset"].append(byte_offset)
        r["reason"].append(reason)
        r["detail"].append(detail[:500])
        r["raw"].append(bytes(raw[: self.raw_cap]))
        r["raw_size"].append(len(raw) if size is None else size)

    def __len__(self) -> int:
        return len(self.rows["reason"])

    def take(self) -> pa.Table:
        table = pa.table(self.rows, schema=QUARANTINE_SCHEMA)
        self.rows = {f.name: [] for f in QUARANTINE_SCHEMA}
        return table


def drop_nulls(value):
    """Remove null-valued keys recursively, so `meta` says only what the record said."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def json_default(value):
    """JSON for what orjson does not encode: bytes (binary columns) as text, the rest via str()."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "backslashreplace")
    return str(value)


def meta_column(table: pa.Table, exclude: set[str]) -> pa.Array:
    """JSON-encode the columns not mapped to document fields (small: never the text)."""
    if PRE_ENCODED_META in table.column_names:
        return table.column(PRE_ENCODED_META).combine_chunks().cast(pa.string())
    rest = [c for c in table.column_names if c not in exclude]
    if not rest:
        return pa.array(["{}"] * table.num_rows, pa.string())
    rows = table.select(rest).to_pylist()
    return pa.array([orjson.dumps(drop_nulls(r), default=json_default).decode() for r in rows], pa.string())


def string_or_null(table: pa.Table, name: str) -> pa.Array:
    if name not in table.column_names:
        return pa.nulls(table.num_rows, pa.string())
    col = table.column(name)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return col.combine_chunks().cast(pa.string())
    if pa.types.is_null(col.type):
        return pa.nulls(table.num_rows, pa.string())
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        return col.combine_chunks().cast(pa.string())
    return pa.nulls(table.num_rows, pa.string())


def build_docs(
    table: pa.Table,
    fields: FieldMap,
    input_key: str,
    source_file: str,
    offsets: pa.Array,
) -> pa.Table:
    """Assemble the document columns from a validated table (text present, non-empty strings).

    The id is the record's own id when it has one, else `<input_key>:<offset>`: stable across
    reruns of the same inputs, unique within the input.
    """
    derived = pc.binary_join_element_wise(
        pa.array([input_key] * table.num_rows, pa.string()), offsets.cast(pa.string()), ":"
    )
    own_id = string_or_null(table, fields.id)
    ids = pc.if_else(pc.is_null(own_id), derived, own_id)
    source = pc.fill_null(string_or_null(table, fields.source), fields.default_source or input_key)
    exclude = {fields.text, fields.id, fields.url, fields.source}
    return pa.table(
        {
            "id": ids,
            "text": table.column(fields.text).combine_chunks().cast(pa.string()),
            "source": source,
            "url": string_or_null(table, fields.url),
            "meta": meta_column(table, exclude),
            "source_file": pa.array([source_file] * table.num_rows, pa.string()),
            "source_offset": offsets.cast(pa.int64()),
        },
        schema=DOCS_SCHEMA,
    )


def text_problems(text: pa.ChunkedArray | pa.Array, max_bytes: int) -> tuple[pa.Array, list[str]]:
    """Vectorised checks of a string text column: returns a keep mask and per-row reason (or '')."""
    text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    is_null = pc.is_null(text)
    trimmed_len = pc.fill_null(pc.binary_length(pc.utf8_trim_whitespace(text)), 0)
    empty = pc.and_(pc.invert(is_null), pc.equal(trimmed_len, 0))
    too_large = pc.fill_null(pc.greater(pc.binary_length(text), max_bytes), False)
    keep = pc.invert(pc.or_(pc.or_(is_null, empty), too_large))
    reasons = pc.if_else(
        is_null, "missing_text", pc.if_else(empty, "empty_text", pc.if_else(too_large, "too_large", ""))
    )
    return keep, reasons.to_pylist() if not pc.all(keep).as_py() else []
