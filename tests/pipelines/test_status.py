"""`assay status`: what is done, incomplete or stale — and an error on a folder that is not a root."""

from __future__ import annotations

import json

from click.testing import CliRunner

from assay.corpora.ingest import IngestOptions
from assay.corpora.manifest import load_manifest, save_manifest
from assay.pipelines.annotate import annotate
from assay.pipelines.cli import main
from assay.pipelines.ingest import ingest


def test_status_counts_shards_and_flags_stale_and_incomplete_sets(tmp_path):
    src = tmp_path / "in.jsonl"
    texts = ["Ada Lovelace worked with Charles Babbage in London.", "Paris is the capital of France."]
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts * 2))
    root = tmp_path / "root"
    ingest([str(src)], root, IngestOptions(shard_rows=1), quiet=True)  # 4 shards
    annotate(root, ["stats", "triples"], quiet=True)
    out = CliRunner().invoke(main, ["status", "--root", str(root)]).output
    assert "scorer stats v1: 4/4 shards\n" in out
    assert "extractor triples v" in out and ": 4/4 shards\n" in out.split("extractor triples")[1]

    m = load_manifest(root)
    m["annotations"]["stats"]["version"] = "0"  # written by an older Assay
    del m["annotations"]["triples"]["shards"]["entities/part-00001.parquet"]
    save_manifest(root, m)
    out = CliRunner().invoke(main, ["status", "--root", str(root)]).output
    assert "stats v0: 4/4 shards  (stale: this Assay writes v1" in out
    triples = out.split("extractor triples")[1].splitlines()[0]
    assert "3/4 shards  (incomplete: run `assay annotate --scorer triples`)" in triples
