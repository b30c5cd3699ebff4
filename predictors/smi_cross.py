"""How the SMI line changes with model size, and the backtests a forecast is judged by.

The SMI paper (arXiv 2502.04066) fits one line `acc ≈ a·SMI + b` per model. A forecaster needs
the line of a model that was never trained, so `SizeTrend` makes every per-model coefficient
(slope, intercept, accuracy of facts never seen together) a function of the size N:

* at a fitted size it returns that model's own coefficient;
* between fitted sizes it interpolates linearly in ln N;
* beyond the fitted range it continues from the nearest end along the ln N trend of the
  `trend_sizes` nearest fitted sizes (a least-squares slope), multiplied by `damping`.

Why damped: over Pythia 160M→12B, GPT-Neo 125M→GPT-J 6B and BLOOM 560M→7.1B the slope grows
with ln N, then flattens (Pythia's slope is 0.635, 0.646, 0.643 at 2.8B, 6.9B, 12B). Keeping the
largest model's line undershoots while accuracy still grows, and the plain trend overshoots once
growth slows. In the forward backtests of `bench/predictors_smi.py` (19 splits of those families
whose largest fitted model has at least 410M parameters) half the local trend kept every target's
per-bin MAE at or below that of the target's own paper line; 0.4 and 0.6 stayed within 4 % of it,
while 0 (the largest model's line) and 1 (the plain trend) exceeded it by up to 65 % and 47 %.
It is a rule fitted to three families, not a law: the bench prints the sweep to re-check it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import polars as pl

DAMPING = 0.5  # share of the local ln N trend carried past the fitted sizes (see the module docstring)
TREND_SIZES = 3  # fitted sizes nearest the end whose ln N slope sets the trend


class SizeTrend:
    """Coefficients as a function of model size, from per-model values at a few sizes."""

    def __init__(
        self,
        sizes: Sequence[float],
        values: np.ndarray,
        damping: float = DAMPING,
        trend_sizes: int = TREND_SIZES,
    ):
        sizes = np.asarray(sizes, dtype=np.float64)
        values = np.asarray(values, dtype=np.float64).reshape(len(sizes), -1)
        if len(sizes) == 0:
            raise ValueError("SizeTrend needs at least one fitted model size")
        if np.any(sizes <= 0):
            raise ValueError(f"model sizes must be positive, got {sizes.tolist()}")
        if trend_sizes < 2:
            raise ValueError("trend_sizes must be at least 2 (a trend needs two sizes)")
        # several models of one size (reruns, two families) are averaged into one point
        unique = np.unique(sizes)
        self.log_sizes = np.log(unique)
        self.values = np.array([values[sizes == s].mean(axis=0) for s in unique])
        self.damping = float(damping)
        self.trend_sizes = int(trend_sizes)

    def _slope(self, idx: slice) -> np.ndarray:
        x = self.log_sizes[idx]
        y = self.values[idx]
        xc = x - x.mean()
        return (xc[:, None] * (y - y.mean(axis=0))).sum(axis=0) / (xc**2).sum()

    def __call__(self, model_size: float) -> np.ndarray:
        """The coefficient vector at `model_size` (parameters)."""
        if not model_size > 0:
            raise ValueError(f"model size must be positive, got {model_size}")
        t = math.log(model_size)
        if len(self.log_sizes) == 1:
            return self.values[0].copy()
        lo, hi = self.log_sizes[0], self.log_sizes[-1]
        if t > hi:
            slope = self._slope(slice(-self.trend_sizes, None))
            return self.values[-1] + self.damping * slope * (t - hi)
        if t < lo:
            slope = self._slope(slice(0, self.trend_sizes))
            return self.values[0] + self.damping * slope * (t - lo)
        return np.array(
            [np.interp(t, self.log_sizes, self.values[:, j]) for j in range(self.values.shape[1])]
        )

    def to_json(self) -> dict:
        return {
            "sizes": [float(v) for v in np.exp(self.log_sizes)],
            "values": self.values.tolist(),
            "damping": self.damping,
            "trend_sizes": self.trend_sizes,
        }

    @classmethod
    def from_json(cls, d: dict) -> SizeTrend:
        return cls(d["sizes"], np.asarray(d["values"]), d["damping"], d["trend_sizes"])


def bin_errors(x: np.ndarray, acc: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Errors of per-fact predictions, the way the SMI paper groups facts.

    `bin_mae`: facts grouped by their SMI value x; the mean over bins of |observed bin mean −
    predicted bin mean| (every bin counts once, as in the paper's fit). `fact_mae`: mean over
    facts of |acc − predicted|. `mean_error`: predicted minus observed mean accuracy (signed).
    """
    x = np.asarray(x, dtype=np.float64)
    acc = np.asarray(acc, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    observed = np.bincount(inverse, acc) / counts
    expected = np.bincount(inverse, predicted) / counts
    return {
        "bin_mae": float(np.abs(observed - expected).mean()),
        "fact_mae": float(np.abs(acc - predicted).mean()),
        "mean_error": float(predicted.mean() - acc.mean()),
        "n_bins": int(len(counts)),
        "n_facts": int(len(acc)),
    }


# ---- backtests: `make()` returns a fresh, unfitted predictor with the same settings --------------
def forecast_errors(fitted, part: pl.DataFrame, model_size: float) -> dict:
    """`bin_errors` of a fitted predictor on one model's facts (MI > 0); `mean_error` over all facts."""
    pred = fitted.predict(part, model_size)
    acc = part["acc"].cast(pl.Float64).to_numpy()
    kept = pred["smi"].is_not_null().to_numpy()
    errs = bin_errors(pred["smi"].to_numpy()[kept], acc[kept], pred["predicted"].to_numpy()[kept])
    errs["mean_error"] = float(pred["predicted"].mean() - acc.mean())
    return errs


def backtest_by_facts(make: Callable, table: pl.DataFrame, folds: int, seed: int) -> pl.DataFrame:
    """k folds of fact ids (a fact leaves every model at once); each model at its own size."""
    ids = table["fact_id"].unique(maintain_order=True)
    order = np.random.default_rng(seed).permutation(len(ids))
    table = table.join(pl.DataFrame({"fact_id": ids, "fold": order % folds}), on="fact_id", how="left")
    rows = []
    for fold in range(folds):
        fitted = make().fit(table.filter(pl.col("fold") != fold).drop("fold"), backtest=False)
        for (model,), part in table.filter(pl.col("fold") == fold).group_by("model", maintain_order=True):
            size = float(part["model_size"][0])
            rows.append(
                {"model": model, "model_size": size, "fold": fold} | forecast_errors(fitted, part, size)
            )
    return pl.DataFrame(rows)


def backtest_by_size(make: Callable, table: pl.DataFrame) -> pl.DataFrame:
    """Forward chaining: each size predicted from all strictly smaller ones, beside its own fit."""
    sizes = sorted(set(table["model_size"].to_list()))
    rows = []
    for size in sizes[1:]:
        train = table.filter(pl.col("model_size") < size)
        fitted = make().fit(train, backtest=False)
        for (model,), part in table.filter(pl.col("model_size") == size).group_by(
            "model", maintain_order=True
        ):
            floor = forecast_errors(make().fit(part, backtest=False), part, size)
            row = {"model": model, "model_size": size, "fit_on_max_size": float(train["model_size"].max())}
            row |= forecast_errors(fitted, part, size)
            row |= {"floor_bin_mae": floor["bin_mae"], "floor_fact_mae": floor["fact_mae"]}
            row["bin_mae_ratio"] = row["bin_mae"] / floor["bin_mae"] if floor["bin_mae"] > 0 else float("nan")
            rows.append(row)
    return pl.DataFrame(rows)


def backtest_summary(rows: pl.DataFrame, hold_out: str) -> dict:
    """What a fit JSON keeps of its backtest; `mean_error_max` sets the interval of the mean."""
    summary = {
        "hold_out": hold_out,
        "bin_mae": float(rows["bin_mae"].mean()),
        "fact_mae": float(rows["fact_mae"].mean()),
        "mean_error_rms": float(np.sqrt((rows["mean_error"] ** 2).mean())),
        "mean_error_max": float(rows["mean_error"].abs().max()),
    }
    if hold_out == "size":
        summary["largest"] = rows.row(rows.height - 1, named=True)
        summary["rows"] = rows.to_dicts()
    else:
        summary["folds"] = int(rows["fold"].n_unique())
    return summary
