"""`assay forecast` with a mixture regressor fitted in the recipe layout, and the end-to-end helpers."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from conftest import FIXTURES, REPO

from assay.pipelines.cli import main
from assay.pipelines.forecast import backtest_composition, forecast_recipes
from assay.pipelines.ingest import ingest
from assay.predictors.mixture_data import load_recipe_table, read_recipe_mixtures

RM = FIXTURES / "regmix"


def invoke(*args: str) -> str:
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("forecast_recipes") / "root"
    ingest([str(REPO / "sample" / "web")], root, quiet=True)
    runs = str(FIXTURES / "ladder" / "*.csv")
    for verb, name in (("ladder", "ladder"), ("transfer", "link")):
        invoke("fit", verb, "--runs", runs, "--root", str(root), "--register", name)
    invoke("fit", "mixture", "--mixtures", str(RM / "recipe_train_mixtures.csv"), "--results",
           str(RM / "recipe_long.csv"), "--task", "pile_cc", "--metric", "val_loss", "--root", str(root),
           "--register", "regmix")  # fmt: skip
    return root


def forecast_json(root, weights: dict, tmp_path) -> list[dict]:
    path = tmp_path / "w.json"
    path.write_text(json.dumps(weights))
    out = invoke("forecast", "--root", str(root), "--weights", str(path), "--n", "1e9", "--d", "2e10",
                 "--format", "json")  # fmt: skip
    return json.loads(out)


def test_a_recipe_fit_of_a_loss_drives_the_forecast(root, tmp_path):
    rows = forecast_json(root, {"pile_cc": 0.9, "github": 0.1}, tmp_path)
    assert rows and all(r["predictor"] == "ladder:ladder+mixture:regmix+transfer:link" for r in rows)
    assert all(r["loss_ratio"] > 0 for r in rows)
    other = forecast_json(root, {"github": 0.9, "pile_cc": 0.1}, tmp_path)
    assert [r["predicted"] for r in rows] != [r["predicted"] for r in other]


def test_forecast_recipes_matches_forecast_per_recipe(root, tmp_path):
    mixtures = read_recipe_mixtures(RM / "recipe_test_mixtures.csv")[:3]
    table = forecast_recipes(root, mixtures, 1e9, 2e10)
    assert table["recipe"].unique(maintain_order=True).to_list() == mixtures["recipe"].to_list()
    weights = {k: v for k, v in mixtures.row(0, named=True).items() if k != "recipe" and v > 0}
    single = {r["task"]: r["predicted"] for r in forecast_json(root, weights, tmp_path)}
    first = table.filter(pl.col("recipe") == mixtures["recipe"][0])
    for r in first.iter_rows(named=True):
        assert r["predicted"] == pytest.approx(single[r["task"]])


def test_a_regressor_of_an_accuracy_is_not_used_as_a_loss(root, tmp_path, shared_data):
    import shutil

    recipes = shared_data / "eval_results" / "recipes"
    other = tmp_path / "root"
    shutil.copytree(root, other)
    (other / "predictors" / "regmix.json").unlink()
    invoke("fit", "mixture", "--mixtures", str(recipes / "datablations_mixtures.csv"), "--results",
           str(recipes / "datablations_long.csv"), "--task", "average", "--metric", "avg_score", "--root",
           str(other), "--register", "code")  # fmt: skip
    root = other
    rows = forecast_json(root, {"c4": 0.7, "python": 0.3}, tmp_path)
    assert all(r["predictor"] == "ladder:ladder" and "loss_ratio" not in r for r in rows)
    assert all("predicts average/avg_score, not a loss" in r["warning"] for r in rows)


def test_backtest_composition_predicts_held_out_mixtures():
    table, _ = load_recipe_table(
        RM / "recipe_train_mixtures.csv", RM / "recipe_long.csv", "pile_cc", "val_loss"
    )
    github, _ = load_recipe_table(
        RM / "recipe_train_mixtures.csv", RM / "recipe_long.csv", "github", "val_loss"
    )
    table = table.join(github.select("recipe", "metric/github/val_loss"), on="recipe")
    rows = backtest_composition(table, "metric/pile_cc/val_loss", ["metric/github/val_loss"], k=3)
    assert rows.height == 96 and rows["key"].n_unique() == 96
    assert np.isfinite(rows["composed"].to_numpy()).all()
    # every prediction comes from a model that did not see the mixture, so it is not the observation
    assert (rows["composed"] != rows["observed"]).all()
