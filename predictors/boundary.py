"""Capability boundary: the best score attainable at a pretraining-compute budget.

`BoundaryPredictor` fits the τ-quantile sigmoid of `boundary_fit` (arXiv 2602.15327) to a table
of models — one row per model, its pretraining FLOPs (or size and tokens) and a benchmark score —
and answers "what is the τ = 98 % frontier of this benchmark at 1e24 FLOPs?". Its backtests hold
out random folds (calibration) or the top of the compute range (extrapolation), each against the
constant-quantile baseline.
"""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl

from assay.predictors.boundary_data import (
    DataIssue,
    DataIssueWarning,
    prepare_compute_table,
    summarise_issues,
)
from assay.predictors.boundary_fit import (
    KAPPA,
    LAMBDA_B,
    N_REFINE,
    TAU,
    FitResult,
    SigmoidParams,
    binned_coverage_mae,
    boundary_curve,
    coverage,
    fit_quantile_sigmoid,
    pinball_loss,
)
from assay.predictors.ranges import beyond_range

KIND = "boundary"
VERSION = "1"


def _scores(table: pl.DataFrame, y: str) -> tuple[np.ndarray, list[DataIssue]]:
    """Scores as fractions in [0, 1]; NaN where missing or impossible (reported)."""
    if y not in table.columns:
        raise ValueError(f"no score column {y!r}; columns are {table.columns}")
    values = table[y].cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy().copy()
    models = table["model"].to_list()  # added by prepare_compute_table
    issues = []
    finite = values[np.isfinite(values)]
    if finite.size and finite.max() > 1.0 and finite.max() <= 100.0:
        values = values / 100.0
        issues.append(
            DataIssue("*", "percent_scores", f"{y} is on a 0-100 scale; divided by 100", "corrected")
        )
    for i in np.flatnonzero(~np.isfinite(values)):
        issues.append(DataIssue(models[i], "missing_score", f"no {y} score", "dropped"))
    for i in np.flatnonzero((values < 0.0) | (values > 1.0)):
        issues.append(DataIssue(models[i], "score_range", f"{y} = {values[i]:g} outside [0, 1]", "dropped"))
        values[i] = np.nan
    return values, issues


class BoundaryPredictor:
    """τ-quantile sigmoid of a benchmark score over z = log10(pretraining FLOPs).

    `x` names the compute column: "flops" (found or computed by `prepare_compute_table`, with the
    table's data errors corrected or dropped and reported) or any column of FLOPs, whose unit in
    brackets ('FLOPs (1E21)') sets the scale.
    """

    def __init__(
        self,
        y: str,
        x: str = "flops",
        *,
        tau: float = TAU,
        kappa: float = KAPPA,
        lambda_b: float = LAMBDA_B,
        n_refine: int = N_REFINE,
        continuation: bool = True,
        seed: int = 0,
    ):
        self.y, self.x = y, x
        self.tau, self.kappa, self.lambda_b = tau, kappa, lambda_b
        self.n_refine, self.continuation, self.seed = n_refine, continuation, seed
        self.params_: SigmoidParams | None = None
        self.fitted_on_: dict = {}
        self.backtest_: dict = {}
        self.data_issues_: list[DataIssue] = []

    # -- data ---------------------------------------------------------------------------------

    def compute_table(self, table: pl.DataFrame, warn: bool = True) -> tuple[pl.DataFrame, list[DataIssue]]:
        """The table with a raw-FLOPs column `flops`, every row checked by `prepare_compute_table`."""
        if self.x == "flops" and "flops" not in table.columns:
            flops_col = None  # find 'FLOPs (1E21)'-like columns, else 6·N·D
        elif self.x in table.columns:
            flops_col = self.x
        else:
            raise ValueError(f"no compute column {self.x!r}; columns are {table.columns}")
        return prepare_compute_table(table, flops_col=flops_col, warn=warn)

    def xy(self, table: pl.DataFrame, warn: bool = True) -> tuple[np.ndarray, np.ndarray, list[str], list]:
        """(z, y, models, issues) for the rows that have both compute and a valid score."""
        table, issues = self.compute_table(table, warn=warn)
        y, score_issues = _scores(table, self.y)
        if warn:
            for issue in score_issues:
                warnings.warn(
                    f"{issue.model}: {issue.detail} ({issue.action})", DataIssueWarning, stacklevel=3
                )
        keep = np.isfinite(y)
        z = np.log10(table["flops"].to_numpy())[keep]
        models = [m for m, k in zip(table["model"].to_list(), keep) if k]
        return z, y[keep], models, issues + score_issues

    # -- fit / predict ------------------------------------------------------------------------

    def _fit_arrays(self, z: np.ndarray, y: np.ndarray) -> FitResult:
        return fit_quantile_sigmoid(
            z,
            y,
            tau=self.tau,
            kappa=self.kappa,
            lambda_b=self.lambda_b,
            n_refine=self.n_refine,
            continuation=self.continuation,
            seed=self.seed,
        )

    def fit(self, table: pl.DataFrame, warn: bool = True) -> BoundaryPredictor:
        """Fit on every row with compute and a score; records in-sample calibration and data issues."""
        z, y, _, issues = self.xy(table, warn=warn)
        self.data_issues_ = issues
        result = self._fit_arrays(z, y)
        self.params_ = result.params
        q = boundary_curve(z, self.params_)
        cov = coverage(y, q)
        self.fitted_on_ = {
            "n": int(len(z)),
            "z_min": float(z.min()),
            "z_max": float(z.max()),
            "objective": result.objective,
            "coverage": cov,
            "coverage_error": abs(cov - self.tau),
            "pinball": pinball_loss(y, q, self.tau),
            "binned_coverage_mae": binned_coverage_mae(z, y, q, self.tau),
            "data_issues": summarise_issues(issues),
        }
        return self

    def _check_fitted(self) -> SigmoidParams:
        if self.params_ is None:
            raise RuntimeError("BoundaryPredictor is not fitted; call fit(table) or load from_json first")
        return self.params_

    def boundary_at(self, flops: np.ndarray | float) -> np.ndarray:
        """The τ-quantile boundary at raw FLOPs values."""
        return boundary_curve(np.log10(np.asarray(flops, dtype=float)), self._check_fitted())

    def range_note(self, flops: float) -> str | None:
        """How far a FLOPs budget lies outside the compute range of the models the fit saw."""
        lo, hi = self.fitted_on_.get("z_min"), self.fitted_on_.get("z_max")
        if lo is None or hi is None:
            return None
        return beyond_range({"FLOPs": (float(flops), [10.0**lo, 10.0**hi])})

    def predict(self, table: pl.DataFrame) -> pl.DataFrame:
        """The table with `flops`, `z`, `boundary` (τ-quantile), `floor` and `ceiling` columns."""
        p = self._check_fitted()
        table, _ = self.compute_table(table, warn=False)
        z = np.log10(table["flops"].to_numpy())
        return table.with_columns(
            pl.Series("z", z),
            pl.Series("boundary", boundary_curve(z, p)),
            pl.lit(p.y0).alias("floor"),
            pl.lit(p.y0 + p.L).alias("ceiling"),
        )

    # -- backtest -----------------------------------------------------------------------------

    def _holdout_row(self, z, y, train, test, **labels) -> dict:
        """Fit on `train`, score on `test`, beside the constant τ-quantile of the training scores."""
        params = self._fit_arrays(z[train], y[train]).params
        q = boundary_curve(z[test], params)
        const = float(np.quantile(y[train], self.tau))
        pin, base = (
            pinball_loss(y[test], q, self.tau),
            pinball_loss(y[test], np.full(test.sum(), const), self.tau),
        )
        cov = coverage(y[test], q)
        return {
            **labels,
            "n_train": int(train.sum()),
            "n_test": int(test.sum()),
            "coverage": cov,
            "coverage_error": abs(cov - self.tau),
            "pinball": pin,
            "baseline_coverage": coverage(y[test], np.full(test.sum(), const)),
            "baseline_pinball": base,
            "pinball_reduction": 1.0 - pin / base if base > 0 else float("nan"),
            "_q": q,
            "_const": np.full(test.sum(), const),
            "_test": test,
        }

    def backtest(
        self,
        table: pl.DataFrame,
        split: str = "random",
        *,
        folds: int = 5,
        repeats: int = 1,
        train_fraction: float = 0.7,
        seed: int = 0,
    ) -> pl.DataFrame:
        """Held-out error: `random` K-fold (one row per fold plus a `pooled` row over all held-out
        predictions) or `compute` (fit on the lowest `train_fraction` of FLOPs, test on the rest)."""
        z, y, _, _ = self.xy(table, warn=False)
        rows = []
        if split == "random":
            rng = np.random.default_rng(seed)
            for r in range(repeats):
                fold_of = np.empty(len(z), dtype=int)
                fold_of[rng.permutation(len(z))] = np.arange(len(z)) % folds
                for k in range(folds):
                    rows.append(
                        self._holdout_row(
                            z, y, fold_of != k, fold_of == k, split=split, repeat=r, fold=str(k)
                        )
                    )
            q = np.concatenate([row["_q"] for row in rows])
            const = np.concatenate([row["_const"] for row in rows])
            y_all = np.concatenate([y[row["_test"]] for row in rows])
            z_all = np.concatenate([z[row["_test"]] for row in rows])
            pin, base = pinball_loss(y_all, q, self.tau), pinball_loss(y_all, const, self.tau)
            pooled = {
                "split": split,
                "repeat": -1,
                "fold": "pooled",
                "n_train": int(round(np.mean([row["n_train"] for row in rows]))),
                "n_test": len(y_all),
                "coverage": coverage(y_all, q),
                "coverage_error": abs(coverage(y_all, q) - self.tau),
                "pinball": pin,
                "baseline_coverage": coverage(y_all, const),
                "baseline_pinball": base,
                "pinball_reduction": 1.0 - pin / base if base > 0 else float("nan"),
                "binned_coverage_mae": binned_coverage_mae(z_all, y_all, q, self.tau),
            }
        elif split == "compute":
            order = np.sort(z)
            cut = order[max(3, int(round(train_fraction * len(z)))) - 1]
            rows.append(self._holdout_row(z, y, z <= cut, z > cut, split=split, repeat=0, fold="top"))
            pooled = None
        else:
            raise ValueError(f"unknown split {split!r}: use 'random' or 'compute'")
        clean = [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]
        if pooled is not None:
            clean.append(pooled)
        return pl.DataFrame(clean)

    def run_backtests(self, table: pl.DataFrame, folds: int = 5, train_fraction: float = 0.7) -> dict:
        """Random-fold and compute-split backtests, summarised into `self.backtest_` (saved in JSON)."""
        keys = ["n_test", "coverage", "coverage_error", "pinball", "baseline_pinball", "pinball_reduction"]
        random_rows = self.backtest(table, "random", folds=folds)
        compute_rows = self.backtest(table, "compute", train_fraction=train_fraction)
        pooled = random_rows.filter(pl.col("fold") == "pooled").row(0, named=True)
        top = compute_rows.row(0, named=True)
        self.backtest_ = {
            f"random_{folds}fold": {k: pooled[k] for k in keys},
            f"compute_top_{round(100 * (1 - train_fraction))}pct": {k: top[k] for k in ["n_train", *keys]},
        }
        return self.backtest_

    # -- JSON ---------------------------------------------------------------------------------

    def to_json(self) -> dict:
        p = self._check_fitted()
        return {
            "kind": KIND,
            "version": VERSION,
            "x": self.x,
            "y": self.y,
            "settings": {
                "tau": self.tau,
                "kappa": self.kappa,
                "lambda_b": self.lambda_b,
                "n_refine": self.n_refine,
                "continuation": self.continuation,
                "seed": self.seed,
            },
            "params": {**p.to_json(), "floor": p.y0, "ceiling": p.y0 + p.L},
            "fitted_on": self.fitted_on_,
            "backtest": self.backtest_,
            "data_issues": [issue.to_json() for issue in self.data_issues_],
        }

    @classmethod
    def from_json(cls, d: dict) -> BoundaryPredictor:
        if d.get("kind") != KIND:
            raise ValueError(f"not a boundary predictor: kind={d.get('kind')!r}")
        if str(d.get("version")) != VERSION:
            raise ValueError(f"boundary predictor version {d.get('version')!r}; this Assay reads {VERSION!r}")
        model = cls(d["y"], d.get("x", "flops"), **d.get("settings", {}))
        p = d["params"]
        model.params_ = SigmoidParams(p["y0"], p["L"], p["b"], p["z_star"])
        model.fitted_on_ = d.get("fitted_on", {})
        model.backtest_ = d.get("backtest", {})
        model.data_issues_ = [DataIssue(**issue) for issue in d.get("data_issues", [])]
        return model
