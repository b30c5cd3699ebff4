"""Dedup planned by annotate: planted near-duplicates in real text are found (precision and recall
per kind of copy), the first of a cluster is its smallest id whatever the sharding, and a failed
stage resumes where it stopped."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil

import pyarrow.parquet as pq
import pytest
from conftest import FIXTURES, REPO

from assay.corpora.catalog import run_query
from assay.corpora.ingest import IngestOptions
from assay.corpora.manifest import load_manifest
from assay.pipelines.annotate import annotate
from assay.pipelines.executor import WorkUnitsFailed
from assay.pipelines.ingest import ingest


def _planted():
    spec = importlib.util.spec_from_file_location("planted", FIXTURES / "dedup" / "planted.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


planted = _planted()


def speeches() -> list[tuple[str, str]]:
    docs = []
    for name in ("inaugural", "state_union"):
        with gzip.open(REPO / "sample" / "speeches" / f"{name}.jsonl.gz", "rt") as f:
            docs += [(r["id"], r["text"]) for r in map(json.loads, f)]
    return docs


def make_root(tmp_path, records, shard_rows: int, name: str = "root"):
    src = tmp_path / f"{name}.jsonl"
    src.write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in records))
    root = tmp_path / name
    ingest([str(src)], root, IngestOptions(shard_rows=shard_rows), quiet=True)
    return root


ROWS = "SELECT id, dup_cluster, dup_cluster_size, dup_is_first, dup_exact_cluster, dup_exact_first FROM annotations"


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dedup")
    records = planted.plant(speeches()[::5], 20, seed=3)  # 103 originals, 20 x 6 copies
    root = make_root(tmp, records, shard_rows=80)
    summary = annotate(root, ["minhash", "exact_dup"], quiet=True)
    return records, root, summary, {r["id"]: r for r in run_query(root, ROWS).to_pylist()}


def test_planted_near_duplicates_precision_and_recall(planted_run):
    records, root, summary, rows = planted_run
    fuzzy = planted.scores(records, {i: r["dup_cluster"] for i, r in rows.items()})
    # 5-word shingles, 14 bands x 8 rows: Jaccard ~0.9 (1 % edits) is caught, ~0.6 (5 %) at
    # times, ~0.2 (20 %) never (P = 1-(1-J^8)^14); reordering and boilerplate keep most shingles
    assert fuzzy["edit1"]["recall"] >= 0.9 and fuzzy["exact"]["recall"] == 1.0
    assert fuzzy["reorder"]["recall"] >= 0.8 and fuzzy["boilerplate"]["recall"] >= 0.8
    assert 0.05 <= fuzzy["edit5"]["recall"] <= 0.8
    assert fuzzy["edit20"]["recall"] <= 0.1
    assert fuzzy["all"]["precision"] >= 0.97
    exact = planted.scores(records, {i: r["dup_exact_cluster"] for i, r in rows.items()})
    assert exact["exact"]["recall"] == 1.0 and exact["exact"]["precision"] >= 0.9
    assert max(exact[k]["recall"] for k in ("edit1", "edit5", "reorder", "boilerplate")) == 0.0
    stats = summary["scorers"]["minhash"]
    assert stats["docs"] == len(records) and set(stats["stages"]) == {
        "signatures",
        "clusters",
        "annotate",
    }
    entry = load_manifest(root)["annotations"]["minhash"]
    assert len(entry["shards"]) == len(load_manifest(root)["shards"]) >= 3


def test_one_first_per_cluster_the_smallest_id(planted_run):
    _, _, _, rows = planted_run
    for cluster, first, size in (
        ("dup_cluster", "dup_is_first", "dup_cluster_size"),
        ("dup_exact_cluster", "dup_exact_first", None),
    ):
        members: dict[str, list[str]] = {}
        for r in rows.values():
            members.setdefault(r[cluster], []).append(r["id"])
        for key, ids in members.items():
            firsts = [i for i in ids if rows[i][first]]
            assert firsts == [min(ids)], (cluster, key)
            if size:
                assert key == min(ids) and {rows[i][size] for i in ids} == {len(ids)}


def test_same_clusters_whatever_the_sharding(planted_run, tmp_path):
    records, _, _, rows = planted_run
    # other shard boundaries and another document order: the same annotations per id
    root = make_root(tmp_path, list(reversed(records)), shard_rows=50, name="other")
    annotate(root, ["minhash", "exact_dup"], quiet=True)
    again = {r["id"]: r for r in run_query(root, ROWS).to_pylist()}
    assert again == rows


def test_failed_stage_resumes_and_new_shards_make_it_stale(tmp_path):
    records = planted.plant(speeches()[:40], 8, seed=1)
    root = make_root(tmp_path, records, shard_rows=40)
    parts = sorted(p.name for p in (root / "docs").glob("part-*.parquet"))
    blocker = root / "annotations" / "minhash" / parts[1]
    blocker.mkdir(parents=True)  # a folder where the annotation shard goes: that unit fails
    (blocker / "x").write_text("")
    with pytest.raises(WorkUnitsFailed, match="minhash 3/3 annotate"):
        annotate(root, ["minhash"], quiet=True)
    done = root / "annotations" / "minhash" / parts[0]
    mtime = done.stat().st_mtime_ns
    shutil.rmtree(blocker)
    resumed = annotate(root, ["minhash"], quiet=True)["scorers"]["minhash"]["stages"]
    # only the annotation shards that were missing are redone (the executor stops at the failed one)
    assert {k: v["units_run"] for k, v in resumed.items()} == {
        "signatures": 0,
        "clusters": 0,
        "annotate": len(parts) - 1,
    }
    assert done.stat().st_mtime_ns == mtime
    assert not any((root / ".assay" / "work").iterdir())  # the work folder goes once done
    first = {
        r["id"]: r["dup_cluster"]
        for r in run_query(root, "SELECT id, dup_cluster FROM annotations").to_pylist()
    }
    assert planted.scores(records, first)["edit1"]["recall"] == 1.0
    # a copy of an existing document arrives in a new shard: the clusters are recomputed
    extra = tmp_path / "extra.jsonl"
    original = next(r for r in records if r["kind"] == "original")
    extra.write_text(json.dumps({"id": "zz-late-copy", "text": original["text"]}) + "\n")
    ingest([str(extra)], root, IngestOptions(shard_rows=40), append=True, quiet=True)
    again = annotate(root, ["minhash"], quiet=True)
    assert again["stale_recomputed"] == ["minhash"]
    rows = {
        r["id"]: r
        for r in run_query(root, "SELECT id, dup_cluster, dup_is_first FROM annotations").to_pylist()
    }
    assert rows["zz-late-copy"]["dup_cluster"] == rows[original["id"]]["dup_cluster"]
    assert not rows["zz-late-copy"]["dup_is_first"]
    n_docs = sum(
        pq.ParquetFile(p).metadata.num_rows for p in (root / "annotations" / "minhash").glob("*.parquet")
    )
    assert n_docs == len(records) + 1 and not os.listdir(root / ".assay" / "work")
