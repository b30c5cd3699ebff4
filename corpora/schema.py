"""Column layouts of the corpus root: documents and quarantined records."""

from __future__ import annotations

import pyarrow as pa

# The documents of a corpus. `meta` keeps every other field of the source record as a JSON
# object (null-valued fields omitted): one schema for every source, queryable as meta->>'field'.
# `source_file` / `source_offset` say where the record came from (line number in JSONL, row
# index in Parquet, record index in WARC), so any document can be traced back to its input.
DOCS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("url", pa.string()),
        ("meta", pa.string()),
        ("source_file", pa.string()),
        ("source_offset", pa.int64()),
    ]
)

# Records that could not become documents, with enough context to find and fix them.
QUARANTINE_SCHEMA = pa.schema(
    [
        ("source_file", pa.string()),
        ("line", pa.int64()),  # 1-based line (JSONL), row index (Parquet), record index (WARC)
        ("byte_offset", pa.int64()),  # offset in the decompressed stream, null where not meaningful
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw", pa.binary()),  # the record's bytes, cut to the raw cap
        ("raw_size", pa.int64()),  # the record's full size in bytes
    ]
)

# Reason codes: stable strings users filter on (`SELECT … FROM quarantine WHERE reason = 'json'`).
REASONS = {
    "json": "the line is not valid JSON",
    "not_object": "the JSON value is not an object",
    "utf8": "the record is not valid UTF-8",
    "missing_text": "the text field is absent or null",
    "text_not_string": "the text field is not a string",
    "empty_text": "the text is empty or only whitespace",
    "duplicate_id": "another document of the corpus already has this id",
    "too_large": "the record is larger than the size limit",
    "truncated": "the compressed stream ends or breaks inside this record",
    "extract_empty": "HTML extraction produced no text",
}

DEFAULT_RAW_CAP = 64 * 1024
DEFAULT_MAX_RECORD_BYTES = 64 * 1024 * 1024
