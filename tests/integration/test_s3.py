"""Corpus roots on object storage: a real S3-compatible server (moto, 127.0.0.1) started here.

What works today: a root published to S3 (shards, annotation sets, manifest) is read through
the manifest and the catalog (`assay sql`, `assay status --check`), DuckDB reading the remote
Parquet through the registered fsspec filesystem; the manifest is written with one PUT under
the lock, merging concurrent changes. Ingest / annotate / select / export writing to an S3 root
need their pipelines to stop treating the root as a local Path (see the report of task H3).
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
