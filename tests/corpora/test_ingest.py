"""Ingest of every input kind, the read = written + quarantined balance, and reason codes."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import FIXTURES, REPO

from assay.corpora.catalog import run_query
from assay.corpora.ingest import IngestOptions
from assay.corpora.manifest import load_manifest
from assay.pipelines.ingest import ingest

INGEST = FIXTURES / "ingest"


def docs_rows(root: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in (root / "docs").glob("part-*.parquet"))


def test_each_input_kind(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # derived ids are paths relative to the current directory
    root = tmp_path / "root"
    summary = ingest(
        [
            str(INGEST / "inaugural_noid.jsonl"),
            str(INGEST / "inaugural.jsonl.zst"),
            str(REPO / "sample" / "web" / "dolma_sample-0000.warc.gz"),
        ],
        root,
        quiet=True,
    )
    by_kind = {Path(i["path"]).name: i for i in summary["inputs"]}
    assert by_kind["inaugural_noid.jsonl"]["docs"] == 40
    assert by_kind["inaugural.jsonl.zst"]["docs"] == 40
    warc = by_kind["dolma_sample-0000.warc.gz"]
    assert warc["records_read"] == warc["docs"] + warc["quarantined"] and warc["docs"] >= 15
    assert docs_rows(root) == summary["docs"]
    # derived ids are <input>:<line>, own ids are kept
    ids = run_query(
        root, "SELECT id FROM docs WHERE source = 'inaugural_noid' ORDER BY source_offset"
    ).column(0)
    assert ids[0].as_py() == "tests/fixtures/ingest/inaugural_noid.jsonl:1"
    assert ids[39].as_py() == "tests/fixtures/ingest/inaugural_noid.jsonl:40"
    zst_ids = run_query(root, "SELECT id FROM docs WHERE source = 'inaugural' ORDER BY source_offset LIMIT 1")
    assert zst_ids.column(0)[0].as_py().startswith("inaugural/")
    # WARC: extracted text, the record id and URL
    row = run_query(
        root, "SELECT id, url, text FROM docs WHERE source = 'dolma_sample-0000' LIMIT 1"
    ).to_pylist()[0]
    assert (
        row["id"].startswith("<urn:uuid:")
        and row["url"].startswith("http")
        and "<html" not in row["text"].lower()
    )
    # meta keeps the source's other fields as JSON
    title = run_query(
        root, "SELECT meta->>'title' AS t FROM docs WHERE id = 'tests/fixtures/ingest/inaugural_noid.jsonl:1'"
    ).column(0)[0]
    assert title.as_py() == "1789-Washington"


def test_parquet_with_field_options_and_row_group_units(tmp_path):
    root = tmp_path / "root"
    options = IngestOptions(text_field="content", id_field="doc_id", unit_rows=20, shard_rows=25)
    summary = ingest([str(INGEST / "inaugural.parquet")], root, options, quiet=True)
    assert summary["docs"] == 60 and summary["quarantined"] == 0
    manifest = load_manifest(root)
    assert [s["rows"] for s in manifest["shards"]] == [20, 20, 20]  # one unit per row group
    first = pq.read_table(REPO / "tests/fixtures/ingest/inaugural.parquet").column("doc_id")[0].as_py()
    assert run_query(root, f"SELECT count(*) FROM docs WHERE id = '{first}'").column(0)[0].as_py() == 1


def test_directories_and_globs(tmp_path):
    root = tmp_path / "root"
    summary = ingest(
        [str(REPO / "sample" / "speeches"), str(REPO / "sample" / "web" / "*.jsonl.gz")], root, quiet=True
    )
    names = sorted(Path(i["path"]).name for i in summary["inputs"])
    assert names == [
        "dolma_cc_en_head-0091.jsonl.gz",
        "dolma_cc_en_head-0174.jsonl.gz",
        "inaugural.jsonl.gz",
        "state_union.jsonl.gz",
    ]
    assert all(i["records_read"] == i["docs"] + i["quarantined"] for i in summary["inputs"])


def _bad_lines() -> bytes:
    good = [json.dumps({"id": f"d{i}", "text": f"document number {i} has some words"}) for i in range(10)]
    lines = [
        good[0].encode(),  # 1 ok
        b'{"id": "x1", "text": "broken',  # 2 json
        b'{"id": "x2", "text": "caf\xe9 au lait"}',  # 3 utf8
        b'{"id": "x3", "title": "no text here"}',  # 4 missing_text
        b'{"id": "x4", "text": 42}',  # 5 text_not_string
        b'{"id": "x5", "text": "  \\n\\t "}',  # 6 empty_text
        good[0].encode(),  # 7 duplicate_id (d0 again)
        b'{"id": "x6", "text": "' + b"y" * 3000 + b'"}',  # 8 too_large (limit set to 2000 bytes)
        b"[1, 2, 3]",  # 9 not_object
        b"",  # blank line: not a record
        good[1].encode(),  # 11 ok
        good[2].encode(),  # 12 ok
    ]
    return b"\n".join(lines) + b"\n"


def test_bad_input_balance_and_reasons(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "bad.jsonl").write_bytes(_bad_lines())
    # a truncated gzip: whole lines before the break are kept, the cut line is quarantined
    full = gzip.compress(
        b"".join(
            json.dumps({"id": f"g{i}", "text": f"gz doc {i} " * 30}).encode() + b"\n" for i in range(200)
        )
    )
    (src / "cut.jsonl.gz").write_bytes(full[: len(full) * 2 // 3])
    root = tmp_path / "root"
    options = IngestOptions(max_record_bytes=2000)
    summary = ingest([str(src)], root, options, quiet=True)
    per = {Path(i["path"]).name: i for i in summary["inputs"]}
    bad = per["bad.jsonl"]
    assert (bad["records_read"], bad["docs"], bad["quarantined"]) == (11, 3, 8)
    cut = per["cut.jsonl.gz"]
    assert (
        cut["records_read"] == cut["docs"] + cut["quarantined"]
        and cut["quarantined"] == 1
        and cut["docs"] > 50
    )
    q = run_query(
        root, "SELECT source_file, line, reason FROM quarantine ORDER BY source_file, line"
    ).to_pylist()
    bad_reasons = [(r["line"], r["reason"]) for r in q if r["source_file"].endswith("bad.jsonl")]
    assert bad_reasons == [
        (2, "json"),
        (3, "utf8"),
        (4, "missing_text"),
        (5, "text_not_string"),
        (6, "empty_text"),
        (7, "duplicate_id"),
        (8, "too_large"),
        (9, "not_object"),
    ]
    cut_rows = [r for r in q if r["source_file"].endswith("cut.jsonl.gz")]
    assert [r["reason"] for r in cut_rows] == ["truncated"] and cut_rows[0]["line"] == cut["docs"] + 1
    raw = run_query(root, "SELECT raw, raw_size FROM quarantine WHERE reason = 'too_large'").to_pylist()[0]
    assert raw["raw_size"] > 3000 and len(raw["raw"]) <= 64 * 1024
    # ids stay unique in the corpus
    n, distinct = run_query(root, "SELECT count(*), count(DISTINCT id) FROM docs").to_pylist()[0].values()
    assert n == distinct == summary["docs"]


def test_duplicate_ids_across_files_keep_the_first(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jsonl").write_text(json.dumps({"id": "same", "text": "first copy"}) + "\n")
    (src / "b.jsonl").write_text(json.dumps({"id": "same", "text": "second copy"}) + "\n")
    root = tmp_path / "root"
    ingest([str(src)], root, quiet=True)
    assert run_query(root, "SELECT text FROM docs").column(0).to_pylist() == ["first copy"]
    q = run_query(root, "SELECT source_file, reason FROM quarantine").to_pylist()
    assert len(q) == 1 and q[0]["source_file"].endswith("b.jsonl") and q[0]["reason"] == "duplicate_id"


def test_rerun_is_a_no_op_and_other_inputs_need_append(tmp_path):
    root = tmp_path / "root"
    first = ingest([str(INGEST / "inaugural_noid.jsonl")], root, quiet=True)
    again = ingest([str(INGEST / "inaugural_noid.jsonl")], root, quiet=True)
    assert again["already_done"] and again["docs"] == first["docs"]
    with pytest.raises(ValueError, match="--append"):
        ingest([str(INGEST / "inaugural.jsonl.zst")], root, quiet=True)
    ingest([str(INGEST / "inaugural.jsonl.zst")], root, append=True, quiet=True)
    assert docs_rows(root) == 80
    assert [s["name"] for s in load_manifest(root)["shards"]] == [
        "docs/part-00000.parquet",
        "docs/part-00001.parquet",
    ]


def test_manifest_checksums_and_runs(tmp_path):
    root = tmp_path / "root"
    ingest([str(INGEST / "inaugural_noid.jsonl")], root, quiet=True)
    m = load_manifest(root)
    from assay.corpora.shards import sha256_file

    for s in m["shards"]:
        assert sha256_file(root / s["name"]) == s["sha256"]
    run = m["runs"][-1]
    assert run["stage"] == "ingest" and run["docs"] == 40 and run["versions"]["datatrove"] != "absent"
    assert run["docs_per_s"] > 0 and run["executor"] == "local"
    assert not list(root.rglob("*.tmp-assay")) and not (root / "docs" / ".staging").exists()


def test_workers_give_the_same_shards(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("inaugural_noid.jsonl", "inaugural.jsonl.zst"):
        shutil.copy(INGEST / name, src / name)
    from assay.pipelines.executor import ExecutorConfig

    one = ingest([str(src)], tmp_path / "one", quiet=True)
    two = ingest([str(src)], tmp_path / "two", config=ExecutorConfig(workers=2), quiet=True)
    assert one["docs"] == two["docs"]
    sums = [[s["sha256"] for s in load_manifest(tmp_path / r)["shards"]] for r in ("one", "two")]
    assert sums[0] == sums[1]


def _big_jsonl(path: Path, n: int = 600) -> bytes:
    """Varied records (own ids and derived ones, nested meta, dates) with bad lines among them."""
    import random

    rng = random.Random(3)
    words = ["alpha", "beta", "gamma", "délta", "ε", "zeta", "eta", "theta"]
    lines = []
    for i in range(n):
        rec = {"text": " ".join(rng.choices(words, k=rng.randint(1, 120)))}
        if i % 3 == 0:
            rec["id"] = f"own-{i}"
        if i % 5 == 0:
            rec["meta"] = {"n": i / 7, "tags": ["a", "b"][: i % 3], "deep": {"x": None, "y": i}}
        if i % 7 == 0:
            rec["when"] = "2024-01-02T03:04:05"
        line = json.dumps(rec, ensure_ascii=i % 2 == 0).encode()
        if i % 97 == 5:
            line = b'{"text": "cut'
        elif i % 89 == 7:
            line = b'{"text": "bad \xff utf-8"}'
        elif i % 83 == 9:
            line = b'{"text": "   "}'
        elif i % 211 == 11:
            line = json.dumps({"text": "long " * 2000}).encode()  # over max_record_bytes below
        lines.append(line)
        if i % 50 == 13:
            lines.append(b"")  # a blank line: no record, but it counts in line numbers
    lines.append(b'{"id": "own-3", "text": "a duplicate id"}')  # quarantined as duplicate_id
    data = b"\n".join(lines) + b'\n{"text": "the last line has no newline"}'
    path.write_bytes(data)
    return data


def test_big_jsonl_splits_into_byte_ranges_with_identical_shards(tmp_path, monkeypatch):
    """--split-bytes cuts a JSONL file into line-aligned ranges read in parallel; the shards,
    ids, quarantine and counts are byte-identical to reading it as one unit."""
    from assay.corpora.ingest import plan_units
    from assay.corpora.inputs import InputFile
    from assay.pipelines.executor import ExecutorConfig

    monkeypatch.chdir(tmp_path)
    data = _big_jsonl(tmp_path / "big.jsonl")
    base = {"shard_rows": 70, "max_record_bytes": 4000}
    units = plan_units([InputFile("big.jsonl", "big.jsonl")], IngestOptions(split_bytes=12_000, **base))
    assert len(units) > 5 and units[0]["byte_range"][0] == 0 and units[-1]["byte_range"][1] == len(data)
    for prev, unit in zip(units, units[1:]):
        start = unit["byte_range"][0]
        assert prev["byte_range"][1] == start and data[start - 1 : start] == b"\n"
        assert unit["first_line"] == data[:start].count(b"\n")

    runs = {
        "one": (IngestOptions(**base), ExecutorConfig()),
        "split": (IngestOptions(split_bytes=12_000, **base), ExecutorConfig()),
        "split2": (IngestOptions(split_bytes=12_000, **base), ExecutorConfig(workers=2)),
    }
    got = {}
    for name, (options, config) in runs.items():
        summary = ingest(["big.jsonl"], tmp_path / name, options, config=config, quiet=True)
        manifest = load_manifest(tmp_path / name)
        ids = run_query(tmp_path / name, "SELECT id FROM docs ORDER BY id").column(0).to_pylist()
        reasons = run_query(
            tmp_path / name, "SELECT reason, count(*) AS n FROM quarantine GROUP BY 1 ORDER BY 1"
        ).to_pylist()
        got[name] = (
            [s["sha256"] for s in manifest["shards"]],
            [s["sha256"] for s in manifest["quarantine"]],
            ids,
            reasons,
            (summary["records_read"], summary["docs"], summary["quarantined"]),
        )
    assert got["one"] == got["split"] == got["split2"]
    reasons = {r["reason"] for r in got["one"][3]}
    assert {"json", "utf8", "empty_text", "too_large", "duplicate_id"} <= reasons
    # the last line (no newline after it) keeps its number, blank lines counted, in every range
    last = data.count(b"\n") + 1
    assert f"big.jsonl:{last}" in got["one"][2]
    assert len(got["one"][0]) > 3  # several shards, so their boundaries are compared too


def test_compressed_jsonl_is_one_unit(tmp_path):
    """A zstd / gzip stream cannot be entered in the middle: it stays one unit, whatever the size."""
    from assay.corpora.ingest import plan_units
    from assay.corpora.inputs import InputFile

    path = INGEST / "inaugural.jsonl.zst"
    units = plan_units([InputFile(str(path), "z")], IngestOptions(split_bytes=1024))
    assert len(units) == 1 and "byte_range" not in units[0]


def test_split_size_setting():
    from assay.corpora.ingest import parse_size

    assert [parse_size(s) for s in ("64MB", "64MiB", "1.5G", "4096", "0")] == [
        64 << 20,
        64 << 20,
        3 << 29,
        4096,
        0,
    ]
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")
    with pytest.raises(ValueError, match="--split-bytes"):
        IngestOptions(split_bytes=-1)
