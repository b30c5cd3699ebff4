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


DUPLICATES = "SELECT d.id, a.* FROM docs d JOIN annotations a USING (id) ORDER BY d.id"


def test_duplicate_output_names_are_renamed_as_duckdb_does(root):
    table = run_query(root, DUPLICATES)
    assert table.column_names[:3] == ["id", "id_1", "source"]
    assert table.column("id").to_pylist() == table.column("id_1").to_pylist()


@pytest.mark.parametrize("fmt", ["table", "csv", "json", "parquet"])
def test_sql_cli_handles_duplicate_names_and_streams_to_out(root, tmp_path, fmt):
    import json

    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from assay.pipelines.cli import main

    out = tmp_path / f"result.{fmt}"
    res = CliRunner().invoke(
        main, ["sql", DUPLICATES, "--root", str(root), "--format", fmt, "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    if fmt == "parquet":
        assert pq.read_table(out).column_names[:2] == ["id", "id_1"] and pq.read_metadata(out).num_rows == 40
    elif fmt == "json":
        rows = json.loads(out.read_text())
        assert len(rows) == 40 and rows[0]["id"] == rows[0]["id_1"]
    elif fmt == "csv":
        lines = out.read_text().splitlines()
        assert lines[0].startswith('"id","id_1"') or lines[0].startswith("id,id_1") and len(lines) == 41
    else:
        assert "id_1" in out.read_text() and "first 50 rows" not in out.read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_sql_to_stdout_streams_and_table_says_when_it_cuts(root):
    import json

    from click.testing import CliRunner

    from assay.pipelines.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["sql", DUPLICATES, "--root", str(root), "--format", "json"])
    assert res.exit_code == 0 and len(json.loads(res.output)) == 40
    res = runner.invoke(main, ["sql", "SELECT id FROM docs", "--root", str(root), "--format", "csv"])
    assert res.exit_code == 0 and len(res.output.splitlines()) == 41
    res = runner.invoke(main, ["sql", "SELECT id FROM docs", "--root", str(root), "--max-rows", "5"])
    assert res.exit_code == 0 and "(first 5 rows;" in res.output
    res = runner.invoke(main, ["sql", "SELECT nosuch FROM docs", "--root", str(root)])
    assert res.exit_code == 1 and res.output.startswith("Error: ") and "Traceback" not in res.output
    res = runner.invoke(
        main, ["sql", "DROP VIEW docs", "--root", str(root), "--format", "csv", "--out", "x.csv"]
    )
    assert res.exit_code == 1 and "read-only" in res.output


def test_views_list_the_manifest_files_and_status_check_finds_drift(root, tmp_path):
    from click.testing import CliRunner

    from assay.pipelines.cli import main

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    runner = CliRunner()
    res = runner.invoke(main, ["status", "--check", "--root", str(copy)])
    assert res.exit_code == 0 and "every file the manifest names is present" in res.output
    # a shard on disk that the manifest does not name (a killed run's output) is never read
    shutil.copy(copy / "docs" / "part-00000.parquet", copy / "docs" / "part-00777.parquet")
    assert run_query(copy, "SELECT count(*) FROM docs").column(0)[0].as_py() == 40
    res = runner.invoke(main, ["status", "--check", "--root", str(copy)])
    assert res.exit_code == 0 and "1 file(s) not in the manifest" in res.output and "part-00777" in res.output
    # a file the manifest names, deleted by hand: the views skip it, --check fails naming it
    (copy / "annotations" / "stats" / "part-00000.parquet").unlink()
    assert run_query(copy, "SELECT count(*) FROM annotations").column(0)[0].as_py() == 40
    assert "words" not in run_query(copy, "SELECT * FROM annotations LIMIT 0").column_names  # its only shard
    res = runner.invoke(main, ["status", "--check", "--root", str(copy)])
    assert res.exit_code == 1 and "annotations/stats/part-00000.parquet" in res.output
    assert "missing" in res.output and "Traceback" not in res.output
