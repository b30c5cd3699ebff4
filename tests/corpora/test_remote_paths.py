"""Writing into URL roots without a server: fsspec's in-process `memory://` filesystem stands in
for object storage (a real filesystem with no rename, not a mock). The full commands against a
real S3 server are in tests/integration/test_s3.py."""

from __future__ import annotations

import json
import re

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FIXTURES

from assay.corpora.mixture import (
    list_mixtures,
    load_mixture,
    mixture_batches,
    mixture_path,
    upload_mixture,
)
from assay.corpora.shards import sha256_file, sha256_url, write_table_atomic, write_table_url
from assay.corpora.storage import PublishConflict, begin_mirror, publish_mirror, sync_mirror
from assay.pipelines.annotate import output_paths
from assay.scorers.registry import make_scorer


@pytest.fixture
def mem(tmp_path, monkeypatch):
    monkeypatch.setenv("ASSAY_CACHE", str(tmp_path / "cache"))
    fs = fsspec.filesystem("memory")
    base = f"/t{tmp_path.name}"
    yield fs, base
    if fs.exists(base):
        fs.rm(base, recursive=True)


def test_a_table_written_to_a_url_has_the_local_bytes(mem, tmp_path):
    fs, base = mem
    table = pa.table({"id": ["a", "b", "c"], "x": [1.0, 2.5, None]})
    entry = write_table_url(table, f"memory://{base}/annotations/s/part-00000.parquet")
    local = write_table_atomic(table, tmp_path / "part-00000.parquet")
    assert (
        fs.cat_file(f"{base}/annotations/s/part-00000.parquet")
        == (tmp_path / "part-00000.parquet").read_bytes()
    )
    assert entry == local
    assert sha256_url(f"memory://{base}/annotations/s/part-00000.parquet") == sha256_file(
        tmp_path / "part-00000.parquet"
    )


def test_paths_under_a_url_root_stay_urls():
    scorer = make_scorer("stats")
    got = output_paths("s3://bucket/corpus/", scorer, "part-00003.parquet")
    assert got == {"stats": "s3://bucket/corpus/annotations/stats/part-00003.parquet"}
    assert mixture_path("s3://bucket/corpus", "m") == "s3://bucket/corpus/mixtures/m"
    local = output_paths(FIXTURES, scorer, "part-00003.parquet")["stats"]
    assert local == FIXTURES / "annotations" / "stats" / "part-00003.parquet"  # a Path, as before


def _local_root(tmp_path):
    """A tiny local root with one docs shard, one annotation set and one published mixture."""
    root = tmp_path / "root"
    docs = pa.table({"id": ["d1", "d2"], "text": ["one", "two"]})
    d = write_table_atomic(docs, root / "docs" / "part-00000.parquet")
    a = write_table_atomic(
        pa.table({"id": ["d1", "d2"], "words": [1, 1]}), root / "annotations/stats/part-00000.parquet"
    )
    manifest = {
        "format": "assay-corpus/1",
        "shards": [{"name": "docs/part-00000.parquet", **d}],
        "annotations": {"stats": {"kind": "scorer", "version": "1", "shards": {"part-00000.parquet": a}}},
        "inputs": [],
        "quarantine": [],
        "runs": [],
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    mix = root / "mixtures" / "m"
    write_table_atomic(docs, mix / "part-00000.parquet")
    write_table_atomic(docs.slice(1), mix / "part-00001.parquet")
    shards = [{"name": "part-00000.parquet", "rows": 2}, {"name": "part-00001.parquet", "rows": 1}]
    (mix / "manifest.json").write_text(json.dumps({"format": "assay-mixture/1", "shards": shards}))
    return root


def test_publish_then_read_a_mixture_on_a_url_root(mem, tmp_path):
    fs, base = mem
    root = _local_root(tmp_path)
    url = f"memory://{base}"
    assert list_mixtures(url) == []
    # shards uploaded but no manifest yet: not a mixture (the manifest is the commit)
    fs.put_file(str(root / "mixtures/m/part-00000.parquet"), f"{base}/mixtures/m/part-00000.parquet")
    assert list_mixtures(url) == []
    with pytest.raises(ValueError, match="no mixture 'm'"):
        load_mixture(url, "m")
    # a first upload keeps the local names
    fs.rm(f"{base}/mixtures", recursive=True)
    upload_mixture(root / "mixtures" / "m", url, "m")
    assert list_mixtures(url) == ["m"]
    assert sorted(p.rsplit("/", 1)[1] for p in fs.find(f"{base}/mixtures/m")) == [
        "manifest.json",
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    rows = [r for b in mixture_batches(url, "m", ["id"]) for r in b.column("id").to_pylist()]
    assert rows == ["d1", "d2", "d2"]
    # a replacement goes under new names, so the old manifest's shards are intact until the
    # commit; after it the old files (and a stray one) are removed
    fs.pipe_file(f"{base}/mixtures/m/part-00009.parquet", b"stray")
    committed = upload_mixture(root / "mixtures" / "m", url, "m")
    names = sorted(p.rsplit("/", 1)[1] for p in fs.find(f"{base}/mixtures/m"))
    assert names[0] == "manifest.json" and len(names) == 3
    assert all(re.fullmatch(r"part-0000[01]\.[0-9a-f]{8}\.parquet", n) for n in names[1:])
    assert (
        [s["name"] for s in load_mixture(url, "m")["shards"]]
        == names[1:]
        == [s["name"] for s in committed["shards"]]
    )
    rows = [r for b in mixture_batches(url, "m", ["id"]) for r in b.column("id").to_pylist()]
    assert rows == ["d1", "d2", "d2"]


def test_the_mirror_holds_exactly_what_the_manifest_commits(mem, tmp_path):
    fs, base = mem
    root = _local_root(tmp_path)
    url = f"memory://{base}"
    for rel in ("docs/part-00000.parquet", "annotations/stats/part-00000.parquet", "manifest.json"):
        fs.put_file(str(root / rel), f"{base}/{rel}")
    fs.pipe_file(f"{base}/docs/part-00001.parquet", b"uncommitted")  # a writer died before the commit
    mirror = sync_mirror(url)
    files = sorted(
        p.relative_to(mirror).as_posix() for p in mirror.rglob("*") if p.is_file() and ".assay" not in p.parts
    )
    assert files == ["annotations/stats/part-00000.parquet", "docs/part-00000.parquet", "manifest.json"]
    assert pq.read_table(mirror / "docs/part-00000.parquet").column("id").to_pylist() == ["d1", "d2"]
    # a file the manifest no longer names is dropped from the copy on the next sync
    (mirror / "docs" / "part-00007.parquet").write_bytes(b"gone")
    assert not (sync_mirror(url) / "docs" / "part-00007.parquet").exists()
    # a copy changed behind the mirror's back is fetched again (its size and mtime no longer match)
    good = (mirror / "docs/part-00000.parquet").read_bytes()
    (mirror / "docs/part-00000.parquet").write_bytes(b"x" * len(good))
    assert (sync_mirror(url) / "docs/part-00000.parquet").read_bytes() == good


def test_a_mirror_run_resumes_publishes_merged_and_never_overwrites(mem, tmp_path):
    """What `assay ingest` into a URL root relies on: a killed run's mirror (its hidden staging)
    is kept while the root is unchanged and dropped when it changed; publishing uploads only this
    run's files and commits a manifest that keeps what another writer committed meanwhile; a
    file another writer committed under one of this run's names is a conflict, not overwritten."""
    from assay.corpora.manifest import load_manifest, save_manifest

    fs, base = mem
    root = _local_root(tmp_path)
    url = f"memory://{base}"
    for rel in ("docs/part-00000.parquet", "annotations/stats/part-00000.parquet", "manifest.json"):
        fs.put_file(str(root / rel), f"{base}/{rel}")
    mirror, base_bytes = begin_mirror(url, ("docs",))
    assert base_bytes == fs.cat_file(f"{base}/manifest.json")
    assert not (mirror / "annotations").exists()  # only the parts asked for
    staged = mirror / "docs" / ".staging" / "run1" / "s00000.parquet"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(b"half a run")
    # killed; the root is unchanged: the next call resumes on the same mirror (and fetches the
    # parts it needs that the killed one did not)
    mirror, again = begin_mirror(url, ("docs", "annotations"))
    assert again == base_bytes and staged.read_bytes() == b"half a run"
    assert (mirror / "annotations/stats/part-00000.parquet").is_file()
    # the run publishes a new shard; meanwhile another writer appended a run record
    new = write_table_atomic(pa.table({"id": ["d3"], "text": ["three"]}), mirror / "docs/part-00001.parquet")
    m = load_manifest(mirror)
    m["shards"].append({"name": "docs/part-00001.parquet", **new})
    m["runs"].append({"stage": "ingest"})
    save_manifest(mirror, m)
    theirs = load_manifest(url)
    theirs["runs"].append({"stage": "theirs"})
    save_manifest(url, theirs)
    before = fs.info(f"{base}/docs/part-00000.parquet")["created"]
    out = publish_mirror(mirror, url, base_bytes)
    assert [s["name"] for s in out["shards"]] == ["docs/part-00000.parquet", "docs/part-00001.parquet"]
    assert [r["stage"] for r in load_manifest(url)["runs"]] == ["theirs", "ingest"]
    assert fs.cat_file(f"{base}/docs/part-00001.parquet") == (mirror / "docs/part-00001.parquet").read_bytes()
    assert fs.info(f"{base}/docs/part-00000.parquet")["created"] == before  # not uploaded again
    assert not fs.exists(f"{base}/docs/.staging")
    # the root changed since: a new run starts from a fresh sync, the old staging is gone
    mirror, base_bytes = begin_mirror(url, ("docs",))
    assert not staged.exists() and base_bytes == fs.cat_file(f"{base}/manifest.json")
    # two writers both add docs/part-00002: the second to publish must not replace the first's
    mine = write_table_atomic(pa.table({"id": ["d4"], "text": ["mine"]}), mirror / "docs/part-00002.parquet")
    m = load_manifest(mirror)
    m["shards"].append({"name": "docs/part-00002.parquet", **mine})
    save_manifest(mirror, m)
    other = write_table_url(
        pa.table({"id": ["d5"], "text": ["theirs"]}), f"memory://{base}/docs/part-00002.parquet"
    )
    theirs = load_manifest(url)
    theirs["shards"].append({"name": "docs/part-00002.parquet", **other})
    save_manifest(url, theirs)
    committed = fs.cat_file(f"{base}/manifest.json")
    with pytest.raises(PublishConflict, match="another writer committed docs/part-00002.parquet"):
        publish_mirror(mirror, url, base_bytes)
    assert fs.cat_file(f"{base}/manifest.json") == committed
    assert pq.read_table(fs.open(f"{base}/docs/part-00002.parquet")).column("id").to_pylist() == ["d5"]
