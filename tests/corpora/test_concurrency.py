"""Concurrent writers and readers on one root: no lost manifest entry, no failed catalog read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import FIXTURES, REPO

from assay.corpora.catalog import refresh_catalog, run_query
from assay.corpora.ingest import IngestOptions
from assay.corpora.manifest import load_manifest, merge3, save_manifest, update_manifest
from assay.pipelines.annotate import annotate
from assay.pipelines.ingest import ingest

# One writer: N read-modify-writes of the manifest, each adding an annotation set and a run.
WRITER = """
import sys, time
from pathlib import Path
from assay.corpora.manifest import load_manifest, save_manifest, update_manifest
root, tag, n, mode = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
while not (root / "go").exists():
    time.sleep(0.001)
for i in range(n):
    def change(m, i=i):
        m["annotations"][f"{tag}{i}"] = {"spec": tag, "version": "1", "shards": {}}
        m["runs"].append({"stage": tag, "run": i})
    if mode == "update":
        update_manifest(root, change)
    else:  # the pattern every pipeline uses: load, change, save
        m = load_manifest(root)
        change(m)
        save_manifest(root, m)
"""


@pytest.mark.parametrize("mode", ["save", "update"])
def test_two_processes_writing_the_manifest_lose_nothing(tmp_path, mode):
    root = tmp_path / "root"
    root.mkdir()
    save_manifest(root, load_manifest(root))
    n = 60
    procs = [
        subprocess.Popen([sys.executable, "-P", "-c", WRITER, str(root), tag, str(n), mode], cwd=REPO)
        for tag in ("a", "b")
    ]
    time.sleep(0.5)  # both interpreters up and waiting
    (root / "go").touch()
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    m = json.loads((root / "manifest.json").read_text())
    assert set(m["annotations"]) == {f"{t}{i}" for t in "ab" for i in range(n)}
    assert sorted((r["stage"], r["run"]) for r in m["runs"]) == [(t, i) for t in "ab" for i in range(n)]
    for t in "ab":  # each writer's runs keep their order
        assert [r["run"] for r in m["runs"] if r["stage"] == t] == list(range(n))


def test_save_merges_what_another_writer_saved_in_between(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    save_manifest(root, load_manifest(root) | {"shards": [{"name": "docs/part-00000.parquet", "rows": 1}]})
    mine, theirs = load_manifest(root), load_manifest(root)
    theirs["annotations"]["b"] = {"version": "1", "shards": {"p0": 1}}
    theirs["runs"].append({"stage": "b"})
    save_manifest(root, theirs)
    mine["annotations"]["a"] = {"version": "1", "shards": {}}
    mine["runs"].append({"stage": "a"})
    out = save_manifest(root, mine)
    assert set(out["annotations"]) == {"a", "b"} and [r["stage"] for r in out["runs"]] == ["b", "a"]
    # a later change to the same object applies on top of the file, keeping b's entries
    mine["annotations"]["a"]["shards"]["p0"] = 2
    del mine["annotations"]["a"]["version"]
    out = save_manifest(root, mine)
    assert out["annotations"]["a"] == {"shards": {"p0": 2}} and "b" in out["annotations"]
    assert update_manifest(root, lambda m: m["runs"].clear())["runs"] == []
    assert load_manifest(root)["shards"] == [{"name": "docs/part-00000.parquet", "rows": 1}]


def test_merge3_rules():
    base = {"k": 1, "l": [1], "d": {"x": 1, "y": 2}}
    ours = {"k": 2, "l": [1, 2], "d": {"x": 1}}
    theirs = {"k": 1, "l": [1, 3], "d": {"x": 5, "y": 2}, "new": 0}
    assert merge3(base, ours, theirs) == {"k": 2, "l": [1, 3, 2], "d": {"x": 5}, "new": 0}
    assert merge3([1], [9], [1, 2]) == [9]  # not an append on our side: ours wins


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("concurrency") / "root"
    ingest(
        [str(FIXTURES / "ingest" / "inaugural_noid.jsonl")], root, IngestOptions(shard_rows=10), quiet=True
    )
    annotate(root, ["stats"], quiet=True)
    return root


# A reader that keeps querying for a while: `stock` holds one read-only DuckDB connection open the
# whole time and opens fresh ones too (a `duckdb -readonly catalog.duckdb` user); `assay` goes
# through run_query, which may itself refresh a stale catalog.
READER = """
import sys, time, json
import duckdb
from assay.corpora.catalog import run_query
path, kind, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
root = path.rsplit("/", 1)[0]
ok, errors = 0, []
held = duckdb.connect(path, read_only=True) if kind == "stock" else None
end = time.time() + seconds
while time.time() < end or ok + len(errors) < 3:  # at least 3 queries on a slow machine
    try:
        if kind == "stock":
            con = duckdb.connect(path, read_only=True)
            n = con.execute("SELECT count(*) FROM annotations WHERE words > 0").fetchone()[0]
            con.close()
            assert held.execute("SELECT count(*) FROM docs").fetchone()[0] == 40
        else:
            n = run_query(root, "SELECT count(*) FROM annotations WHERE words > 0").column(0)[0].as_py()
        assert n == 40, n
        ok += 1
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}".splitlines()[0])
print(json.dumps({"ok": ok, "errors": errors[:5], "n_errors": len(errors)}))
"""


def test_catalog_refresh_never_breaks_readers(root):
    path = root / "catalog.duckdb"
    run_query(root, "SELECT 1")  # current
    readers = [
        subprocess.Popen(
            [sys.executable, "-P", "-c", READER, str(path), kind, "2"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ, OMP_NUM_THREADS="1"),
        )
        for kind in ("stock", "assay")
    ]
    refreshes = 0
    while refreshes < 3 or any(p.poll() is None for p in readers):  # refresh while they read
        m = load_manifest(root)
        m["runs"].append({"stage": "noop", "run": refreshes})  # the catalog is stale for assay readers
        save_manifest(root, m)
        refresh_catalog(root)
        refreshes += 1
    results = [json.loads(p.communicate(timeout=60)[0]) for p in readers]
    assert refreshes >= 3
    for kind, res in zip(("stock", "assay"), results):
        assert res["n_errors"] == 0, (kind, res)
        assert res["ok"] >= 3, (kind, res)
    assert not [p.name for p in root.iterdir() if p.name.startswith(".catalog")]  # no temporary left


@pytest.mark.slow
def test_two_annotate_runs_at_once_keep_both_sets(tmp_path):
    """Two `assay annotate` processes with different scorers on one root, started together."""
    root = tmp_path / "root"
    ingest([str(FIXTURES / "ingest" / "inaugural_noid.jsonl")], root, IngestOptions(shard_rows=5), quiet=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-P", "-m", "assay.pipelines.cli", "annotate", "--root", str(root), "--scorer"]
    procs = [
        subprocess.Popen(
            [*cmd, s], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for s in ("stats", "heuristics")
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    m = load_manifest(root)
    assert {"stats", "heuristics"} <= set(m["annotations"])
    for name in ("stats", "heuristics"):
        assert len(m["annotations"][name]["shards"]) == 8, name
    assert sum(r["stage"] == "annotate" for r in m["runs"]) == 2
    row = run_query(root, "SELECT count(words) AS w, count(*) AS n FROM annotations").to_pylist()[0]
    assert row == {"w": 40, "n": 40}
