"""Capability boundary: loss, optimiser, data checks, backtests, design, CLI — on synthetic and real data."""

from __future__ import annotations

import json
import warnings

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from scipy.stats import norm

from assay.pipelines.cli import main
from assay.predictors.boundary import BoundaryPredictor, half_year_cuts, temporal_split
from assay.predictors.boundary_data import (
    RELEASE_MONTH_FAMILY,
    DataIssueWarning,
    month_index,
    month_label,
    prepare_compute_table,
    release_months,
    size_from_name,
)
from assay.predictors.boundary_design import (
    Pilot,
    balanced_i_optimal,
    equal_mass_bins,
    frontier_error,
    mean_predictive_variance,
    random_design,
)
from assay.predictors.boundary_fit import (
    SigmoidParams,
    binned_coverage_mae,
    boundary_curve,
    continuation_stages,
    coverage,
    fit_quantile_sigmoid,
    pinball_loss,
    smoothed_pinball,
)

TRUE = SigmoidParams(y0=0.25, L=0.6, b=1.2, z_star=22.5)
TASKS = ["MMLU", "ARC-C", "HellaSwag", "Winograd", "GSM8K"]


@pytest.fixture(scope="module")
def cut(fixtures) -> pl.DataFrame:
    return pl.read_csv(fixtures / "boundary" / "base_llm_benchmark_eval_cut.csv")


@pytest.fixture(scope="module")
def cut_compute(cut) -> pl.DataFrame:
    return prepare_compute_table(cut, warn=False)[0]


def synthetic(n: int, sd: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores whose 98 % quantile at each z is exactly TRUE's boundary."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(19.0, 26.0, n)
    return z, boundary_curve(z, TRUE) + rng.normal(0.0, sd, n) - sd * norm.ppf(0.98)


# -- loss and metrics ---------------------------------------------------------------------------


def test_pinball_coverage_and_binned_coverage_by_hand():
    y, q = np.array([0.5, 0.2, 0.9]), np.array([0.4, 0.4, 0.9])
    # u = 0.1, -0.2, 0: losses 0.9·0.1, 0.1·0.2, 0
    assert pinball_loss(y, q, tau=0.9) == pytest.approx((0.09 + 0.02) / 3)
    assert coverage(y, q) == pytest.approx(2 / 3)
    z = np.arange(60.0)
    yy = np.where(z < 30, 1.0, 0.0)  # first half all above q=0.5, second half all under
    assert binned_coverage_mae(z, yy, np.full(60, 0.5), tau=0.9) == pytest.approx((0.9 + 0.1) / 2)


def test_smoothed_pinball_tends_to_pinball():
    u = np.linspace(-0.5, 0.5, 101)
    exact = np.maximum(0.98 * u, -0.02 * u)
    assert np.max(np.abs(smoothed_pinball(u, 0.98, 1e4) - exact)) < 1e-4
    assert np.all(smoothed_pinball(u, 0.98, 50.0) >= exact)  # softplus lies above the hinge
    assert np.max(np.abs(smoothed_pinball(u, 0.98, 50.0) - exact)) == pytest.approx(np.log(2) / 50, rel=1e-6)


def test_continuation_schedule():
    assert continuation_stages(0.98, 50.0) == [
        (0.9, 10.0),
        (0.9, 25.0),
        (0.9, 50.0),
        (0.95, 50.0),
        (0.98, 50.0),
    ]
    assert continuation_stages(0.5, 50.0) == [(0.5, 10.0), (0.5, 25.0), (0.5, 50.0)]


# -- optimiser on synthetic data with known parameters -------------------------------------------


def test_recovers_known_parameters():
    z, y = synthetic(300, 0.03, seed=0)
    fit = fit_quantile_sigmoid(z, y, lambda_b=0.0, kappa=400.0).params
    assert fit.y0 == pytest.approx(TRUE.y0, abs=0.02)
    assert fit.L == pytest.approx(TRUE.L, abs=0.03)
    assert fit.b == pytest.approx(TRUE.b, rel=0.25)
    assert fit.z_star == pytest.approx(TRUE.z_star, abs=0.15)
    grid = np.linspace(19, 26, 50)
    assert frontier_error(boundary_curve(grid, fit), boundary_curve(grid, TRUE)) < 0.01


def test_default_smoothing_overcovers_and_penalty_flattens():
    """κ = 50 smooths over ±1/50 in score units, which lifts the boundary (coverage above τ);
    λ_b·b² pulls the slope down. Both are properties of the published objective."""
    z, y = synthetic(300, 0.03, seed=1)
    free = fit_quantile_sigmoid(z, y, lambda_b=0.0).params
    assert coverage(y, boundary_curve(z, free)) >= 0.98
    assert free.y0 > TRUE.y0  # lifted floor
    penalised = fit_quantile_sigmoid(z, y, lambda_b=1e-2).params
    assert penalised.b < free.b


def test_constraints_hold_and_optimum_matches_dense_grid():
    rng = np.random.default_rng(3)
    z = rng.uniform(18, 25, 80)
    y = np.clip(rng.uniform(0.0, 1.0, 80) * (0.3 + 0.1 * (z - 18)), 0, 1)
    fit = fit_quantile_sigmoid(z, y)
    p = fit.params
    assert 0 <= p.y0 <= 1 and 0 <= p.L <= 1 and p.y0 + p.L <= 1 + 1e-9
    assert 0.05 - 1e-9 <= p.b <= 50 + 1e-9 and z.min() - 1e-9 <= p.z_star <= z.max() + 1e-9
    # no (z*, b) on a 20 × 20 grid, with (y0, L) on a 41 × 41 grid, beats the multi-start result
    zz, bb = np.meshgrid(np.linspace(z.min(), z.max(), 20), np.geomspace(0.05, 50, 20))
    s = 0.5 * (1 + np.tanh(0.5 * bb.ravel()[:, None] * (z[None, :] - zz.ravel()[:, None])))
    y0, height = np.meshgrid(np.linspace(0, 1, 41), np.linspace(0, 1, 41))
    ok = (y0 + height <= 1).ravel()
    y0, height = y0.ravel()[ok], height.ravel()[ok]
    best = np.inf
    for row, b in zip(s, bb.ravel()):
        u = y[None, :] - y0[:, None] - height[:, None] * row[None, :]
        best = min(best, float(smoothed_pinball(u).mean(axis=1).min()) + 1e-2 * b * b)
    assert fit.objective <= best + 1e-6


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 4"):
        fit_quantile_sigmoid(np.array([20.0, 21, 22]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="finite"):
        fit_quantile_sigmoid(np.array([20.0, 21, 22, np.nan]), np.array([0.1, 0.2, 0.3, 0.4]))


# -- data checks on the committed real fixture ---------------------------------------------------


def test_size_from_name():
    assert size_from_name("openlm-research/open_llama_7b_v2") == 7e9
    assert size_from_name("EleutherAI/pythia-70m-deduped") == pytest.approx(7e7)
    assert size_from_name("stabilityai/stablelm-2-1_6b") == pytest.approx(1.6e9)
    assert size_from_name("RWKV/rwkv-4-1b5-pile") == pytest.approx(1.5e9)
    assert size_from_name("bigscience/bloom-7b1") == pytest.approx(7.1e9)
    assert size_from_name("mistralai/Mixtral-8x7B-v0.1") is None
    assert size_from_name("Qwen/Qwen2-57B-A14B") is None
    assert size_from_name("openai-community/gpt2") is None


def test_data_errors_are_corrected_or_dropped_visibly(cut):
    with pytest.warns(DataIssueWarning) as record:
        table, issues = prepare_compute_table(cut)
    assert len(record) == len(issues) == 5  # one visible warning per corrected or dropped row
    assert any("btlm-3b-8k-base: 627 T tokens" in str(w.message) for w in record)
    by_model = {(i.model, i.issue): i for i in issues}
    assert by_model[("cerebras/btlm-3b-8k-base", "unit_slip")].action == "corrected"
    assert by_model[("openlm-research/open_llama_7b_v2", "size_mismatch")].action == "corrected"
    dropped = sorted(i.model for i in issues if i.issue == "no_compute")
    assert dropped == ["Qwen/Qwen2-7B", "mistralai/Mixtral-8x7B-v0.1", "openai-community/gpt2"]
    assert table.height == cut.height - 3
    row = table.filter(pl.col("model") == "cerebras/btlm-3b-8k-base").row(0, named=True)
    assert row["tokens"] == pytest.approx(627e9) and row["flops"] == pytest.approx(6 * 3e9 * 627e9)
    row = table.filter(pl.col("model") == "openlm-research/open_llama_7b_v2").row(0, named=True)
    assert row["flops"] == pytest.approx(6 * 7e9 * 1e12)
    # every untouched row keeps the table's own FLOPs column
    plain = table.filter(
        ~pl.col("model").is_in(["cerebras/btlm-3b-8k-base", "openlm-research/open_llama_7b_v2"])
    )
    assert np.allclose(plain["flops"].to_numpy(), plain["FLOPs (1E21)"].to_numpy() * 1e21)


def test_flops_computed_from_size_and_tokens(cut):
    with_col = prepare_compute_table(cut, warn=False)[0]
    without = prepare_compute_table(cut.drop("FLOPs (1E21)"), warn=False)[0]
    assert np.allclose(with_col["flops"].to_numpy(), without["flops"].to_numpy())
    with pytest.raises(ValueError, match="no compute"):
        prepare_compute_table(cut.select("Model", "MMLU"), warn=False)


def test_flops_column_disagreeing_with_6nd_is_reported(cut):
    bad = cut.with_columns(
        pl.when(pl.col("Model") == "huggyllama/llama-7b")
        .then(400.0)
        .otherwise(pl.col("FLOPs (1E21)"))
        .alias("FLOPs (1E21)")
    )
    _, issues = prepare_compute_table(bad, warn=False)
    assert [(i.model, i.action) for i in issues if i.issue == "flops_mismatch"] == [
        ("huggyllama/llama-7b", "kept")
    ]


# -- the predictor on the real fixture -----------------------------------------------------------


def test_fit_predict_json_round_trip(cut):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = BoundaryPredictor("MMLU").fit(cut)
    assert any(issubclass(w.category, DataIssueWarning) for w in caught)
    f = model.fitted_on_
    assert f["n"] == 45 and f["coverage_error"] <= 0.02 + 1e-12
    assert f["data_issues"] == {
        "no_compute/dropped": 3,
        "size_mismatch/corrected": 1,
        "unit_slip/corrected": 1,
    }
    doc = json.loads(json.dumps(model.to_json()))
    assert doc["kind"] == "boundary" and doc["version"] == "1"
    assert {i["model"] for i in doc["data_issues"]} >= {
        "cerebras/btlm-3b-8k-base",
        "openlm-research/open_llama_7b_v2",
    }
    again = BoundaryPredictor.from_json(doc)
    pred = again.predict(pl.DataFrame({"flops": [1e21, 1e23, 1e25]}))
    assert np.allclose(pred["boundary"].to_numpy(), model.boundary_at([1e21, 1e23, 1e25]))
    assert np.all(np.diff(pred["boundary"].to_numpy()) >= 0)  # b > 0: the boundary rises with compute
    assert (pred["boundary"] <= pred["ceiling"]).all() and (pred["boundary"] >= pred["floor"]).all()


def test_explicit_flops_column_gets_the_same_checks(cut):
    named = BoundaryPredictor("MMLU", x="FLOPs (1E21)").fit(cut, warn=False)
    found = BoundaryPredictor("MMLU").fit(cut, warn=False)
    assert named.fitted_on_["n"] == 45 and named.params_ == found.params_
    assert named.fitted_on_["data_issues"] == found.fitted_on_["data_issues"]
    with pytest.raises(ValueError, match="no compute column"):
        BoundaryPredictor("MMLU", x="compute").fit(cut, warn=False)


def test_missing_and_percent_scores(cut_compute):
    model = BoundaryPredictor("ARC-C").fit(cut_compute, warn=False)
    assert model.fitted_on_["n"] == cut_compute.height - 2  # two models have no ARC-C score
    pct = cut_compute.with_columns(pl.col("MMLU") * 100)
    a = BoundaryPredictor("MMLU").fit(pct, warn=False)
    b = BoundaryPredictor("MMLU").fit(cut_compute, warn=False)
    assert a.params_.to_json() == pytest.approx(b.params_.to_json())
    assert any(i.issue == "percent_scores" for i in a.data_issues_)


def test_backtests(cut_compute):
    model = BoundaryPredictor("HellaSwag")
    folds = model.backtest(cut_compute, "random", folds=3)
    assert folds["fold"].to_list() == ["0", "1", "2", "pooled"]
    pooled = folds.row(3, named=True)
    assert pooled["n_test"] == cut_compute.height == folds["n_test"][:3].sum()
    assert 0 <= pooled["coverage"] <= 1 and pooled["pinball"] > 0 and pooled["baseline_pinball"] > 0
    top = model.backtest(cut_compute, "compute", train_fraction=0.7).row(0, named=True)
    assert (
        top["n_train"] + top["n_test"] == cut_compute.height and top["n_train"] >= 0.65 * cut_compute.height
    )
    # the constant quantile of the low-compute 70 % cannot follow the frontier up: the sigmoid beats it
    assert top["pinball"] < top["baseline_pinball"]
    with pytest.raises(ValueError, match="unknown split"):
        model.backtest(cut_compute, "chronological")
    with pytest.raises(ValueError, match="needs release dates"):
        model.backtest(cut_compute, "temporal")


# -- temporal validation -------------------------------------------------------------------------


def test_month_parsing():
    assert month_index("2023-07") == month_index("2023-07-18") == 2023 * 12 + 6
    assert month_label(month_index("2024-01")) == "2024-01"
    import datetime

    assert month_index(datetime.date(2024, 2, 29)) == month_index("2024-02")
    assert (
        np.isnan(month_index(None))
        and np.isnan(month_index("July 2023"))
        and np.isnan(month_index("2023-13"))
    )


def test_temporal_split_masks():
    months = np.array([month_index(m) for m in ["2022-03", "2022-11", "2023-02", "2023-05", "2023-08"]] * 3)
    months[0] = np.nan  # an undated row is in no set
    expanding = temporal_split(months, ["2023-01", "2023-07"], "expanding")
    period = temporal_split(months, ["2023-01", "2023-07"], "period")
    for (tr, te, lab), (_, pte, _) in zip(expanding, period):
        assert not (tr & te).any() and not tr[0] and not te[0]
        assert np.array_equal(te, pte)  # the window changes the training set only
        assert months[tr].max() < month_index(lab["fold"]) <= months[te].min()
    (tr0, te0, _), (tr1, te1, _) = expanding
    assert tr0.sum() == 5 and te0.sum() == 6 and tr1.sum() == 11 and te1.sum() == 3
    assert period[1][0].sum() == 6 and months[period[1][0]].min() >= month_index("2023-01")
    with pytest.raises(ValueError, match="increasing"):
        temporal_split(months, ["2023-07", "2023-01"])
    with pytest.raises(ValueError, match="look like"):
        temporal_split(months, ["mid-2023"])
    with pytest.raises(ValueError, match="window"):
        temporal_split(months, None, "rolling")


def test_temporal_backtest_on_the_fixture(cut):
    """Builtin months and the same months given as a date column give the same backtest."""
    model = BoundaryPredictor("MMLU")
    rows = model.backtest(cut, "temporal", dates="builtin", cuts=["2023-01", "2023-07", "2024-01"])
    assert rows["fold"].to_list() == ["2023-01", "2023-07", "2024-01", "pooled"]
    per_cut, pooled = rows[:3], rows.row(3, named=True)
    assert pooled["n_test"] == per_cut["n_test"].sum() == 35 and pooled["n_undated"] == 0
    assert per_cut["n_train"].to_list() == [10, 22, 31]  # expanding: every earlier release
    assert pooled["coverage"] == pytest.approx(1 - pooled["n_above"] / 35)
    assert pooled["coverage_gap"] == pytest.approx(pooled["coverage"] - 0.98)
    computed, _ = prepare_compute_table(cut, warn=False)
    dated = cut.join(
        computed.select(pl.col("model").alias("Model"), release=pl.Series([month_label(m) for m in release_months(computed, "builtin")])),
        on="Model",
        how="left",
    )  # fmt: skip
    again = model.backtest(dated, "temporal", dates="release", cuts=["2023-01", "2023-07", "2024-01"])
    assert again.drop("n_undated").equals(rows.drop("n_undated"))
    with pytest.raises(ValueError, match="no date column"):
        model.backtest(cut, "temporal", dates="released")


def test_builtin_months_cover_the_shared_table(shared_data):
    """The table has no date field; every model has a builtin month; the automatic cuts and the
    split sizes on its 123 models with compute."""
    table = pl.read_csv(shared_data / "eval_results" / "obsscaling" / "base_llm_benchmark_eval.csv")
    assert not [c for c in table.columns if any(w in c.lower() for w in ("date", "release", "time", "year"))]
    assert set(table["Model Family"]) <= set(RELEASE_MONTH_FAMILY)
    z, _, months = BoundaryPredictor("MMLU").release_months(table, "builtin")
    assert len(z) == 123 and np.isfinite(months).all()
    assert half_year_cuts(months) == ["2023-01", "2023-07", "2024-01", "2024-07"]
    sizes = {
        w: [(int(tr.sum()), int(te.sum())) for tr, te, _ in temporal_split(months, None, w)]
        for w in ("expanding", "period")
    }
    assert sizes["expanding"] == [(24, 31), (55, 29), (84, 30), (114, 9)]
    assert sizes["period"] == [(24, 31), (31, 29), (29, 30), (30, 9)]  # fmt: skip


def test_temporal_coverage_on_the_shared_table(shared_data):
    """The measured held-out figure of the README: MMLU, expanding window, λ_b 1e-3, 99 later
    releases over four cuts, 17 above the boundary (coverage 0.83 against τ = 0.98)."""
    table = pl.read_csv(shared_data / "eval_results" / "obsscaling" / "base_llm_benchmark_eval.csv")
    rows = BoundaryPredictor("MMLU").backtest(table, "temporal", dates="builtin")
    pooled = rows.filter(pl.col("fold") == "pooled").row(0, named=True)
    assert pooled["n_test"] == 99
    assert pooled["n_above"] == pytest.approx(17, abs=1)
    # better than the constant quantile, and still short of τ: the frontier advances
    assert pooled["baseline_coverage"] < pooled["coverage"] < 0.9
    assert pooled["pinball"] < pooled["baseline_pinball"]


# -- budgeted design -----------------------------------------------------------------------------


def test_design_respects_budget_and_seeds(cut_compute):
    flops, cost = cut_compute["flops"].to_numpy(), cut_compute["params"].to_numpy()
    budget = 0.2 * cost.sum()
    chosen = balanced_i_optimal(flops, cost, budget)
    assert len(set(chosen.tolist())) == len(chosen) >= 4
    assert cost[chosen].sum() <= budget
    assert chosen[0] == np.argmin(flops)  # seeded with the lowest compute first
    # the selection reads only (flops, cost): scores play no part
    assert np.array_equal(chosen, balanced_i_optimal(flops.copy(), cost.copy(), budget))
    tiny = balanced_i_optimal(flops, cost, cost.min() * 1.5)
    assert cost[tiny].sum() <= cost.min() * 1.5
    literal = balanced_i_optimal(flops, cost, budget, pilot=Pilot())
    assert cost[literal].sum() <= budget and Pilot().z_star == 9.0


def test_balance_term_spreads_the_design():
    rng = np.random.default_rng(0)
    flops = 10 ** rng.uniform(19, 26, 200)
    cost = rng.uniform(1, 2, 200)
    idx, _ = equal_mass_bins(np.log10(flops), 10)
    plain = balanced_i_optimal(flops, cost, 12.0, balance_lambda=0.0)
    spread = balanced_i_optimal(flops, cost, 12.0, balance_lambda=10.0)
    assert len(set(idx[spread])) > len(set(idx[plain]))


def test_design_lowers_predictive_variance_below_random_subsets():
    """What the greedy optimises: the pilot's mean predictive variance, lower than any random subset's."""
    rng = np.random.default_rng(1)
    z = rng.uniform(19.0, 26.0, 150)
    cost = 10 ** (0.5 * (z - 19.0)) * rng.uniform(0.5, 2.0, 150)  # params grow about as √compute
    budget = 0.1 * cost.sum()
    designed = mean_predictive_variance(10**z, balanced_i_optimal(10**z, cost, budget))
    draws = [
        mean_predictive_variance(10**z, random_design(cost, budget, np.random.default_rng(s)))
        for s in range(6)
    ]
    assert designed < min(draws)


# -- CLI -----------------------------------------------------------------------------------------


def test_cli_fit_and_forecast(tmp_path, fixtures):
    table = fixtures / "boundary" / "base_llm_benchmark_eval_cut.csv"
    runner = CliRunner()
    out = tmp_path / "mmlu.json"
    res = runner.invoke(
        main,
        ["fit", "boundary", "--root", str(tmp_path), "--table", str(table), "--x", "flops", "--y", "MMLU",
         "--out", str(out), "--register", "mmlu", "--folds", "3"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "btlm-3b-8k-base: 627 T tokens" in res.output and "3 rows dropped" in res.output
    doc = json.loads(out.read_text())
    assert doc["kind"] == "boundary" and set(doc["backtest"]) == {"random_3fold", "compute_top_30pct"}
    dated = tmp_path / "dated.json"
    res = runner.invoke(
        main,
        ["fit", "boundary", "--table", str(table), "--y", "MMLU", "--out", str(dated), "--folds", "3",
         "--dates", "builtin", "--cuts", "2023-01,2023-07,2024-01", "--window", "period"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    temporal = json.loads(dated.read_text())["backtest"]["temporal_period"]
    assert [c["fold"] for c in temporal["cuts"]] == ["2023-01", "2023-07", "2024-01"]
    assert temporal["n_test"] == 35 and "released 2023-07" in res.output and "general knowledge" in res.output
    for bad, message in (
        (["--dates", "released"], "no date column"),
        (["--cuts", "2023-07"], "--cuts needs --dates"),
        (["--dates", "builtin", "--cuts", "2024-01,2023-01"], "increasing"),
    ):
        res = runner.invoke(
            main, ["fit", "boundary", "--table", str(table), "--y", "MMLU", "--out", str(dated), *bad]
        )
        assert res.exit_code != 0 and message in res.output and "Traceback" not in res.output, res.output
    assert json.loads((tmp_path / "predictors" / "mmlu.json").read_text()) == doc

    res = runner.invoke(
        main, ["forecast", "boundary", "--root", str(tmp_path), "--fit", "mmlu", "--flops", "1e24"]
    )
    assert res.exit_code == 0, res.output
    expected = BoundaryPredictor.from_json(doc).boundary_at(1e24)
    assert f"{float(expected):.3f}" in res.output

    res = runner.invoke(
        main, ["forecast", "boundary", "--fit", str(out), "--flops", "1e22", "--flops", "1e27", "--json"]
    )
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [r["extrapolated"] for r in rows] == [False, True]
    assert rows[0]["boundary"] < rows[1]["boundary"] <= rows[1]["ceiling"]

    res = runner.invoke(
        main, ["forecast", "boundary", "--root", str(tmp_path), "--fit", "nope", "--flops", "1e24"]
    )
    assert res.exit_code != 0 and "registered" in res.output


# -- the full shared table -----------------------------------------------------------------------


@pytest.mark.parametrize("task", ["MMLU", "GSM8K"])
def test_full_table_in_sample_and_compute_split(shared_data, task):
    table = pl.read_csv(shared_data / "eval_results" / "obsscaling" / "base_llm_benchmark_eval.csv")
    model = BoundaryPredictor(task).fit(table, warn=False)
    f = model.fitted_on_
    assert f["n"] == 123
    assert f["data_issues"]["no_compute/dropped"] == 25
    assert f["coverage_error"] <= 0.02 + 1e-12
    top = model.backtest(table, "compute").row(0, named=True)
    assert top["n_test"] == 37 and top["pinball"] < top["baseline_pinball"]
