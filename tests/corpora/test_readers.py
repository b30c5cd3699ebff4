"""Damaged inputs: truncated WARC / Parquet / Arrow files, invalid UTF-8 in Parquet, compressed Parquet."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FIXTURES, REPO

from assay.corpora.catalog import run_query
from assay.pipelines.ingest import ingest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WARC = REPO / "sample" / "web" / "dolma_sample-0000.warc.gz"
SPEECHES = pq.read_table(FIXTURES / "ingest" / "inaugural.parquet")


def _quarantine(root: Path) -> list[dict]:
    return run_query(root, "SELECT * FROM quarantine ORDER BY source_file, line").to_pylist()


def _balanced(summary: dict) -> bool:
    return all(i["records_read"] == i["docs"] + i["quarantined"] for i in summary["inputs"])


def test_truncated_warc_keeps_the_records_before_the_break(tmp_path):
    full = ingest([str(WARC)], tmp_path / "full", quiet=True)
    full_ids = (
        run_query(tmp_path / "full", "SELECT id FROM docs ORDER BY source_offset").column(0).to_pylist()
    )
    src = tmp_path / "in"
    src.mkdir()
    data = WARC.read_bytes()
    (src / "cut.warc.gz").write_bytes(data[: len(data) // 2])
    (src / "cut_plain.warc").write_bytes(gzip.decompress(data)[:400_000])
    for name in ("cut.warc.gz", "cut_plain.warc"):
        root = tmp_path / name
        summary = ingest([str(src / name)], root, quiet=True)
        assert _balanced(summary) and 0 < summary["docs"] < full["docs"]
        cut = [r for r in _quarantine(root) if r["reason"] == "truncated"]
        assert len(cut) == 1 and "breaks in record" in cut[0]["detail"]
        ids = run_query(root, "SELECT id, source_offset FROM docs ORDER BY source_offset").to_pylist()
        assert [r["id"] for r in ids] == full_ids[: len(ids)]  # a prefix of the whole file's documents
        assert cut[0]["line"] > ids[-1]["source_offset"]


def test_truncated_parquet_is_quarantined_beside_good_files(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(SPEECHES, src / "good.parquet")
    data = (src / "good.parquet").read_bytes()
    (src / "cut.parquet").write_bytes(data[: len(data) // 2])
    summary = ingest([str(src)], tmp_path / "root", _options(), quiet=True)
    per = {Path(i["path"]).name: i for i in summary["inputs"]}
    assert (per["good.parquet"]["docs"], per["good.parquet"]["quarantined"]) == (60, 0)
    assert (per["cut.parquet"]["records_read"], per["cut.parquet"]["quarantined"]) == (1, 1)
    (row,) = _quarantine(tmp_path / "root")
    assert row["reason"] == "truncated" and "footer" in row["detail"]
    assert row["raw_size"] == len(data) // 2 and row["raw"] == data[: len(data) // 2]


def test_truncated_arrow_keeps_whole_batches(tmp_path):
    import datasets

    datasets.disable_progress_bars()
    texts = SPEECHES.column("content").to_pylist()
    ds = datasets.Dataset.from_dict({"text": [texts[i % len(texts)] for i in range(2500)]})
    ds.save_to_disk(str(tmp_path / "ds"))  # batches of 1000 rows
    arrow = tmp_path / "ds" / "data-00000-of-00001.arrow"
    data = arrow.read_bytes()
    arrow.write_bytes(data[: len(data) - 5000])
    summary = ingest([f"hf:{tmp_path / 'ds'}"], tmp_path / "root", quiet=True)
    assert (summary["records_read"], summary["docs"], summary["quarantined"]) == (2001, 2000, 1)
    (row,) = _quarantine(tmp_path / "root")
    assert (row["reason"], row["line"]) == ("truncated", 2000)


def test_invalid_utf8_in_parquet_text(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    # a string column holding bytes that are not UTF-8 (as some writers produce)
    bad = pa.array([b"fine text", b"caf\xe9 au lait", None, b"more fine text"], pa.binary())
    pq.write_table(
        pa.table({"id": ["s0", "s1", "s2", "s3"], "text": bad.view(pa.string())}), src / "strings.parquet"
    )
    # a binary text column: valid UTF-8 values are documents, the rest utf8
    binary = pa.array([b"bytes that decode", b"\xff\xfe broken", b"\xc3\xa9t\xc3\xa9"], pa.binary())
    blob = pa.array([b"\x00\x01", b"x", None], pa.binary())
    pq.write_table(pa.table({"id": ["b0", "b1", "b2"], "text": binary, "blob": blob}), src / "binary.parquet")
    summary = ingest([str(src)], tmp_path / "root", quiet=True)
    assert _balanced(summary) and (summary["docs"], summary["quarantined"]) == (4, 3)
    q = [(r["line"], r["reason"], r["raw"]) for r in _quarantine(tmp_path / "root")]
    assert q == [
        (1, "utf8", b"\xff\xfe broken"),
        (1, "utf8", b"caf\xe9 au lait"),
        (2, "missing_text", q[2][2]),
    ]
    assert "invalid UTF-8 at byte 3" in _quarantine(tmp_path / "root")[1]["detail"]
    docs = run_query(tmp_path / "root", "SELECT id, text, meta FROM docs ORDER BY id").to_pylist()
    assert [d["id"] for d in docs] == ["b0", "b2", "s0", "s3"]
    assert docs[1]["text"] == "été" and json.loads(docs[0]["meta"]) == {"blob": "\x00\x01"}


def test_compressed_parquet_is_refused_clearly(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.parquet.gz").write_bytes(
        gzip.compress((FIXTURES / "ingest" / "inaugural.parquet").read_bytes())
    )
    for spec in (src / "a.parquet.gz", src):
        with pytest.raises(ValueError, match=r"a\.parquet\.gz: a gzip-compressed Parquet file .*`gunzip -k"):
            ingest([str(spec)], tmp_path / "root", quiet=True)


def _options():
    from assay.corpora.ingest import IngestOptions

    return IngestOptions(text_field="content", id_field="doc_id")


def test_bare_null_lines_are_quarantined_not_a_crash(tmp_path):
    """A line that is only `null` crashed pyarrow's JSON reader (a segfault, found by the fuzz
    tests); such lines are `not_object` rows and the objects around them are kept."""
    src = tmp_path / "nulls.jsonl"
    src.write_bytes(b'null\n{"text": "kept"}\nnull, "\n {"text": "indented"}\n')
    summary = ingest([str(src)], tmp_path / "root", quiet=True)
    assert (summary["records_read"], summary["docs"], summary["quarantined"]) == (4, 2, 2)
    assert [r["reason"] for r in _quarantine(tmp_path / "root")] == ["not_object", "json"]
