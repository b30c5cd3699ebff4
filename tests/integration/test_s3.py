"""Corpus roots on object storage: a real S3-compatible server (moto, 127.0.0.1) started here.

A root published to S3 (shards, annotation sets, manifest) is read through the manifest and the
catalog (`assay sql`, `assay status --check`), DuckDB reading the remote Parquet through the
registered fsspec filesystem; the manifest is written with one PUT under the lock, merging
concurrent changes. `assay annotate`, `assay select` and `assay export` write into an S3 root
and give the same bytes as on a local copy of it; `assay ingest` into an S3 root stages on a
local mirror and uploads the same shards a local ingest writes, the manifest last.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory):
    """moto in server mode on 127.0.0.1, and the environment that points fsspec/s3fs at it."""
    pytest.importorskip("s3fs")
    moto = Path(sys.executable).parent / "moto_server"
    if not moto.exists():
        pytest.skip("moto_server is not installed (pip install 'assay[s3]')")
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    proc = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("moto_server did not answer")
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": url,
        "ASSAY_CACHE": str(tmp_path_factory.mktemp("assay-cache")),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def s3_root(s3_env, tmp_path_factory):
    """A corpus ingested and annotated locally, then published to s3://assay-test/corpus the way
    a store without rename allows: every shard first, the manifest (the commit) last."""
    import fsspec

    from assay.corpora.ingest import IngestOptions
    from assay.pipelines.annotate import annotate
    from assay.pipelines.ingest import ingest

    local = tmp_path_factory.mktemp("s3src") / "root"
    ingest(
        [str(FIXTURES / "ingest" / "inaugural_noid.jsonl")], local, IngestOptions(shard_rows=10), quiet=True
    )
    annotate(local, ["stats"], quiet=True)
    fs = fsspec.filesystem("s3")
    fs.mkdir("assay-test")
    files = [p for p in local.rglob("*.parquet") if not p.name.startswith(".")]
    for p in files:
        fs.put_file(str(p), f"assay-test/corpus/{p.relative_to(local)}")
    fs.put_file(str(local / "manifest.json"), "assay-test/corpus/manifest.json")
    return {"url": "s3://assay-test/corpus", "local": local, "fs": fs}


def _cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-P", "-m", "assay.pipelines.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, OMP_NUM_THREADS="1", **env),
    )


def test_sql_on_an_s3_root_reads_remote_parquet(s3_root, s3_env):
    from assay.corpora.catalog import run_query

    query = "SELECT count(*) AS n, sum(words) AS w FROM annotations"
    expected = run_query(s3_root["local"], query).to_pylist()
    assert expected[0]["n"] == 40
    out = _cli(["sql", query, "--root", s3_root["url"], "--format", "json"], s3_env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == json.loads(json.dumps(expected, default=str))
    # the catalog is a local file for a remote root; the bucket holds no catalog
    assert not s3_root["fs"].exists("assay-test/corpus/catalog.duckdb")
    assert list(Path(s3_env["ASSAY_CACHE"]).rglob("catalog.duckdb"))


def test_a_shard_not_committed_to_the_manifest_is_never_read(s3_root, s3_env):
    from assay.corpora.catalog import run_query

    fs = s3_root["fs"]
    # a writer that uploaded a shard and died before committing the manifest
    fs.put_file(
        str(s3_root["local"] / "docs" / "part-00000.parquet"), "assay-test/corpus/docs/part-00099.parquet"
    )
    try:
        assert run_query(s3_root["url"], "SELECT count(*) FROM docs").column(0)[0].as_py() == 40
        out = _cli(["status", "--check", "--root", s3_root["url"]], s3_env)
        assert out.returncode == 0, out.stderr
        assert "1 file(s) not in the manifest" in out.stdout and "docs/part-00099.parquet" in out.stdout
    finally:
        fs.rm_file("assay-test/corpus/docs/part-00099.parquet")


def test_manifest_commit_on_s3_merges_and_refreshes_the_catalog(s3_root, s3_env):
    from assay.corpora.catalog import run_query
    from assay.corpora.manifest import load_manifest, save_manifest

    url = s3_root["url"]
    mine, theirs = load_manifest(url), load_manifest(url)
    theirs["runs"].append({"stage": "theirs"})
    save_manifest(url, theirs)
    mine["runs"].append({"stage": "mine"})
    save_manifest(url, mine)
    assert [r["stage"] for r in load_manifest(url)["runs"]][-2:] == ["theirs", "mine"]
    # dropping a shard from the manifest (a commit) changes what the catalog reads: no listing
    m = load_manifest(url)
    m["shards"] = m["shards"][:-1]
    save_manifest(url, m)
    try:
        assert run_query(url, "SELECT count(*) FROM docs").column(0)[0].as_py() == 30
    finally:
        s3_root["fs"].put_file(str(s3_root["local"] / "manifest.json"), "assay-test/corpus/manifest.json")
    assert run_query(url, "SELECT count(*) FROM docs").column(0)[0].as_py() == 40


# ---------------------------------------------------------------------------------------------
# Writing into an S3 root: annotate in place, select a mixture, export; each byte-identical to the
# same commands on a local copy of the same root.


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def s3_fresh(s3_env, tmp_path_factory):
    """A root ingested locally (not annotated), uploaded whole to s3://assay-write/corpus, and a
    local twin of it that the same commands run on."""
    import shutil

    import fsspec

    from assay.corpora.ingest import IngestOptions
    from assay.pipelines.ingest import ingest

    base = tmp_path_factory.mktemp("s3write")
    local = base / "root"
    ingest(
        [str(FIXTURES / "ingest" / "inaugural_noid.jsonl")], local, IngestOptions(shard_rows=10), quiet=True
    )
    twin = base / "twin"
    shutil.copytree(local, twin)
    fs = fsspec.filesystem("s3")
    fs.mkdir("assay-write")
    fs.put(str(local), "assay-write/corpus", recursive=True)
    return {"url": "s3://assay-write/corpus", "twin": twin, "fs": fs, "base": base}


def _remote_files(fs, prefix: str) -> dict[str, str]:
    fs.invalidate_cache()  # the commands ran in other processes
    return {p[len(prefix) + 1 :]: _sha(fs.cat_file(p)) for p in fs.find(prefix)}


def _local_files(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): _sha(p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


def test_annotate_an_s3_root_in_place_matches_local(s3_fresh, s3_env):
    from assay.corpora.catalog import run_query
    from assay.corpora.manifest import load_manifest
    from assay.pipelines.annotate import annotate

    fs, url, twin = s3_fresh["fs"], s3_fresh["url"], s3_fresh["twin"]
    out = _cli(["annotate", "--root", url, "--scorer", "stats"], s3_env)
    assert out.returncode == 0, out.stderr
    annotate(twin, ["stats"], quiet=True)
    remote = _remote_files(fs, "assay-write/corpus/annotations")
    assert len(remote) == 4 and remote == _local_files(twin / "annotations")
    # the manifest names the same set, shard by shard, with the same checksums
    got, want = load_manifest(url)["annotations"], load_manifest(twin)["annotations"]
    assert got == want
    assert load_manifest(url)["runs"][-1]["stage"] == "annotate"
    # nothing was written to a local folder named "s3:", and unit records went to the cache
    assert not (REPO / "s3:").exists() and not Path("s3:").exists()
    assert not fs.exists("assay-write/corpus/.assay/units")
    q = "SELECT count(*) AS n, sum(words) AS w FROM annotations"
    assert run_query(url, q).to_pylist() == run_query(twin, q).to_pylist()
    # rerun: complete, nothing rewritten
    before = {p: fs.info(p)["ETag"] for p in fs.find("assay-write/corpus/annotations")}
    out = _cli(["annotate", "--root", url, "--scorer", "stats"], s3_env)
    assert out.returncode == 0, out.stderr
    assert {p: fs.info(p)["ETag"] for p in fs.find("assay-write/corpus/annotations")} == before
    # a corpus-level scorer (dedup) runs its stages on a local mirror and uploads its set alone
    listing = set(fs.find("assay-write/corpus"))
    out = _cli(["annotate", "--root", url, "--scorer", "exact_dup"], s3_env)
    assert out.returncode == 0, out.stderr
    annotate(twin, ["exact_dup"], quiet=True)
    remote = _remote_files(fs, "assay-write/corpus/annotations/exact_dup")
    assert len(remote) == 4 and remote == _local_files(twin / "annotations" / "exact_dup")
    assert load_manifest(url)["annotations"] == load_manifest(twin)["annotations"]
    added = set(fs.find("assay-write/corpus")) - listing
    assert {p.rsplit("/", 2)[1] for p in added} == {"exact_dup"}
    q = "SELECT count(*) FILTER (WHERE dup_exact_first) AS firsts FROM annotations"
    assert run_query(url, q).to_pylist() == run_query(twin, q).to_pylist()


def test_select_and_export_into_an_s3_root_match_local(s3_fresh, s3_env):
    import json as _json

    from assay.corpora.mixture import list_mixtures, load_mixture

    fs, url, twin = s3_fresh["fs"], s3_fresh["url"], s3_fresh["twin"]
    if not fs.exists("assay-write/corpus/annotations"):
        pytest.skip("needs test_annotate_an_s3_root_in_place_matches_local first")
    recipe = s3_fresh["base"] / "mix.yaml"
    recipe.write_text("rank: ln(words) - ln(lines + 1)\nbudget:\n  docs: 25\nseed: 7\n")
    for root in (url, str(twin)):
        out = _cli(["select", "--root", root, "--recipe", str(recipe), "--name", "m1"], s3_env)
        assert out.returncode == 0, out.stderr
    remote = _remote_files(fs, "assay-write/corpus/mixtures/m1")
    local = _local_files(twin / "mixtures" / "m1")
    assert set(remote) == set(local) and "manifest.json" in remote
    assert {k: v for k, v in remote.items() if k.endswith(".parquet")} == {
        k: v for k, v in local.items() if k.endswith(".parquet")
    }
    assert remote["recipe.yaml"] == local["recipe.yaml"]
    drop = ("created", "seconds_selecting")
    got = {k: v for k, v in load_mixture(url, "m1").items() if k not in drop}
    want = {
        k: v
        for k, v in _json.loads((twin / "mixtures/m1/manifest.json").read_text()).items()
        if k not in drop
    }
    assert got == want and got["selected"]["rows"] == 25
    assert list_mixtures(url) == ["m1"]
    # the mixture is a view of the S3 root's catalog, as on a local root
    q = "SELECT count(*) AS n, sum(copy) AS c, min(score) AS s FROM mixture_m1"
    got = [_cli(["sql", q, "--root", root, "--format", "json"], s3_env) for root in (url, str(twin))]
    assert all(o.returncode == 0 for o in got), got[0].stderr
    assert json.loads(got[0].stdout) == json.loads(got[1].stdout) and json.loads(got[0].stdout)[0]["n"] == 25
    # a rerun finds it selected; another recipe under the same name is refused
    out = _cli(["select", "--root", url, "--recipe", str(recipe), "--name", "m1"], s3_env)
    assert out.returncode == 0 and "already selected" in out.stdout, out.stderr
    other = s3_fresh["base"] / "other.yaml"
    other.write_text("rank: ln(words) - ln(lines + 1)\nbudget:\n  docs: 20\nseed: 7\n")
    out = _cli(["select", "--root", url, "--recipe", str(other), "--name", "m1"], s3_env)
    assert out.returncode != 0 and "already exists" in out.stderr
    # export from the S3 root, to S3 and to a local folder: the same bytes as a local export
    local_out = s3_fresh["base"] / "export-local"
    for root, dest in (
        (str(twin), str(local_out)),
        (url, "s3://assay-write/export"),
        (url, str(local_out) + "2"),
    ):
        out = _cli(["export", "m1", "--root", root, "--out", dest], s3_env)
        assert out.returncode == 0, out.stderr
    want = _local_files(local_out)
    assert want and _remote_files(fs, "assay-write/export") == want
    assert _local_files(Path(str(local_out) + "2")) == want
    out = _cli(["export", "m1", "--root", url, "--out", "s3://assay-write/export"], s3_env)
    assert out.returncode != 0 and "already holds part-*" in out.stderr


# ---------------------------------------------------------------------------------------------
# Ingest into an S3 root: staged on a local mirror, shards uploaded whole, the manifest last.


def test_ingest_into_an_s3_root_matches_local_and_appends(s3_env, tmp_path):
    import fsspec

    from assay.corpora.catalog import run_query
    from assay.corpora.manifest import load_manifest

    fs = fsspec.filesystem("s3")
    fs.mkdir("assay-ingest")
    url, local = "s3://assay-ingest/corpus", tmp_path / "local"
    first, second = (
        str(FIXTURES / "ingest" / "inaugural_noid.jsonl"),
        str(FIXTURES / "ingest" / "inaugural.jsonl.zst"),
    )
    for root in (url, str(local)):
        out = _cli(["ingest", first, "--root", root, "--shard-rows", "10", "--id-prefix", "a"], s3_env)
        assert out.returncode == 0, out.stderr
    remote = _remote_files(fs, "assay-ingest/corpus/docs")
    assert len(remote) == 4 and remote == _local_files(local / "docs")
    assert not fs.exists("assay-ingest/corpus/docs/.staging") and not fs.exists("assay-ingest/corpus/.assay")
    got, want = load_manifest(url), load_manifest(local)
    assert got["shards"] == want["shards"] and got["inputs"] == want["inputs"]
    assert run_query(url, "SELECT count(*) FROM docs").column(0)[0].as_py() == 40
    # --append: new shards numbered after the published ones, the same bytes as on the local root
    for root in (url, str(local)):
        out = _cli(
            ["ingest", second, "--root", root, "--shard-rows", "10", "--append", "--id-prefix", "b"], s3_env
        )
        assert out.returncode == 0, out.stderr
    remote = _remote_files(fs, "assay-ingest/corpus/docs")
    assert len(remote) > 4 and remote == _local_files(local / "docs")
    assert _remote_files(fs, "assay-ingest/corpus/quarantine") == _local_files(local / "quarantine")
    assert load_manifest(url)["shards"] == load_manifest(local)["shards"]
    q = "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM docs"
    assert run_query(url, q).to_pylist() == run_query(local, q).to_pylist()
    # the same inputs again: already done, nothing uploaded
    before = {p: fs.info(p)["ETag"] for p in fs.find("assay-ingest/corpus")}
    out = _cli(["ingest", first, "--root", url, "--shard-rows", "10", "--id-prefix", "a"], s3_env)
    assert out.returncode == 0, out.stderr
    assert {p: fs.info(p)["ETag"] for p in fs.find("assay-ingest/corpus")} == before


def test_ingest_killed_before_its_upload_publishes_on_rerun(s3_env, tmp_path):
    """A run that finished on the mirror but died before committing to the root: the root still
    shows no corpus (nothing half published), and the next call uploads without ingesting again."""
    import fsspec

    from assay.corpora.manifest import load_manifest, read_manifest_bytes
    from assay.corpora.storage import begin_mirror, mirror_dir
    from assay.pipelines.ingest import _ingest, ingest

    fs = fsspec.filesystem("s3")
    fs.mkdir("assay-killed")
    url = "s3://assay-killed/corpus"
    inputs = [str(FIXTURES / "ingest" / "inaugural_noid.jsonl")]
    # what `ingest` does up to the upload, then stops (as if killed there)
    mirror, _ = begin_mirror(url, ("docs",), fresh_ok=True)
    _ingest(inputs, mirror, None, None, False, True, catalog=False)
    assert read_manifest_bytes(url) is None and not fs.exists("assay-killed/corpus/docs")
    out = ingest(inputs, url, quiet=True)
    assert out["already_done"] is True  # published, not ingested again
    assert load_manifest(url)["shards"] == load_manifest(mirror_dir(url))["shards"]
    assert _remote_files(fs, "assay-killed/corpus/docs") == _local_files(mirror / "docs")
    assert not (mirror / ".assay" / "mirror-base").exists()
