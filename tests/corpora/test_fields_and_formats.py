"""Nested field paths (dolma's metadata.url), .jsonl.bz2, plain .txt inputs and empty inputs."""

from __future__ import annotations

import bz2
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO

from assay.corpora.catalog import run_query
from assay.corpora.ingest import IngestOptions, plan_units
from assay.corpora.inputs import expand_inputs
from assay.corpora.manifest import load_manifest
from assay.pipelines.ingest import ingest

# real dolma records: {"id", "text", "source", "added", "created", "metadata": {"url", "title", ...}}
DOLMA = [
    json.loads(line)
    for name in ("dolma_cc_en_head-0091.jsonl.gz", "dolma_cc_en_head-0174.jsonl.gz")
    for line in gzip.open(REPO / "sample" / "web" / name)
]
SPEECHES = gzip.decompress((REPO / "sample" / "speeches" / "inaugural.jsonl.gz").read_bytes())


def _jsonl(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records)
    )
    return path


def _balanced(summary: dict) -> bool:
    return all(i["records_read"] == i["docs"] + i["quarantined"] for i in summary["inputs"])


def _docs(root: Path) -> list[dict]:
    return run_query(root, "SELECT * FROM docs ORDER BY source_file, source_offset").to_pylist()


def _quarantine(root: Path) -> list[tuple]:
    rows = run_query(root, "SELECT source_file, line, reason FROM quarantine ORDER BY source_file, line")
    return [(Path(r["source_file"]).name, r["line"], r["reason"]) for r in rows.to_pylist()]


def _cli(*args: str):
    from click.testing import CliRunner

    from assay.pipelines.cli import main

    return CliRunner().invoke(main, ["ingest", *args])


# ---------------------------------------------------------------- nested fields


def _without_url(record: dict) -> dict:
    return {**record, "metadata": {k: v for k, v in record["metadata"].items() if k != "url"}}


def test_dolma_metadata_url_from_jsonl_fast_and_slow_path(tmp_path):
    no_url = _without_url(DOLMA[1])
    fast = _jsonl(tmp_path / "fast.jsonl", [DOLMA[0], no_url, {"id": "x", "metadata": {}}, *DOLMA[2:]])
    # a broken line sends its block through the per-record path, which must agree
    slow = _jsonl(tmp_path / "slow.jsonl", [DOLMA[0], no_url, b'{"broken', *DOLMA[2:]])
    options = IngestOptions(url_field="metadata.url")
    results = {}
    for path, reason in ((fast, "missing_text"), (slow, "json")):
        root = tmp_path / path.stem
        summary = ingest([str(path)], root, options, quiet=True)
        assert _balanced(summary) and _quarantine(root) == [(path.name, 3, reason)]
        results[path.stem] = [(d["id"], d["text"], d["source"], d["url"], d["meta"]) for d in _docs(root)]
    assert results["fast"] == results["slow"] and len(results["fast"]) == len(DOLMA)
    docs = results["fast"]
    assert [d[3] for d in docs] == [None if i == 1 else r["metadata"]["url"] for i, r in enumerate(DOLMA)]
    assert docs[0][0] == DOLMA[0]["id"] and docs[0][2] == "common-crawl"
    meta = json.loads(docs[0][4])
    # meta keeps every other field; the used nested field leaves its object, the rest stays
    assert meta["metadata"] == _without_url(DOLMA[0])["metadata"] and meta["added"] == DOLMA[0]["added"]
    assert set(meta) == {"added", "created", "metadata"}


def test_nested_text_field_and_its_quarantine(tmp_path):
    speeches = [json.loads(line) for line in SPEECHES.splitlines()[:3]]
    records = [
        {"id": f"s{i}", "doc": {"body": s["text"], "year": s["title"][:4]}} for i, s in enumerate(speeches)
    ]
    records += [
        {"id": "no-doc", "title": "no doc object"},  # missing_text
        {"id": "no-body", "doc": {"year": "1800"}},  # missing_text
        {"id": "number", "doc": {"body": 42}},  # text_not_string (the block takes the slow path)
        {"id": "blank", "doc": {"body": "  \n"}},  # empty_text
    ]
    path = _jsonl(tmp_path / "nested.jsonl", records)
    root = tmp_path / "root"
    summary = ingest([str(path)], root, IngestOptions(text_field="doc.body"), quiet=True)
    assert (summary["records_read"], summary["docs"], summary["quarantined"]) == (7, 3, 4)
    assert [r[2] for r in _quarantine(root)] == [
        "missing_text",
        "missing_text",
        "text_not_string",
        "empty_text",
    ]
    docs = _docs(root)
    assert [d["text"] for d in docs] == [s["text"] for s in speeches]
    # the text is not stored twice: it leaves meta's nested object
    assert json.loads(docs[0]["meta"]) == {"doc": {"year": speeches[0]["title"][:4]}}
    # without the broken record the same file takes the vectorised path, with the same documents
    fast = _jsonl(tmp_path / "fast" / "nested.jsonl", [r for r in records if r["id"] != "number"])
    ingest([str(fast)], tmp_path / "fast_root", IngestOptions(text_field="doc.body"), quiet=True)
    assert [(d["id"], d["text"], d["meta"]) for d in _docs(tmp_path / "fast_root")] == [
        (d["id"], d["text"], d["meta"]) for d in docs
    ]


def test_struct_columns_in_parquet_and_arrow(tmp_path):
    table = pa.Table.from_pylist(DOLMA)  # metadata becomes a struct column
    pq.write_table(table, tmp_path / "dolma.parquet")
    with pa.ipc.new_stream(tmp_path / "dolma.arrow", table.schema) as w:
        w.write_table(table, max_chunksize=7)
    root = tmp_path / "root"
    options = IngestOptions(url_field="metadata.url", source_field="metadata.source_domain")
    summary = ingest(
        [str(tmp_path / "dolma.parquet"), str(tmp_path / "dolma.arrow")], root, options, quiet=True
    )
    assert _balanced(summary) and summary["quarantined"] == len(DOLMA)  # the Arrow copies: duplicate ids
    docs = _docs(root)
    assert [d["url"] for d in docs] == [r["metadata"]["url"] for r in DOLMA]
    assert [d["source"] for d in docs] == [r["metadata"]["source_domain"] for r in DOLMA]
    meta = json.loads(docs[0]["meta"])
    assert "url" not in meta["metadata"] and "source_domain" not in meta["metadata"]
    assert meta["metadata"]["title"] == DOLMA[0]["metadata"]["title"] and meta["source"] == "common-crawl"
    # a nested text column, picked out of its struct
    nested = pa.table(
        {"id": ["a", "b", "c"], "doc": pa.array([{"body": "first text"}, None, {"body": "third"}])}
    )
    pq.write_table(nested, tmp_path / "nested.parquet")
    summary = ingest(
        [str(tmp_path / "nested.parquet")], tmp_path / "n", IngestOptions(text_field="doc.body"), quiet=True
    )
    assert (summary["docs"], summary["quarantined"]) == (2, 1)
    assert [d["text"] for d in _docs(tmp_path / "n")] == ["first text", "third"]
    assert _quarantine(tmp_path / "n") == [("nested.parquet", 1, "missing_text")]


def test_an_unknown_field_is_a_one_line_error(tmp_path):
    dolma = _jsonl(tmp_path / "in" / "dolma.jsonl", DOLMA)
    pq.write_table(pa.Table.from_pylist(DOLMA), tmp_path / "in" / "dolma.parquet")
    for args, needle in (
        (
            ["--url-field", "metadata.ulr"],
            "'metadata.ulr' (--url-field): no record of any input has this field",
        ),
        (["--text-field", "metadata.text"], "dolma.jsonl: no record has the text field 'metadata.text'"),
    ):
        res = _cli(str(dolma), "--root", str(tmp_path / "r"), *args)
        assert res.exit_code == 1 and "Traceback" not in res.output and res.output.count("\n") == 1, (
            res.output
        )
        assert needle in res.output
        assert (
            "the first record's top-level keys are: added, created, id, metadata, source, text" in res.output
        )
    with pytest.raises(
        ValueError,
        match=r"dolma\.parquet: no record has the text field 'body'.*keys are: added, created, id, metadata, source, text",
    ):
        ingest(
            [str(tmp_path / "in" / "dolma.parquet")],
            tmp_path / "r",
            IngestOptions(text_field="body"),
            quiet=True,
        )
    assert not (tmp_path / "r").exists()
    # a field that only a later record has is no mistake: the first record is quarantined
    late = _jsonl(tmp_path / "late.jsonl", [{"id": "a", "body": None}, {"id": "b", "body": "found later"}])
    late_url = _jsonl(
        tmp_path / "late_url.jsonl", [{"text": "one"}, {"text": "two", "meta": {"link": "http://x"}}]
    )
    summary = ingest([str(late)], tmp_path / "late", IngestOptions(text_field="body"), quiet=True)
    assert (summary["docs"], summary["quarantined"]) == (1, 1)
    summary = ingest([str(late_url)], tmp_path / "late_url", IngestOptions(url_field="meta.link"), quiet=True)
    assert [d["url"] for d in _docs(tmp_path / "late_url")] == [None, "http://x"]


# ---------------------------------------------------------------- .jsonl.bz2


def test_bz2_whole_concatenated_and_truncated(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "speeches.jsonl.bz2").write_bytes(bz2.compress(SPEECHES))
    cut_at = SPEECHES.rfind(b"\n", 0, len(SPEECHES) // 2) + 1
    # two streams back to back, as pbzip2 writes them
    (src / "multi.jsonl.bz2").write_bytes(bz2.compress(SPEECHES[:cut_at]) + bz2.compress(SPEECHES[cut_at:]))
    # 100 kB blocks, so that a cut keeps the blocks before it
    full = bz2.compress(SPEECHES, compresslevel=1)
    (src / "cut.jsonl.bz2").write_bytes(full[: len(full) * 3 // 4])
    whole_ids = [json.loads(line)["id"] for line in SPEECHES.splitlines()]
    for name in ("speeches.jsonl.bz2", "multi.jsonl.bz2"):
        summary = ingest([str(src / name)], tmp_path / name, quiet=True)
        assert (summary["docs"], summary["quarantined"]) == (len(whole_ids), 0)
        assert [d["id"] for d in _docs(tmp_path / name)] == whole_ids
    root = tmp_path / "cut"
    summary = ingest([str(src / "cut.jsonl.bz2")], root, quiet=True)
    assert _balanced(summary) and summary["quarantined"] == 1
    # every whole line before the break is kept: a prefix of the whole file's documents
    ids = [d["id"] for d in _docs(root)]
    assert 10 < len(ids) < len(whole_ids) and ids == whole_ids[: len(ids)]
    q = run_query(root, "SELECT line, reason, detail FROM quarantine").to_pylist()
    assert q == [{"line": len(ids) + 1, "reason": "truncated", "detail": "truncated bzip2 stream"}]


# ---------------------------------------------------------------- plain text


def _speech_texts(n: int) -> list[str]:
    return [json.loads(line)["text"] for line in SPEECHES.splitlines()[:n]]


def test_txt_one_document_per_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = Path("texts")
    (src / "sub").mkdir(parents=True)
    texts = _speech_texts(3)
    (src / "a.txt").write_text(texts[0])
    (src / "sub" / "b.txt").write_text(texts[1])
    (src / "c.txt.gz").write_bytes(gzip.compress(texts[2].encode()))
    (src / "empty.txt").write_bytes(b"")
    (src / "spaces.txt").write_text(" \n\t\n")
    (src / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    summary = ingest([str(src)], Path("root"), quiet=True)
    assert _balanced(summary) and (summary["docs"], summary["quarantined"]) == (3, 3)
    docs = {d["id"]: d for d in _docs(Path("root"))}
    assert list(docs) == ["texts/a.txt", "texts/c.txt.gz", "texts/sub/b.txt"]
    assert docs["texts/a.txt"]["text"] == texts[0] and docs["texts/sub/b.txt"]["source"] == "b"
    assert docs["texts/c.txt.gz"]["text"] == texts[2] and docs["texts/a.txt"]["meta"] == "{}"
    assert _quarantine(Path("root")) == [
        ("empty.txt", 0, "empty_text"),
        ("latin1.txt", 0, "utf8"),
        ("spaces.txt", 0, "empty_text"),
    ]
    detail = run_query(Path("root"), "SELECT detail FROM quarantine WHERE reason = 'utf8'").column(0)[0]
    assert detail.as_py() == "invalid UTF-8 at byte 3"
    # small files share one unit, so one shard: not one task and one shard per file
    assert len(load_manifest(Path("root"))["shards"]) == 1
    # with --id-prefix the anchor changes as for every derived id
    ingest([str(src / "a.txt")], Path("p"), IngestOptions(id_prefix="books"), quiet=True)
    assert [d["id"] for d in _docs(Path("p"))] == ["books/a.txt"]


def test_txt_one_document_per_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = [
        b"first line of text",
        b"",
        b"   ",
        b"second line\r",
        b"caf\xe9 latin-1",
        b"\xe3\x80\x80",
        b"last",
    ]
    Path("lines.txt").write_bytes(b"\n".join(lines))  # no newline after the last line
    big = "\n".join(_speech_texts(40)).encode() + b"\n"
    compressed = gzip.compress(big)
    Path("cut.txt.gz").write_bytes(compressed[: len(compressed) // 2])
    root = Path("root")
    summary = ingest(["lines.txt", "cut.txt.gz"], root, IngestOptions(txt_mode="line"), quiet=True)
    assert _balanced(summary)
    per = {i["key"]: i for i in summary["inputs"]}
    # blank lines are not records; a line of only an ideographic space is empty text
    assert (per["lines.txt"]["records_read"], per["lines.txt"]["docs"]) == (5, 3)
    docs = [d for d in _docs(root) if d["source_file"].endswith("lines.txt")]
    assert [(d["id"], d["text"]) for d in docs] == [
        ("lines.txt:1", "first line of text"),
        ("lines.txt:4", "second line"),
        ("lines.txt:7", "last"),
    ]
    q = _quarantine(root)
    assert [r for r in q if r[0] == "lines.txt"] == [("lines.txt", 5, "utf8"), ("lines.txt", 6, "empty_text")]
    # a cut stream keeps every whole line before the break
    cut = [r for r in q if r[0] == "cut.txt.gz"]
    assert [r[2] for r in cut] == ["truncated"]
    kept = [d["text"] for d in _docs(root) if d["source_file"].endswith("cut.txt.gz")]
    non_blank = [line for line in big.decode().split("\n") if line.strip()]
    assert 20 < len(kept) < len(non_blank) and kept == non_blank[: len(kept)]
    # a huge line is quarantined whole, not split
    Path("long.txt").write_bytes(b"short\n" + b"y" * 5000 + b"\n")
    summary = ingest(
        ["long.txt"], Path("long"), IngestOptions(txt_mode="line", max_record_bytes=2000), quiet=True
    )
    assert (summary["docs"], _quarantine(Path("long"))) == (1, [("long.txt", 2, "too_large")])


def test_a_thousand_small_txt_files_share_units(tmp_path):
    src = tmp_path / "many"
    src.mkdir()
    words = SPEECHES.decode().split()
    for i in range(1000):
        (src / f"doc{i:04d}.txt").write_text(" ".join(words[i * 20 : i * 20 + 20]))
    units = plan_units(expand_inputs([str(src)]).files, IngestOptions())
    assert len(units) == 1 and len(units[0]["files"]) == 1000
    summary = ingest([str(src)], tmp_path / "root", quiet=True)
    assert summary["docs"] == 1000 and len(summary["inputs"]) == 1000 and _balanced(summary)
    assert len(load_manifest(tmp_path / "root")["shards"]) == 1


# ---------------------------------------------------------------- empty inputs


def test_empty_inputs_are_counted_and_noted(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.jsonl", "b.jsonl.gz", "c.jsonl.zst", "d.jsonl.bz2", "e.parquet", "f.arrow", "g.txt"):
        (src / name).write_bytes(b"")
    (src / "blank.jsonl").write_bytes(b"\n  \n")
    (src / "nothing.jsonl.gz").write_bytes(gzip.compress(b""))
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), src / "norows.parquet")
    (src / "one.jsonl").write_text(json.dumps({"text": "the only document"}) + "\n")
    res = _cli(str(src), "--root", str(tmp_path / "root"), "--txt-mode", "line")
    assert res.exit_code == 0, res.output
    summary = load_manifest(tmp_path / "root")
    per = {Path(i["path"]).name: i for i in summary["inputs"]}
    assert len(per) == 11 and not summary["quarantine"]
    assert all(
        e["records_read"] == e["docs"] == e["quarantined"] == 0 for n, e in per.items() if n != "one.jsonl"
    )
    assert (
        per["a.jsonl"]["note"] == "empty file (0 bytes)"
        and per["e.parquet"]["note"] == "empty file (0 bytes)"
    )
    assert per["blank.jsonl"]["note"] == per["norows.parquet"]["note"] == "no records in this file"
    assert f"note: {src / 'a.jsonl'}: empty file (0 bytes)\n" in res.output
    assert res.output.count("note: ") == 10
    # each empty input has its row in the balance table
    assert "d.jsonl.bz2" in res.output and "nothing.jsonl.gz" in res.output
    # in file mode an empty .txt is a document candidate with no text
    summary = ingest([str(src / "g.txt")], tmp_path / "txt", quiet=True)
    assert (summary["records_read"], summary["quarantined"]) == (1, 1)


def test_bz2_warc_and_a_break_between_records(tmp_path):
    warc = gzip.decompress((REPO / "sample" / "web" / "dolma_sample-0000.warc.gz").read_bytes())
    (tmp_path / "w.warc.bz2").write_bytes(bz2.compress(warc))
    cut = bz2.compress(warc, compresslevel=1)
    (tmp_path / "cut.warc.bz2").write_bytes(cut[: len(cut) // 2])
    whole = ingest([str(tmp_path / "w.warc.bz2")], tmp_path / "whole", quiet=True)
    summary = ingest([str(tmp_path / "cut.warc.bz2")], tmp_path / "cut", quiet=True)
    assert whole["quarantined"] == 0 and _balanced(summary) and 0 < summary["docs"] < whole["docs"]
    ids = [d["id"] for d in _docs(tmp_path / "cut")]
    assert ids == [d["id"] for d in _docs(tmp_path / "whole")][: len(ids)]
    # the break falls between records here, where warcio alone would see a clean end of file
    assert [r[2] for r in _quarantine(tmp_path / "cut")] == ["truncated"]
