"""The command line: --help everywhere, fast start-up, the ingest balance, sql formats."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from conftest import FIXTURES, REPO

from assay.pipelines.cli import COMMANDS, main


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_verb_has_help(path, flag):
    result = CliRunner().invoke(main, [*path.split(" "), flag])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    children = sorted(p.split(" ")[-1] for p in COMMANDS if p.startswith(path + " "))
    if children:  # a verb with sub-verbs lists them, even when it also runs on its own
        assert "Commands:" in result.output and all(c in result.output for c in children)


def test_help_is_fast_and_imports_nothing_heavy():
    code = (
        "import sys, time; t = time.time(); from assay.pipelines.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('duckdb', 'torch', 'datatrove', 'pyarrow', 'polars', 'spacy') if m in sys.modules]\n"
        "print(heavy, time.time() - t, file=sys.stderr)"
    )
    started = time.time()
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    wall = time.time() - started
    heavy, _ = out.stderr.strip().rsplit("] ", 1)
    assert heavy == "[", out.stderr
    assert wall < 2.0  # interpreter start included; the import itself is ~0.1 s


def test_ingest_annotate_sql_roundtrip(tmp_path):
    runner = CliRunner()
    root = str(tmp_path / "root")
    res = runner.invoke(main, ["ingest", str(REPO / "sample" / "damaged"), "--root", root])
    assert res.exit_code == 0, res.output
    assert "damaged.jsonl" in res.output and "yes" in res.output
    res = runner.invoke(main, ["annotate", "--root", root, "--scorer", "stats"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        main,
        [
            "sql",
            "SELECT reason, count(*) AS n FROM quarantine GROUP BY 1 ORDER BY 1",
            "--root",
            root,
            "--format",
            "json",
        ],
    )
    assert res.exit_code == 0, res.output
    reasons = {r["reason"]: r["n"] for r in json.loads(res.output)}
    assert reasons == {"duplicate_id": 1, "empty_text": 1, "json": 1, "missing_text": 1, "utf8": 1}
    out = tmp_path / "q.csv"
    res = runner.invoke(
        main, ["sql", "SELECT count(*) AS n FROM docs", "--root", root, "--format", "csv", "--out", str(out)]
    )
    assert res.exit_code == 0 and out.read_text().splitlines() == ["n", "2"]
    res = runner.invoke(main, ["sql", "DELETE FROM assay_catalog", "--root", root])
    assert res.exit_code != 0 and "read-only" in res.output


def test_root_from_environment(tmp_path, monkeypatch):
    root = tmp_path / "envroot"
    monkeypatch.setenv("ASSAY_ROOT", str(root))
    res = CliRunner().invoke(main, ["ingest", str(FIXTURES / "ingest" / "inaugural_noid.jsonl")])
    assert res.exit_code == 0, res.output
    assert (root / "manifest.json").exists()


def test_executor_seam():
    from assay.pipelines.executor import ExecutorConfig, UnitStep, build_executor

    step = UnitStep("assay.corpora.ingest:ingest_unit_task", [{}], {})
    with pytest.raises(ValueError, match="partition"):
        build_executor(step, 1, REPO / ".no-logs", ExecutorConfig(kind="slurm"))
    with pytest.raises(ValueError, match="--executor"):
        ExecutorConfig(kind="spark")


def test_annotate_match_word_selects_word_bounded_facts(tmp_path):
    runner = CliRunner()
    root = str(tmp_path / "root")
    assert runner.invoke(main, ["ingest", str(REPO / "sample" / "speeches"), "--root", root]).exit_code == 0
    res = runner.invoke(main, ["facts", "add", "trex", str(FIXTURES / "facts" / "trex"), "--root", root])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["annotate", "--root", root, "--scorer", "facts:trex", "--match", "word"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "root" / "triples" / "facts_trex_word").is_dir()
    assert not (tmp_path / "root" / "triples" / "facts_trex").exists()


def test_annotate_help_lists_every_builtin_scorer():
    from assay.scorers.registry import SCORERS

    out = CliRunner().invoke(main, ["annotate", "--help"]).output
    assert all(f"\n    {name}" in out for name in SCORERS), out
