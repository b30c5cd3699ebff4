"""Backtests of the capability boundary on the observational-scaling table of 148 base models.

Prints, for MMLU, ARC-C, HellaSwag, Winograd and GSM8K:
  1. the table's data issues (corrected or dropped rows);
  2. in-sample calibration, random 5-fold (×3) held-out calibration, and the compute split
     (fit on the lowest 70 % of FLOPs, test on the top 30 %) against the constant-quantile baseline;
  3. the effect of the slope penalty λ_b (and of a sharper κ);
  4. temporal validation (fit on models released before a cut date, test on the next half year),
     beside the compute split; the table has no dates, so release months are Assay's approximate
     months from general knowledge (`boundary_data.RELEASE_MONTH_*`, labelled [mem]); and two
     changes the paper points to (its P_t -> P_t+1 period window; its λ_b = 1e-2), chosen on MMLU
     and reported on the other four benchmarks;
  5. the budgeted balanced I-optimal design at 20 % of the cost budget against the full-data fit
     and against random subsets of the same cost.

Run: .venv/bin/python bench/predictors_boundary.py   (about 2–4 minutes on 2 cores)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl
from common import show

from assay.predictors.boundary import BoundaryPredictor, half_year_cuts
from assay.predictors.boundary_data import month_label, prepare_compute_table
from assay.predictors.boundary_design import Pilot, balanced_i_optimal, frontier_error, random_design
from assay.predictors.boundary_fit import SigmoidParams, boundary_curve, coverage, fit_quantile_sigmoid

REPO = Path(__file__).resolve().parents[1]

TASKS = ["MMLU", "ARC-C", "HellaSwag", "Winograd", "GSM8K"]
TABLE = Path("eval_results/obsscaling/base_llm_benchmark_eval.csv")
LAMBDAS = [1e-2, 1e-3, 1e-4, 0.0]
ALPHA = 0.2  # evaluation budget: 20 % of the total cost (arXiv 2602.15327 reports ~20 % suffices)
RANDOM_DRAWS = 20


def calibration_rows(
    table: pl.DataFrame, lambda_b: float, kappa: float = 50.0, repeats: int = 3
) -> list[dict]:
    rows = []
    for task in TASKS:
        model = BoundaryPredictor(task, lambda_b=lambda_b, kappa=kappa).fit(table, warn=False)
        f, p = model.fitted_on_, model.params_
        pooled = model.backtest(table, "random", folds=5, repeats=repeats).filter(pl.col("fold") == "pooled")
        cv = pooled.row(0, named=True)
        top = model.backtest(table, "compute", train_fraction=0.7).row(0, named=True)
        rows.append(
            {
                "task": task,
                "lambda_b": lambda_b,
                "kappa": kappa,
                "n": f["n"],
                "b": p.b,
                "penalty_share": lambda_b * p.b**2 / f["objective"],
                "floor": p.y0,
                "ceiling": p.y0 + p.L,
                "q@1e24": float(model.boundary_at(1e24)),
                "in_cov": f["coverage"],
                "in_cov_err": f["coverage_error"],
                "in_above": round(f["n"] * (1 - f["coverage"])),
                "in_pinball": f["pinball"],
                "in_binned_mae": f["binned_coverage_mae"],
                "cv_cov": cv["coverage"],
                "cv_cov_err": cv["coverage_error"],
                "cv_pinball": cv["pinball"],
                "cv_const_pinball": cv["baseline_pinball"],
                "top_n": f"{top['n_train']}/{top['n_test']}",
                "top_cov": top["coverage"],
                "top_const_cov": top["baseline_coverage"],
                "top_pinball": top["pinball"],
                "top_const_pinball": top["baseline_pinball"],
                "top_reduction": top["pinball_reduction"],
            }
        )
    return rows


VARIANTS = [("expanding", 1e-3), ("period", 1e-3), ("expanding", 1e-2), ("period", 1e-2)]
CHOOSE_ON = "MMLU"  # the one benchmark the temporal variant is chosen on; the other four are held out


def temporal_rows(raw: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per cut and pooled temporal backtests for every task and (window, λ_b) variant."""
    cuts, pooled = [], []
    for task in TASKS:
        for window, lam in VARIANTS:
            rows = BoundaryPredictor(task, lambda_b=lam).backtest(
                raw, "temporal", dates="builtin", window=window
            )
            rows = rows.with_columns(task=pl.lit(task), lambda_b=pl.lit(lam))
            cuts.append(rows.filter(pl.col("fold") != "pooled"))
            pooled.append(rows.filter(pl.col("fold") == "pooled"))
    return pl.concat(cuts), pl.concat(pooled)


def temporal_section(raw: pl.DataFrame, default: pl.DataFrame) -> None:
    model = BoundaryPredictor(TASKS[0])
    _, _, months = model.release_months(raw, "builtin")
    counts = pl.DataFrame({"month": [month_label(m) for m in months if np.isfinite(m)]}).with_columns(
        half=pl.col("month").str.slice(0, 4)
        + pl.when(pl.col("month").str.slice(5, 2).cast(pl.Int32) <= 6)
        .then(pl.lit("-H1"))
        .otherwise(pl.lit("-H2"))
    )
    per_half = counts.group_by("half").agg(pl.len().alias("models")).sort("half")
    print(
        "\n## Temporal validation: dates\n\nThe observational-scaling table has no release date or version field "
        "(no README either). Release months are Assay's approximate public-release months from general "
        "knowledge ([mem], not from the data; a month or two off is possible), per model where a family's "
        "members came out at different times. Models with compute and an MMLU score per half year: "
        + ", ".join(f"{r['half']} {r['models']}" for r in per_half.iter_rows(named=True))
        + f". Automatic cuts (20 models before, 8 in the next half year): {', '.join(half_year_cuts(months))}."
    )
    cuts, pooled = temporal_rows(raw)
    base = cuts.filter((pl.col("window") == "expanding") & (pl.col("lambda_b") == 1e-3))
    show(
        "Temporal split (default λ_b 1e-3, expanding window): fit on every model released before the cut, "
        "test on the models released in the next half year [held out]",
        base.select(
            "task",
            pl.col("fold").alias("cut"),
            "n_train",
            "n_test",
            "coverage",
            "n_above",
            "coverage_gap",
            "baseline_coverage",
            "pinball",
            "baseline_pinball",
        ),  # fmt: skip
        "coverage_gap = coverage − τ (τ = 0.98; below 0: the boundary is beaten more often than 2 %); "
        "baseline = the constant τ-quantile of the training scores.",
    )
    top = default.select("task", pl.col("top_cov").alias("compute_top30_cov"))
    summary = (
        pooled.filter((pl.col("window") == "expanding") & (pl.col("lambda_b") == 1e-3))
        .select(
            "task",
            pl.col("n_test").alias("temporal_n"),
            pl.col("coverage").alias("temporal_cov"),
            pl.col("coverage_gap").alias("temporal_gap"),
            pl.col("n_above").alias("temporal_above"),
            pl.col("baseline_coverage").alias("temporal_const_cov"),
            pl.col("pinball_reduction").alias("temporal_reduction"),
        )
        .join(top, on="task")
        .with_columns(compute_top30_gap=pl.col("compute_top30_cov") - 0.98)
    )
    show(
        "Temporal (pooled over the cuts) vs the compute split (top 30 % of FLOPs), λ_b 1e-3 [held out]",
        summary,
        "Both splits extrapolate: up in compute, or forward in time. The frontier advances (newer models beat "
        "the boundary of older ones at the same compute), most on MMLU and GSM8K, so coverage falls short of τ.",
    )

    wide = pooled.select("task", "window", "lambda_b", "coverage", "n_above", "pinball")
    show(
        "Variants the paper points to: its period window (fit on the last half year only, P_t -> P_t+1) and "
        "its λ_b = 1e-2, pooled temporal coverage",
        wide.sort("task", "lambda_b", "window"),
    )
    choose = wide.filter(pl.col("task") == CHOOSE_ON).with_columns(err=(pl.col("coverage") - 0.98).abs())
    best = choose.sort("err", "pinball").row(0, named=True)
    held = wide.filter(pl.col("task") != CHOOSE_ON)
    ref = held.filter((pl.col("window") == "expanding") & (pl.col("lambda_b") == 1e-3)).select(
        "task", pl.col("coverage").alias("default_cov"), pl.col("pinball").alias("default_pinball")
    )
    pick = held.filter(
        (pl.col("window") == best["window"]) & (pl.col("lambda_b") == best["lambda_b"])
    ).select("task", pl.col("coverage").alias("chosen_cov"), pl.col("pinball").alias("chosen_pinball"))
    verdict = ref.join(pick, on="task").with_columns(change=pl.col("chosen_cov") - pl.col("default_cov"))
    better, worse = int((verdict["change"] > 0).sum()), int((verdict["change"] < 0).sum())
    show(
        f"Chosen on {CHOOSE_ON} [used to choose]: window {best['window']}, λ_b {best['lambda_b']:g} "
        f"(lowest |coverage − τ|, then pinball: coverage {best['coverage']:.3f}, pinball {best['pinball']:.4f}); "
        "on the other four benchmarks [held out] against the default (expanding, 1e-3)",
        verdict,
        f"Held-out coverage change: mean {verdict['change'].mean():+.3f}, better on {better}, worse on {worse} "
        f"of {verdict.height}. A change becomes a default only if it improves held-out coverage on most benchmarks.",
    )


def _fit(z: np.ndarray, y: np.ndarray, idx: np.ndarray, lambda_b: float) -> SigmoidParams:
    return fit_quantile_sigmoid(z[idx], y[idx], lambda_b=lambda_b).params


def design_rows(table: pl.DataFrame, lambda_b: float, alpha: float = ALPHA) -> list[dict]:
    rows = []
    for task in TASKS:
        sub = table.filter(pl.col(task).is_not_null())
        flops, cost, y = sub["flops"].to_numpy(), sub["params"].to_numpy(), sub[task].to_numpy()
        z = np.log10(flops)
        grid = np.linspace(z.min(), z.max(), 200)
        budget = alpha * cost.sum()

        full = _fit(z, y, np.arange(len(z)), lambda_b)
        q_full = boundary_curve(grid, full)
        row = {
            "task": task,
            "lambda_b": lambda_b,
            "alpha": alpha,
            "pool": len(z),
            "full_cov": coverage(y, boundary_curve(z, full)),
        }
        for name, pilot in [("centred", None), ("literal", Pilot())]:
            chosen = balanced_i_optimal(flops, cost, budget, pilot=pilot)
            p = _fit(z, y, chosen, lambda_b)
            row[f"{name}_n"] = len(chosen)
            row[f"{name}_err"] = frontier_error(boundary_curve(grid, p), q_full)
            row[f"{name}_cov"] = coverage(y, boundary_curve(z, p))
        errors = []
        for s in range(RANDOM_DRAWS):
            chosen = random_design(cost, budget, np.random.default_rng(s))
            if len(chosen) >= 4:
                errors.append(frontier_error(boundary_curve(grid, _fit(z, y, chosen, lambda_b)), q_full))
        row["random_err_mean"] = float(np.mean(errors))
        row["random_err_sd"] = float(np.std(errors))
        row["random_n_mean"] = float(
            np.mean([len(random_design(cost, budget, np.random.default_rng(s))) for s in range(RANDOM_DRAWS)])
        )
        rows.append(row)
    return rows


def main(shared_data: Path | None = None) -> None:
    """Print every backtest table of the capability boundary (needs ../shared/data)."""
    shared_data = shared_data or REPO.parent / "shared" / "data"
    path = shared_data / TABLE
    if not path.exists():
        print(f"predictors_boundary: {path} not found; skipped")
        return
    start = time.time()
    raw = pl.read_csv(path)
    table, issues = prepare_compute_table(raw, warn=False)
    print(f"# Capability boundary — {path.name}: {raw.height} models, {table.height} with compute")
    show(
        "Data issues (corrected or dropped before any fit)",
        pl.DataFrame([i.to_json() for i in issues if i.issue != "no_compute"]),
        f"plus {sum(i.issue == 'no_compute' for i in issues)} rows without pretraining tokens (no FLOPs): dropped.",
    )

    default = pl.DataFrame(calibration_rows(table, 1e-2))
    show(
        "Calibration and extrapolation at the published defaults (τ 0.98, κ 50, λ_b 1e-2)",
        default.select(
            "task",
            "n",
            "in_cov",
            "in_cov_err",
            "in_above",
            "in_pinball",
            "in_binned_mae",
            "cv_cov",
            "cv_cov_err",
            "cv_pinball",
            "cv_const_pinball",
        ),  # fmt: skip
        "in_* in-sample; cv_* pooled over random 5-fold × 3 repeats; const = constant τ-quantile of the training "
        "scores. Coverage at τ = 0.98 cannot exceed τ by more than 2 %, so 'error ≤ 2 %' is met by any "
        "over-covering boundary: in_above counts the points above it (≈ 0.02·n expected).",
    )
    show(
        "Compute split: fit on the lowest 70 % of FLOPs, test on the top 30 %",
        default.select(
            "task",
            "top_n",
            "top_cov",
            "top_const_cov",
            "top_pinball",
            "top_const_pinball",
            "top_reduction",
            "b",
            "floor",
            "ceiling",
            "q@1e24",
        ),  # fmt: skip
        "top_reduction = 1 − pinball / constant-baseline pinball. Coverage far below τ: a frontier extrapolated "
        "a decade up in compute is not calibrated — newer models beat the boundary fitted on older, smaller ones.",
    )

    sweep = pl.DataFrame(
        default.to_dicts() + [r for lam in LAMBDAS[1:] for r in calibration_rows(table, lam, repeats=1)]
    )
    sharp = pl.DataFrame(
        calibration_rows(table, 1e-2, kappa=200.0, repeats=1)
        + calibration_rows(table, 1e-3, kappa=200.0, repeats=1)
    )
    show(
        "Effect of the slope penalty λ_b (and of a sharper smoothing κ = 200)",
        pl.concat([sweep, sharp])
        .select(
            "task",
            "lambda_b",
            "kappa",
            "b",
            "penalty_share",
            "in_cov",
            "in_pinball",
            "cv_cov",
            "cv_pinball",
            "top_cov",
            "top_reduction",
            "q@1e24",
        )
        .sort("task", "kappa", "lambda_b", descending=[False, False, True]),  # fmt: skip
        "penalty_share = λ_b·b² / objective at the fit. The mean smoothed pinball of ~120 scores in [0, 1] is "
        "only ~0.005, so λ_b = 1e-2 (b² ~ 0.1) buys a much flatter slope b than λ_b ≤ 1e-4 would, and with it a "
        "boundary that rises too slowly to follow the top of the compute range (top_cov, top_reduction).",
    )

    temporal_section(raw, sweep.filter((pl.col("lambda_b") == 1e-3) & (pl.col("kappa") == 50.0)))

    design = pl.DataFrame(design_rows(table, 1e-2) + design_rows(table, 1e-3))
    show(
        f"Budgeted design: {ALPHA:.0%} of the cost budget (cost ∝ parameters) vs the full-data fit",
        design.select(
            "task",
            "lambda_b",
            "pool",
            "centred_n",
            "centred_err",
            "centred_cov",
            "literal_n",
            "literal_err",
            "random_n_mean",
            "random_err_mean",
            "random_err_sd",
            "full_cov",
        ),  # fmt: skip
        "err = mean |q_subset(z) − q_full(z)| over 200 points spanning the pool's compute (score units); "
        "centred = the pilot (y0 .20, L .75, b 1) with its inflection at the pool's median compute; literal = "
        "a = −9 read as σ(a + b·log10(FLOPs/1e21)), i.e. an inflection at 1e30 FLOPs; random = "
        f"{RANDOM_DRAWS} random subsets of the same cost; *_cov = coverage of the subset's boundary on all models.",
    )
    print(f"\n(bench/predictors_boundary.py: {time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
