"""`assay fit recipes`, `assay predict recipes`, `assay decide` end to end on the real Gadre sweep."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner

from assay.pipelines.cli import main

TASKS = "hellaswag/acc,arc_easy/acc,openlm/val_loss"


@pytest.fixture(scope="module")
def fitted(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("recipes")
    runs = shared_data / "eval_results" / "recipes" / "gadre_long.csv"
    out = root / "gadre.json"
    args = ["fit", "recipes", "--runs", str(runs), "--tasks", TASKS, "--out", str(out)]
    res = CliRunner().invoke(
        main, [*args, "--register", "gadre", "--root", str(root), "--hold-out", "params"]
    )
    assert res.exit_code == 0, res.output
    return root, out, res.output


def test_fit_writes_and_registers_with_a_backtest(fitted):
    root, out, output = fitted
    assert "backtest: fit below params 4.12e+08" in output
    assert "fitted 3 targets for 3 recipes on 95 runs (nd 3)" in output
    doc = json.loads(out.read_text())
    assert doc["kind"] == "recipes" and doc["backtest"]["n"] > 0
    assert (root / "predictors" / "gadre.json").is_file()


def test_predict_csv_and_json(fitted, tmp_path):
    root, out, _ = fitted
    targets = tmp_path / "targets.csv"
    targets.write_text(
        "recipe,params,tokens,task,metric\nrpj,1e9,2e10,hellaswag,acc\nrw_original,1e9,2e10,openlm,val_loss\n"
    )
    res = CliRunner().invoke(main, ["predict", "recipes", "--fit", str(out), "--targets", str(targets)])
    assert res.exit_code == 0, res.output
    rows = pl.read_csv(res.output.encode())
    assert rows.columns == ["recipe", "params", "tokens", "task", "metric", "predicted", "lower", "upper"]
    assert (rows["lower"] < rows["predicted"]).all() and (rows["predicted"] < rows["upper"]).all()
    assert 0.25 < rows["predicted"][0] < 1.0
    res = CliRunner().invoke(
        main,
        [
            "predict",
            "recipes",
            "--fit",
            "gadre",
            "--root",
            str(root),
            "--targets",
            str(targets),
            "--format",
            "json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert [r["recipe"] for r in json.loads(res.output)] == ["rpj", "rw_original"]


def test_decide_table_csv_json(fitted):
    _, out, _ = fitted
    base = ["decide", "--fit", str(out), "--n", "1.4e9", "--d", "2.8e10", "--task", "hellaswag"]
    res = CliRunner().invoke(main, base)
    assert res.exit_code == 0, res.output
    assert "hellaswag/acc (points) at N = 1.4e+09" in res.output and "beyond the fitted runs" in res.output
    res = CliRunner().invoke(main, [*base, "--format", "json"])
    doc = json.loads(res.output)
    assert [r["rank"] for r in doc["ranking"]] == [1, 2, 3]
    assert all(0.5 <= p["probability"] <= 1 for p in doc["pairs"])
    res = CliRunner().invoke(main, [*base, "--format", "csv", "--recipes", "rpj,c4_original"])
    assert res.exit_code == 0, res.output
    assert sorted(pl.read_csv(res.output.encode())["recipe"].to_list()) == ["c4_original", "rpj"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("recipe,params,tokens,task\nrpj,1e9,2e10,hellaswag\n", "missing columns ['metric']"),
        ("recipe,params,tokens,task,metric\nnosuch,1e9,2e10,hellaswag,acc\n", "'nosuch' has no fitted runs"),
        ("", "the file is empty"),
    ],
)
def test_bad_targets_are_one_line(fitted, tmp_path, body, message):
    _, out, _ = fitted
    targets = tmp_path / "t.csv"
    targets.write_text(body)
    res = CliRunner().invoke(main, ["predict", "recipes", "--fit", str(out), "--targets", str(targets)])
    assert res.exit_code != 0
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], res.output
    assert "Traceback" not in res.output


def test_bad_runs_and_tasks_are_one_line(fitted, tmp_path):
    _, out, _ = fitted
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    for args, message in [
        (["fit", "recipes", "--runs", str(empty), "--out", str(tmp_path / "x.json")], "the file is empty"),
        (
            ["decide", "--fit", str(out), "--n", "1e9", "--d", "2e10", "--task", "nosuch"],
            "no fitted task 'nosuch'",
        ),
    ]:
        res = CliRunner().invoke(main, args)
        errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
        assert res.exit_code != 0 and len(errors) == 1 and message in errors[0], res.output
    assert not (tmp_path / "x.json").exists()
