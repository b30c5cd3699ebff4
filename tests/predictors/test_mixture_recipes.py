"""Mixtures as recipes: rows recipe,domain,weight + long-format results, fitted like the wide layout.

The committed cut (tests/fixtures/regmix/recipe_*.csv, RECIPES.md) is the RegMix cut rewritten in the
recipe layout; the shared OLMix and datablations files are used where ../shared/data is present.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from assay.pipelines.cli import main
from assay.predictors.mixture import MixturePredictor, cross_validate, score_columns
from assay.predictors.mixture_data import (
    load_recipe_table,
    read_long_results,
    read_mixtures,
    read_recipe_mixtures,
)

PILE_CC = "metric/pile_cc/val_loss"


@pytest.fixture(scope="module")
def cut(fixtures: Path) -> dict[str, Path]:
    folder = fixtures / "regmix"
    return {p.stem: p for p in folder.glob("*.csv")}


def fit_args(mixtures: Path, results: Path, task: str, metric: str, out: Path) -> list[str]:
    return ["fit", "mixture", "--mixtures", str(mixtures), "--results", str(results), "--task", task,
            "--metric", metric, "--out", str(out)]  # fmt: skip


def one_line_error(result) -> str:
    """The error a command printed, checked to be one line and no traceback."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.output
    return lines[0]


# ---- the committed cut -------------------------------------------------------------------------
def test_recipe_cut_reads_as_the_normalised_wide_table(cut):
    recipes = read_recipe_mixtures(cut["recipe_train_mixtures"])
    wide = read_mixtures(cut["train_mixture_1m"])
    assert recipes.height == wide.height == 96
    assert recipes["recipe"].to_list() == [f"train_{i:04d}" for i in wide["index"]]
    x = wide.drop("index").to_numpy()
    x = x / x.sum(axis=1, keepdims=True)
    for j, column in enumerate(wide.columns[1:]):
        short = column.removeprefix("train_the_pile_")
        # a domain no recipe lists is absent; every listed one matches the wide column, rescaled
        if short in recipes.columns:
            np.testing.assert_allclose(recipes[short].to_numpy(), x[:, j], atol=1e-12)
        else:
            assert np.all(x[:, j] == 0)
    np.testing.assert_allclose(recipes.drop("recipe").to_numpy().sum(axis=1), 1.0)


def test_cli_recipe_fit_backtest_and_predict_by_recipe(tmp_path, cut):
    runner = CliRunner()
    out = tmp_path / "fit.json"
    args = fit_args(cut["recipe_train_mixtures"], cut["recipe_long"], "pile_cc", "val_loss", out)
    result = runner.invoke(main, [*args, "--test-mixtures", str(cut["recipe_test_mixtures"])])
    assert result.exit_code == 0, result.output
    assert "96 mixtures" in result.output and "held out (48 mixtures)" in result.output
    doc = json.loads(out.read_text())
    assert doc["fitted_on"]["layout"] == "recipes" and doc["fitted_on"]["target_is_loss"] is True
    assert doc["target_columns"] == [PILE_CC]
    # the same 96 mixtures fitted in the wide layout rank the 48 held-out ones about as well (>0.85)
    assert doc["backtest"]["held_out"]["spearman"] > 0.85

    result = runner.invoke(main, ["predict", "mixture", "--fit", str(out), "--mixtures",
                                  str(cut["recipe_test_mixtures"])])  # fmt: skip
    assert result.exit_code == 0, result.output
    by_recipe = pl.read_csv(result.output.encode())
    assert by_recipe.columns == ["recipe", "predicted", "lower", "upper"]
    assert by_recipe["recipe"].to_list() == [f"test_{i:04d}" for i in range(1, 49)]
    # a recipe fit reads wide files too (keyed by index) and gives the same ranking
    result = runner.invoke(main, ["predict", "mixture", "--fit", str(out), "--mixtures",
                                  str(cut["test_mixture_1m"]), "--format", "json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    by_index = json.loads(result.output)
    assert [r["index"] for r in by_index] == list(range(1, 49))
    wide = np.array([r["predicted"] for r in by_index])
    assert np.corrcoef(wide, by_recipe["predicted"].to_numpy())[0, 1] > 0.99
    # a domain the fit never saw may appear only with weight 0
    unknown = tmp_path / "unknown.csv"
    pl.DataFrame({"recipe": ["x", "x", "y"], "domain": ["pile_cc", "lyrics", "pile_cc"],
                  "weight": [0.5, 0.5, 1.0]}).write_csv(unknown)  # fmt: skip
    line = one_line_error(
        runner.invoke(main, ["predict", "mixture", "--fit", str(out), "--mixtures", str(unknown)])
    )
    assert "domains unknown to this predictor carry weight: lyrics" in line
    pl.DataFrame({"recipe": ["x", "x"], "domain": ["pile_cc", "lyrics"], "weight": [1.0, 0.0]}).write_csv(
        unknown
    )
    result = runner.invoke(main, ["predict", "mixture", "--fit", str(out), "--mixtures", str(unknown)])
    assert result.exit_code == 0 and result.output.startswith("recipe,predicted"), result.output


def test_cli_recipe_input_errors_are_one_line(tmp_path, cut):
    runner = CliRunner()
    out = tmp_path / "fit.json"
    mixtures, results = cut["recipe_train_mixtures"], cut["recipe_long"]
    line = one_line_error(runner.invoke(main, fit_args(mixtures, results, "pile", "val_loss", out)))
    assert "no task 'pile'" in line and "github" in line
    line = one_line_error(runner.invoke(main, fit_args(mixtures, results, "pile_cc", "acc", out)))
    assert "no metric 'acc'" in line and "val_loss" in line
    line = one_line_error(runner.invoke(main, ["fit", "mixture", "--mixtures", str(mixtures), "--results",
                                               str(results), "--out", str(out)]))  # fmt: skip
    assert "--task and --metric" in line
    line = one_line_error(runner.invoke(main, [*fit_args(mixtures, results, "pile_cc", "val_loss", out),
                                               "--target", "mean"]))  # fmt: skip
    assert "--target is for --losses" in line

    # a recipe with weights but no result: refused, or left out and listed with --skip-missing
    rows = pl.read_csv(mixtures)
    extra = tmp_path / "extra.csv"
    pl.concat([rows, pl.DataFrame({"recipe": ["orphan"] * 2, "domain": ["pile_cc", "github"],
                                   "weight": [0.5, 0.5]})]).write_csv(extra)  # fmt: skip
    line = one_line_error(runner.invoke(main, fit_args(extra, results, "pile_cc", "val_loss", out)))
    assert (
        "1 recipes have weights but no pile_cc/val_loss result: orphan" in line and "--skip-missing" in line
    )
    result = runner.invoke(main, [*fit_args(extra, results, "pile_cc", "val_loss", out), "--skip-missing"])
    assert result.exit_code == 0, result.output
    assert "1 training recipes have no result, left out: orphan" in result.output
    assert json.loads(out.read_text())["fitted_on"]["n_mixtures"] == 96

    # weights that sum to 0.9: refused; to 1.03: rescaled to 1
    off = tmp_path / "off.csv"
    rows.with_columns(pl.when(pl.col("recipe") == "train_0002").then(pl.col("weight") * 0.9)
                      .otherwise(pl.col("weight")).alias("weight")).write_csv(off)  # fmt: skip
    line = one_line_error(runner.invoke(main, fit_args(off, results, "pile_cc", "val_loss", out)))
    assert "recipe 'train_0002' sum to 0.8" in line and "refused" in line
    near = rows.with_columns(
        pl.when(pl.col("recipe") == "train_0002").then(pl.col("weight") * 1.03).otherwise(pl.col("weight"))
    )
    near.write_csv(off)
    assert read_recipe_mixtures(off).filter(pl.col("recipe") == "train_0002").drop("recipe").sum_horizontal()[
        0
    ] == pytest.approx(1.0)
    negative = tmp_path / "negative.csv"
    rows.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(-0.1).otherwise(pl.col("weight"))
                      .alias("weight")).write_csv(negative)  # fmt: skip
    line = one_line_error(runner.invoke(main, fit_args(negative, results, "pile_cc", "val_loss", out)))
    assert "negative weight" in line and "train_0001" in line
    # a wide mixture file with --results, and a recipe file with --losses
    line = one_line_error(runner.invoke(main, fit_args(cut["train_mixture_1m"], results, "pile_cc",
                                                       "val_loss", out)))  # fmt: skip
    assert "recipe, domain, weight" in line
    line = one_line_error(runner.invoke(main, ["fit", "mixture", "--mixtures", str(mixtures), "--losses",
                                               str(cut["train_pile_loss_1m"]), "--out", str(out)]))  # fmt: skip
    assert "--results" in line


def test_several_runs_of_a_recipe_are_averaged(tmp_path, cut):
    long = pl.read_csv(cut["recipe_long"])
    again = long.filter(pl.col("recipe") == "train_0001").with_columns(pl.col("value") + 1.0)
    path = tmp_path / "long.csv"
    pl.concat([long, again]).write_csv(path)
    per_recipe = read_long_results(path, "pile_cc", "val_loss")
    first = per_recipe.filter(pl.col("recipe") == "train_0001").row(0, named=True)
    original = long.filter((pl.col("recipe") == "train_0001") & (pl.col("task") == "pile_cc"))["value"][0]
    assert first["n_runs"] == 2 and first[PILE_CC] == pytest.approx(original + 0.5)


# ---- the shared recipe files -------------------------------------------------------------------
def test_datablations_code_share_fit_keyed_by_recipe(tmp_path, shared_data):
    recipes = shared_data / "eval_results" / "recipes"
    runner = CliRunner()
    out, root = tmp_path / "fit.json", tmp_path / "root"
    args = fit_args(recipes / "datablations_mixtures.csv", recipes / "datablations_long.csv", "average",
                    "avg_score", out)  # fmt: skip
    result = runner.invoke(main, [*args, "--root", str(root), "--register", "code"])
    assert result.exit_code == 0, result.output
    # the unfiltered C4 and OSCAR runs are listed in both source tables: 17 rows, 15 recipes
    assert "17 result rows averaged into 15 recipes" in result.output
    doc = json.loads(out.read_text())
    assert doc["fitted_on"]["target_is_loss"] is False
    assert sorted(doc["fitted_on"]["domains"]) == ["c4", "oscar", "python"]
    result = runner.invoke(main, ["predict", "mixture", "--root", str(root), "--fit", "code", "--mixtures",
                                  str(recipes / "datablations_mixtures.csv")])  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = pl.read_csv(result.output.encode())
    assert printed.height == 15 and printed["recipe"].n_unique() == 15
    assert "c4_py0.3_filter-none" in printed["recipe"].to_list()
    # a fit on 15 recipes keeps trees that split: predictions vary with the code share
    assert printed["predicted"].n_unique() > 3


def test_olmix_64_domains_held_out_mixtures(shared_data):
    recipes = shared_data / "eval_results" / "recipes"
    table, note = load_recipe_table(
        recipes / "olmix_full_recomputation_mixtures.csv",
        recipes / "olmix_full_recomputation_long.csv.gz",
        "arc_easy_rc_olmes",
        "bpb",
    )
    assert table.shape == (406, 66) and note["mixtures_without_result"] == []
    target = "metric/arc_easy_rc_olmes/bpb"
    model = MixturePredictor(target=target).fit(table[:300])
    held = model.backtest(table[300:]).row(0, named=True)
    assert len(model.domains_) == 64
    # measured 0.89 (fit on the first 300 mixtures, the last 106 held out)
    assert held["spearman"] > 0.8
    assert held["mae"] < np.abs(table[300:][target] - table[:300][target].mean()).mean() / 2


def test_cross_validate_baselines_on_datablations(shared_data):
    recipes = shared_data / "eval_results" / "recipes"
    table, _ = load_recipe_table(
        recipes / "datablations_mixtures.csv", recipes / "datablations_long.csv", "average", "avg_score"
    )
    cv = cross_validate(table, k=table.height, target="metric/average/avg_score", method="linear")
    scores = {r["predictor"]: r for r in score_columns(cv).iter_rows(named=True)}
    assert cv["recipe"].n_unique() == 15
    # the score falls with the code share: a linear fit over the weights beats the training mean
    assert scores["predicted"]["mae"] < scores["mean"]["mae"]
    assert scores["mean"]["spearman"] is None


def test_search_maximises_a_score_fit(tmp_path, shared_data):
    from assay.predictors.mixture_search import search_mixture

    recipes = shared_data / "eval_results" / "recipes"
    out = tmp_path / "fit.json"
    args = fit_args(recipes / "datablations_mixtures.csv", recipes / "datablations_long.csv", "average",
                    "avg_score", out)  # fmt: skip
    assert CliRunner().invoke(main, args).exit_code == 0
    result = CliRunner().invoke(main, ["mix", "search", "--fit", str(out), "--samples", "3000", "--top-k", "32",
                                       "--format", "json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    best = json.loads(result.output)
    # the average score falls with the share of code: the best mixtures hold little Python
    model = MixturePredictor.from_json(json.loads(out.read_text()))
    worst = search_mixture(model, n_samples=3000, top_k=32, higher_is_better=False)
    assert best["weights"]["python"] < 0.15 < worst.weights["python"]
    assert best["predicted"] > worst.predicted
