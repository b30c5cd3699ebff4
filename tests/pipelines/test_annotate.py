"""annotate: stats values, version bumps mark annotations stale, finished shards are skipped."""

from __future__ import annotations

import json

from assay.corpora.catalog import run_query
from assay.corpora.manifest import load_manifest
from assay.pipelines.annotate import annotate
from assay.pipelines.ingest import ingest
from assay.scorers.stats import StatsScorer


def test_stats_values(tmp_path):
    src = tmp_path / "in.jsonl"
    texts = ["one two  three\nfour", "héllo wörld\n", "x"]
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    root = tmp_path / "root"
    ingest([str(src)], root, quiet=True)
    annotate(root, ["stats"], quiet=True)
    rows = run_query(
        root, "SELECT chars, bytes, words, lines, tokens_est FROM annotations ORDER BY id"
    ).to_pylist()
    assert rows[0] == {"chars": 19, "bytes": 19, "words": 4, "lines": 2, "tokens_est": 5}
    assert rows[1] == {"chars": 12, "bytes": 14, "words": 2, "lines": 1, "tokens_est": 4}
    assert rows[2] == {"chars": 1, "bytes": 1, "words": 1, "lines": 1, "tokens_est": 1}


def test_version_bump_recomputes_and_rerun_skips(tmp_path, monkeypatch):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": f"doc {i} " * (i + 1)}) + "\n" for i in range(30)))
    root = tmp_path / "root"
    from assay.corpora.ingest import IngestOptions

    ingest([str(src)], root, IngestOptions(shard_rows=10), quiet=True)
    first = annotate(root, ["stats"], quiet=True)
    assert first["stale_recomputed"] == [] and first["docs"] == 30
    files = sorted((root / "annotations" / "stats").glob("part-*.parquet"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    again = annotate(root, ["stats"], quiet=True)
    assert [f.stat().st_mtime_ns for f in files] == mtimes  # nothing recomputed
    assert again["scorers"]["stats"]["seconds"] == 0

    monkeypatch.setattr(StatsScorer, "version", "2")
    bumped = annotate(root, ["stats"], quiet=True)
    assert bumped["stale_recomputed"] == ["stats"]
    entry = load_manifest(root)["annotations"]["stats"]
    assert entry["version"] == "2" and len(entry["shards"]) == 3
    assert run_query(root, "SELECT count(*) FROM annotations WHERE words IS NULL").column(0)[0].as_py() == 0
