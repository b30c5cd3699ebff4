"""Fuzzed inputs: corrupted JSONL / Parquet / WARC, plain or gzip / zstd / bzip2 compressed.

Each example is a real file run through ingest's own planning and work-unit code (the unit
raises when read != docs + quarantined). It must never raise anything but a clear ValueError
at planning, every record must be accounted for, and every quarantine row must carry a known
reason with a detail. The default profile is a few dozen examples per format; the slow one
(`pytest -m slow tests/reliability`) runs many more.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay.corpora.ingest import IngestOptions, ingest_unit, plan_units
from assay.corpora.inputs import InputFile
from assay.corpora.schema import REASONS

FAST = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
LONG = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
MAX_RECORD = 2000  # small, so that "huge" lines are cheap

# ---------------------------------------------------------------- strategies

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=30)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
texts = st.one_of(
    st.text(min_size=1, max_size=200),
    st.just("   \t"),
    st.just(""),
    st.text(min_size=MAX_RECORD, max_size=MAX_RECORD + 50),  # too large
)
wrong_texts = st.one_of(st.integers(), st.none(), st.lists(st.integers(), max_size=2), st.booleans())
records = st.fixed_dictionaries(
    {"text": st.one_of(texts, texts, texts, wrong_texts)},
    optional={
        "id": st.one_of(st.text(min_size=1, max_size=8), st.integers(0, 5)),
        "url": st.one_of(st.text(max_size=10), st.none()),
        "meta": values,
        "when": st.just("2024-01-02T03:04:05"),
    },
)


@st.composite
def damaged(draw, data: bytes) -> bytes:
    """data with a few of: a cut, byte flips, inserted invalid UTF-8 or junk, a huge line."""
    out = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["cut", "flip", "insert", "huge", "blank"]))
        at = draw(st.integers(0, len(out))) if out else 0
        if op == "cut":
            del out[at:]
        elif op == "flip" and out:
            at = min(at, len(out) - 1)
            out[at] ^= draw(st.integers(1, 255))
        elif op == "insert":
            out[at:at] = draw(st.sampled_from([b"\xff\xfe", b"\xc3", b"{", b"\n", b"\x00", b'"', b"\r\n"]))
        elif op == "huge":
            out[at:at] = b'{"text": "' + b"x" * (MAX_RECORD + 10) + b'"}\n'
        else:
            out[at:at] = b"\n\n  \n"
    return bytes(out)


def _compress(data: bytes, compression: str | None) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    if compression == "bzip2":
        return bz2.compress(data)
    return data


EXT = {None: "", "gzip": ".gz", "zstd": ".zst", "bzip2": ".bz2"}

# ---------------------------------------------------------------- the check


def _ingest_file(name: str, data: bytes, **options) -> None:
    """One file through planning and its work units, as `assay ingest` runs them; the checks."""
    folder = Path(tempfile.mkdtemp(prefix="assay-fuzz-"))
    try:
        path = folder / name
        path.write_bytes(data)
        opts = IngestOptions(max_record_bytes=MAX_RECORD, raw_cap=256, shard_rows=50, **options)
        try:
            units = plan_units([InputFile(str(path), name)], opts)
        except ValueError as exc:  # a field that no record has, a file that is not Parquet: one line
            assert str(exc) and "\n" not in str(exc).strip()
            return
        from dataclasses import asdict

        for i, unit in enumerate(units):
            rec = ingest_unit(str(folder / "root"), "fuzz", i, unit, asdict(opts))  # raises on imbalance
            assert rec["records_read"] == rec["docs"] + rec["quarantined"]
            stage = folder / "root" / "docs" / ".staging" / "fuzz"
            assert rec["docs"] == sum(
                pq.ParquetFile(stage / s["name"]).metadata.num_rows for s in rec["shards"]
            )
            if rec["quarantined"]:
                q = pq.read_table(stage / f"q{i:05d}.parquet")
                assert q.num_rows == rec["quarantined"]
                for row in q.select(["reason", "detail"]).to_pylist():
                    assert row["reason"] in REASONS and row["detail"], row
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- JSONL, plain and compressed


def _jsonl(recs: list[dict]) -> bytes:
    # the standard library writes integers beyond 64 bits, which orjson refuses to
    return b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n" for r in recs)


jsonl_case = st.tuples(
    st.lists(records, max_size=12),
    st.sampled_from([None, "gzip", "zstd", "bzip2"]),
    st.sampled_from(["content", "stream"]),  # damage the records, or the compressed bytes
    st.data(),
)


def _check_jsonl(case) -> None:
    recs, compression, where, data = case
    raw = _jsonl(recs)
    if where == "content" or compression is None:
        blob = _compress(data.draw(damaged(raw)), compression)
    else:
        blob = data.draw(damaged(_compress(raw, compression)))
    split = data.draw(st.sampled_from([0, 0, 64]))  # byte-range units too (plain files only)
    _ingest_file(f"in.jsonl{EXT[compression]}", blob, split_bytes=split)


@FAST
@given(jsonl_case)
def test_fuzz_jsonl(case):
    _check_jsonl(case)


@pytest.mark.slow
@LONG
@given(jsonl_case)
def test_fuzz_jsonl_long(case):
    _check_jsonl(case)


def test_empty_and_blank_files_of_every_compression():
    for compression in (None, "gzip", "zstd", "bzip2"):
        for body in (b"", _compress(b"", compression), _compress(b"\n \n", compression)):
            _ingest_file(f"e.jsonl{EXT[compression]}", body)
            _ingest_file(f"e.txt{EXT[compression]}", body, txt_mode="line")


# ---------------------------------------------------------------- Parquet

text_columns = st.one_of(
    st.lists(st.one_of(st.text(max_size=50), st.none()), min_size=1, max_size=30).map(
        lambda v: pa.array(v, pa.string())
    ),
    st.lists(st.binary(max_size=30), min_size=1, max_size=30).map(lambda v: pa.array(v, pa.binary())),
    st.lists(st.integers(-100, 100), min_size=1, max_size=30).map(pa.array),
)


def _parquet(col: pa.Array, row_group: int) -> bytes:
    buf = io.BytesIO()
    table = pa.table({"text": col, "n": pa.array(range(len(col)))})
    pq.write_table(table, buf, row_group_size=row_group, compression="zstd")
    return buf.getvalue()


parquet_case = st.tuples(text_columns, st.integers(1, 10), st.booleans(), st.data())


def _check_parquet(case) -> None:
    col, row_group, damage, data = case
    blob = _parquet(col, row_group)
    if damage:
        blob = data.draw(damaged(blob))
    _ingest_file("in.parquet", blob, unit_rows=data.draw(st.sampled_from([5, 1_000_000])))


@FAST
@given(parquet_case)
def test_fuzz_parquet(case):
    _check_parquet(case)


@pytest.mark.slow
@LONG
@given(parquet_case)
def test_fuzz_parquet_long(case):
    _check_parquet(case)


# ---------------------------------------------------------------- WARC


def _warc(pages: list[str], gz: bool) -> bytes:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=gz)
    for i, body in enumerate(pages):
        html = f"<html><body><p>{body}</p><p>Paragraph {i} of a page that is long enough.</p></body></html>"
        headers = StatusAndHeaders(
            "200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1"
        )
        fixed = {
            "WARC-Record-ID": f"<urn:uuid:00000000-0000-0000-0000-{i:012d}>",
            "WARC-Date": "2024-01-02T03:04:05Z",
        }
        record = writer.create_warc_record(
            f"http://example.org/{i}",
            "response",
            payload=io.BytesIO(html.encode()),
            http_headers=headers,
            warc_headers_dict=fixed,  # the same bytes every time, so that hypothesis can replay
        )
        writer.write_record(record)
    return buf.getvalue()


warc_case = st.tuples(
    st.lists(st.text(min_size=0, max_size=80), max_size=4), st.sampled_from([None, "gzip"]), st.data()
)


def _check_warc(case) -> None:
    pages, compression, data = case
    blob = data.draw(damaged(_warc(pages, compression == "gzip")))
    _ingest_file(f"in.warc{EXT[compression]}", blob)


@settings(FAST, max_examples=12)
@given(warc_case)
def test_fuzz_warc(case):
    _check_warc(case)


@pytest.mark.slow
@settings(LONG, max_examples=150)
@given(warc_case)
def test_fuzz_warc_long(case):
    _check_warc(case)
