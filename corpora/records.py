"""Turning parsed source records into document columns and quarantine rows (format-agnostic)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from assay.corpora.schema import DEFAULT_MAX_RECORD_BYTES, DEFAULT_RAW_CAP, DOCS_SCHEMA, QUARANTINE_SCHEMA


@dataclass(frozen=True)
class FieldMap:
    """Which source fields become which document columns.

    Each field is a path: a top-level key of that exact name, else a dotted path into nested
    objects (`metadata.url`), as dolma files nest theirs.
    """

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


# ---------------------------------------------------------------- field paths

_ABSENT = object()


def lookup(record: dict, path: str, default=None):
    """A record's value at a field path (see FieldMap); `default` when the path is absent."""
    if path in record:
        return record[path]
    value = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return default
        value = value[part]
    return value


def has_path(record: dict, path: str) -> bool:
    """Whether the record has the field at all (a null value counts: the key is there)."""
    return lookup(record, path, _ABSENT) is not _ABSENT


def field_column(table: pa.Table, path: str) -> pa.ChunkedArray | None:
    """The column at a field path, struct fields picked out by Arrow; None when the table has none."""
    if path in table.column_names:
        return table.column(path)
    head, *rest = path.split(".")
    if not rest or head not in table.column_names:
        return None
    col = table.column(head)
    for part in rest:
        if not pa.types.is_struct(col.type) or col.type.get_field_index(part) < 0:
            return None
        col = pc.struct_field(col, part)  # null where the parent struct is null
    return col


def schema_has_path(schema: pa.Schema, path: str) -> bool:
    if path in schema.names:
        return True
    head, *rest = path.split(".")
    if not rest or head not in schema.names:
        return False
    t = schema.field(head).type
    for part in rest:
        if not pa.types.is_struct(t) or t.get_field_index(part) < 0:
            return False
        t = t.field(part).type
    return True


def without_paths(record: dict, paths: list[list[str]]) -> dict:
    """The record less the nested fields at these (split) paths; other keys are shared, not copied."""
    out = dict(record)
    for parts in paths:
        _pop(out, parts)
    return out


def _pop(obj: dict, parts: list[str]) -> None:
    key = parts[0]
    if key not in obj:
        return
    if len(parts) == 1:
        del obj[key]
    elif isinstance(obj[key], dict):
        obj[key] = child = dict(obj[key])  # copy: the caller's record stays whole
        _pop(child, parts[1:])


def meta_exclusions(names: list[str], fields: FieldMap) -> tuple[set[str], list[list[str]]]:
    """What meta leaves out: mapped top-level keys, and mapped nested fields (split into parts).

    A mapped nested field leaves meta like a top-level one, so its value is never stored twice
    (the text above all); the rest of its object stays in meta.
    """
    top: set[str] = set()
    nested: list[list[str]] = []
    for path in (fields.text, fields.id, fields.url, fields.source):
        if path in names or "." not in path:
            top.add(path)
        else:
            nested.append(path.split("."))
    return top, nested


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


def meta_column(table: pa.Table, fields: FieldMap) -> pa.Array:
    """JSON-encode the fields not mapped to document columns (small: never the text)."""
    if PRE_ENCODED_META in table.column_names:
        return table.column(PRE_ENCODED_META).combine_chunks().cast(pa.string())
    top, nested = meta_exclusions(table.column_names, fields)
    rest = [c for c in table.column_names if c not in top]
    if not rest:
        return pa.array(["{}"] * table.num_rows, pa.string())
    rows = table.select(rest).to_pylist()
    if nested:
        rows = [without_paths(r, nested) for r in rows]
    return pa.array([encode_meta(drop_nulls(r)) for r in rows], pa.string())


def encode_meta(meta: dict) -> str:
    """meta as JSON with its keys sorted (at every depth): a record's meta must not depend on
    which reader path, block or byte range read it, and Arrow's JSON reader orders fields by
    first appearance in a block, not as each record wrote them."""
    return orjson.dumps(meta, default=json_default, option=orjson.OPT_SORT_KEYS).decode()


def string_or_null(table: pa.Table, path: str) -> pa.Array:
    col = field_column(table, path)
    if col is None:
        return pa.nulls(table.num_rows, pa.string())
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
    text: pa.Array | pa.ChunkedArray | None = None,
) -> pa.Table:
    """Assemble the document columns from a validated table (text present, non-empty strings).

    `text` is the text column when the caller already holds it (decoded), else it is looked up.

    The id is the record's own id when it has one, else `<input_key>:<offset>`: stable across
    reruns of the same inputs, unique within the input.
    """
    derived = pc.binary_join_element_wise(
        pa.array([input_key] * table.num_rows, pa.string()), offsets.cast(pa.string()), ":"
    )
    own_id = string_or_null(table, fields.id)
    ids = pc.if_else(pc.is_null(own_id), derived, own_id)
    source = pc.fill_null(string_or_null(table, fields.source), fields.default_source or input_key)
    text = field_column(table, fields.text) if text is None else text
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    return pa.table(
        {
            "id": ids,
            "text": text.cast(pa.string()),
            "source": source,
            "url": string_or_null(table, fields.url),
            "meta": meta_column(table, fields),
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
