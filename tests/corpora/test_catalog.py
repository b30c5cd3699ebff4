"""The DuckDB catalog: read-only SQL, opening from anywhere, moving the root."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from conftest import FIXTURES

from assay.corpora.catalog import ReadOnlyError, run_query
from assay.pipelines.annotate import annotate
from assay.pipelines.ingest import ingest


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalog") / "root"
    ingest([str(FIXTURES / "ingest" / "inaugural_noid.jsonl")], root, quiet=True)
    annotate(root, ["stats"], quiet=True)
    return root


def test_views_and_wide_annotations(root):
    row = run_query(
        root, "SELECT count(*) AS n, sum(words) AS w, min(tokens_est) AS t FROM annotations"
    ).to_pylist()[0]
    assert row["n"] == 40 and row["w"] > 10_000 and row["t"] > 0
    cols = run_query(root, "SELECT * FROM annotations LIMIT 0").column_names
    assert cols[:3] == ["id", "source", "url"] and {"chars", "bytes", "words", "lines", "tokens_est"} <= set(
        cols
    )
    assert run_query(root, "SELECT count(*) FROM quarantine").column(0)[0].as_py() == 0


@pytest.mark.parametrize(
    "statement",
    ["CREATE TABLE x AS SELECT 1", "DROP VIEW docs", "INSERT INTO assay_catalog VALUES ('a', 'b', now())"],
)
def test_writes_are_refused(root, statement):
    with pytest.raises(ReadOnlyError, match="read-only"):
        run_query(root, statement)


def test_opens_from_another_directory_in_plain_duckdb(root, tmp_path):
    code = (
        "import duckdb, sys; c = duckdb.connect(sys.argv[1], read_only=True); "
        "print(c.sql('SELECT count(*) FROM annotations WHERE words > 0').fetchall()[0][0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(root / "catalog.duckdb")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "40"


def test_moved_root_is_rebound(root, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    shutil.rmtree(tmp_path / "moved" / ".assay", ignore_errors=True)
    # the copy's views still point at the old place until an Assay command opens it
    assert run_query(moved, "SELECT count(*) FROM docs").column(0)[0].as_py() == 40
    code = "import duckdb, sys; c = duckdb.connect(sys.argv[1], read_only=True); print(c.sql('SELECT root FROM assay_catalog').fetchall()[0][0])"
    out = subprocess.run(
        [sys.executable, "-c", code, str(moved / "catalog.duckdb")], capture_output=True, text=True
    )
    assert out.stdout.strip() == str(moved.resolve())
