"""Capability boundary: the best score attainable at a pretraining-compute budget.

`BoundaryPredictor` fits the τ-quantile sigmoid of `boundary_fit` (arXiv 2602.15327) to a table
of models — one row per model, its pretraining FLOPs (or size and tokens) and a benchmark score —
and answers "what is the τ = 98 % frontier of this benchmark at 1e24 FLOPs?". Its backtests hold
out random folds (calibration), the top of the compute range (extrapolation), or later releases
(temporal: fit on models released before a cut date, test on the next period, as the paper's
P_t -> P_t+1 validation), each against the constant-quantile baseline.
"""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl

from assay.predictors.boundary_data import (
    DataIssue,
    DataIssueWarning,
    month_index,
    month_label,
    prepare_compute_table,
    release_months,
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

WINDOWS = ("expanding", "period")  # temporal training set: every earlier release, or the last period only
MIN_TRAIN, MIN_TEST = 20, 8  # automatic cut dates need this many models before and in the period


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
        kept, y, issues = self._rows(table, warn)
        return np.log10(kept["flops"].to_numpy()), y, kept["model"].to_list(), issues

    def _rows(self, table: pl.DataFrame, warn: bool) -> tuple[pl.DataFrame, np.ndarray, list]:
        """The checked rows with compute and a valid score, their scores, and every issue found."""
        table, issues = self.compute_table(table, warn=warn)
        y, score_issues = _scores(table, self.y)
        if warn:
            for issue in score_issues:
                warnings.warn(
                    f"{issue.model}: {issue.detail} ({issue.action})", DataIssueWarning, stacklevel=4
                )
        keep = np.isfinite(y)
        return table.filter(pl.Series(keep)), y[keep], issues + score_issues

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
            "coverage_gap": cov - self.tau,  # signed: below 0 the boundary is beaten too often
            "n_above": int(np.sum(y[test] > q)),
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
        dates: str | None = None,
        cuts: list[str] | None = None,
        window: str = "expanding",
    ) -> pl.DataFrame:
        """Held-out error: `random` K-fold (one row per fold plus a `pooled` row over all held-out
        predictions), `compute` (fit on the lowest `train_fraction` of FLOPs, test on the rest) or
        `temporal` (see `temporal_split`; `dates` names the release-date column, or "builtin")."""
        if split == "temporal":
            return self._temporal_backtest(table, dates, cuts, window)
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
                "coverage_gap": coverage(y_all, q) - self.tau,
                "n_above": int(np.sum(y_all > q)),
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
            raise ValueError(f"unknown split {split!r}: use 'random', 'compute' or 'temporal'")
        clean = [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]
        if pooled is not None:
            clean.append(pooled)
        return pl.DataFrame(clean)

    def run_backtests(
        self,
        table: pl.DataFrame,
        folds: int = 5,
        train_fraction: float = 0.7,
        dates: str | None = None,
        cuts: list[str] | None = None,
        window: str = "expanding",
    ) -> dict:
        """Random-fold, compute-split and (with `dates`) temporal backtests, summarised into
        `self.backtest_` (saved in JSON)."""
        keys = ["n_test", "coverage", "coverage_error", "pinball", "baseline_pinball", "pinball_reduction"]
        random_rows = self.backtest(table, "random", folds=folds)
        compute_rows = self.backtest(table, "compute", train_fraction=train_fraction)
        pooled = random_rows.filter(pl.col("fold") == "pooled").row(0, named=True)
        top = compute_rows.row(0, named=True)
        self.backtest_ = {
            f"random_{folds}fold": {k: pooled[k] for k in keys},
            f"compute_top_{round(100 * (1 - train_fraction))}pct": {k: top[k] for k in ["n_train", *keys]},
        }
        if dates is not None:
            rows = self.backtest(table, "temporal", dates=dates, cuts=cuts, window=window)
            per_cut = rows.filter(pl.col("fold") != "pooled")
            all_cuts = rows.filter(pl.col("fold") == "pooled").row(0, named=True)
            self.backtest_[f"temporal_{window}"] = {
                **{k: all_cuts[k] for k in [*keys, "coverage_gap", "n_above"]},
                "dates": dates,
                "cuts": [
                    {
                        k: r[k]
                        for k in ["fold", "train_from", "test_to", "n_train", "n_test", "coverage", "n_above"]
                    }
                    for r in per_cut.iter_rows(named=True)
                ],
            }
        return self.backtest_

    # -- temporal validation ------------------------------------------------------------------

    def release_months(self, table: pl.DataFrame, dates: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(z, y, release month index) for the rows with compute and a score; month NaN if unknown."""
        kept, y, _ = self._rows(table, warn=False)
        return np.log10(kept["flops"].to_numpy()), y, release_months(kept, dates)

    def _temporal_backtest(
        self, table: pl.DataFrame, dates: str | None, cuts: list[str] | None, window: str
    ) -> pl.DataFrame:
        if dates is None:
            raise ValueError("the temporal split needs release dates: dates=COLUMN, or dates='builtin'")
        z, y, months = self.release_months(table, dates)
        dated = np.isfinite(months)
        if dated.sum() < 2 * 4:
            raise ValueError(
                f"only {int(dated.sum())} rows have a release date; the temporal split needs more"
            )
        rows = []
        for train, test, labels in temporal_split(months, cuts, window):
            rows.append(self._holdout_row(z, y, train, test, split="temporal", repeat=0, **labels))
        if not rows:
            need = (
                f"automatic cuts need {MIN_TRAIN} dated models before and {MIN_TEST} in the next half year"
                if cuts is None
                else f"cuts {', '.join(cuts)} each need 4 dated models to fit on and one to test"
            )
            raise ValueError(f"no cut date leaves enough models before and after it ({need})")
        test_all = np.zeros(len(z), dtype=bool)
        q = np.full(len(z), np.nan)
        const = np.full(len(z), np.nan)
        for row in rows:
            q[row["_test"]], const[row["_test"]] = row["_q"], row["_const"]
            test_all |= row["_test"]
        yt, qt, ct = y[test_all], q[test_all], const[test_all]
        pin, base = pinball_loss(yt, qt, self.tau), pinball_loss(yt, ct, self.tau)
        cov = coverage(yt, qt)
        pooled = {
            "split": "temporal",
            "repeat": -1,
            "fold": "pooled",
            "window": window,
            "train_from": rows[0]["train_from"],
            "test_to": rows[-1]["test_to"],
            "n_train": int(round(np.mean([row["n_train"] for row in rows]))),
            "n_test": int(test_all.sum()),
            "coverage": cov,
            "coverage_error": abs(cov - self.tau),
            "coverage_gap": cov - self.tau,
            "n_above": int(np.sum(yt > qt)),
            "pinball": pin,
            "baseline_coverage": coverage(yt, ct),
            "baseline_pinball": base,
            "pinball_reduction": 1.0 - pin / base if base > 0 else float("nan"),
        }
        clean = [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]
        return pl.DataFrame([*clean, pooled]).with_columns(n_undated=pl.lit(int((~dated).sum())))

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


def half_year_cuts(months: np.ndarray, min_train: int = MIN_TRAIN, min_test: int = MIN_TEST) -> list[str]:
    """January and July cut dates with at least `min_train` dated models before the cut and
    `min_test` in the half year after it (the paper's periods are quarters; ~120 models allow halves)."""
    m = months[np.isfinite(months)]
    if m.size == 0:
        return []
    first, last = int(m.min()) // 6 * 6 + 6, int(m.max()) // 6 * 6
    out = []
    for c in range(first, last + 1, 6):
        if np.sum(m < c) >= min_train and np.sum((m >= c) & (m < c + 6)) >= min_test:
            out.append(month_label(c))
    return out


def temporal_split(
    months: np.ndarray, cuts: list[str] | None = None, window: str = "expanding"
) -> list[tuple[np.ndarray, np.ndarray, dict]]:
    """(train mask, test mask, labels) per cut date; rows without a date (NaN) are in neither.

    Cut k tests the models released in [cut_k, cut_k+1) (the last cut: from it on) and trains on
    every model released before cut_k (`expanding`) or only on [cut_k-1, cut_k) (`period`, the
    paper's P_t -> P_t+1; the first cut's period is everything before it). `cuts` None: the
    automatic half-year cuts of `half_year_cuts`. A cut whose sets are too small to fit (< 4
    models) or to test (none) is left out.
    """
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}: use one of {', '.join(WINDOWS)}")
    months = np.asarray(months, dtype=float)
    labels = half_year_cuts(months) if cuts is None else list(cuts)
    index = [month_index(c) for c in labels]
    if any(not np.isfinite(i) for i in index):
        raise ValueError(f"cut dates must look like 2023-07 (or 2023-07-01), got {labels}")
    if index != sorted(index) or len(set(index)) != len(index):
        raise ValueError(f"cut dates must be increasing, got {labels}")
    dated = np.isfinite(months)
    out = []
    for k, (label, c) in enumerate(zip(labels, index)):
        end = index[k + 1] if k + 1 < len(index) else np.inf
        start = index[k - 1] if window == "period" and k > 0 else -np.inf
        train = dated & (months < c) & (months >= start)
        test = dated & (months >= c) & (months < end)
        if train.sum() < 4 or not test.any():
            continue
        out.append(
            (
                train,
                test,
                {
                    "fold": label,
                    "window": window,
                    "train_from": month_label(months[train].min()),
                    "test_to": month_label(months[test].max()),
                },
            )
        )
    return out
