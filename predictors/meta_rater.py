"""Meta-rater's regressor and search: score weights -> proxy validation loss (METHODS.md §6.3 steps 4-5).

The table is one row per proxy run: the weight vector it selected with (on the simplex) and the
held-out loss of the proxy trained on that selection. A LightGBM regressor (gbdt, L2, as RegMix's,
§9a) maps weights to loss; its error is measured by k-fold cross-validation (each fold predicted
by a model that never saw it, with a fixed number of rounds, so the estimate is honest) beside a
constant baseline (the mean loss of the other folds). Proxy runs are few (tens, not RegMix's
hundreds), so leaves may hold as few as ``max(2, n // 10)`` runs. The search draws many weight
vectors from a flat Dirichlet, predicts each, and returns the mean of the ``top_k`` lowest
(RegMix's averaging, which METHODS §11 lists for Meta-rater too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

N_SAMPLES = 100_000
TOP_K = 128


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None  # undefined for constant predictions
    return float(spearmanr(a, b)[0])


@dataclass
class WeightRegressor:
    """LightGBM on (weights -> loss), with k-fold cross-validated error."""

    n_folds: int = 5
    rounds: int = 100
    learning_rate: float = 0.05
    num_leaves: int = 7
    seed: int = 0
    num_threads: int = 1
    model_: Any = None
    backtest_: dict = field(default_factory=dict)

    def _params(self, n: int) -> dict:
        return {
            "objective": "regression",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": max(2, n // 10),
            "min_data_in_bin": 1,
            "feature_fraction": 0.8,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "verbosity": -1,
        }

    def _boost(self, x: np.ndarray, y: np.ndarray):
        import lightgbm as lgb

        data = lgb.Dataset(x, y, params={"min_data_in_bin": 1, "verbosity": -1})
        return lgb.train(self._params(len(y)), data, num_boost_round=self.rounds)

    def fit(self, x: np.ndarray, y: np.ndarray) -> WeightRegressor:
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if x.ndim != 2 or len(x) != len(y):
            raise ValueError(f"weights ({x.shape}) and losses ({y.shape}) do not match row for row")
        if len(y) < 4:
            raise ValueError(f"{len(y)} proxy runs are too few to fit the regressor (need at least 4)")
        if not np.isfinite(y).all():
            raise ValueError("a proxy loss is not finite")
        k = min(self.n_folds, len(y))
        folds = np.array_split(np.random.default_rng(self.seed).permutation(len(y)), k)
        oof, base = np.zeros(len(y)), np.zeros(len(y))
        for held in folds:
            train = np.setdiff1d(np.arange(len(y)), held)
            oof[held] = self._boost(x[train], y[train]).predict(x[held], num_threads=self.num_threads)
            base[held] = y[train].mean()
        self.model_ = self._boost(x, y)
        self.backtest_ = {
            "scheme": f"{k}-fold cross-validation over the proxy runs, {self.rounds} rounds per model",
            "n": int(len(y)),
            "mae": float(np.mean(np.abs(oof - y))),
            "rmse": float(np.sqrt(np.mean((oof - y) ** 2))),
            "spearman": _spearman(oof, y),
            "baseline_mae": float(np.mean(np.abs(base - y))),  # predicting the other folds' mean
            "loss_range": [float(y.min()), float(y.max())],
        }
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.model_ is None:
            raise ValueError("the weight regressor is not fitted; call fit() first")
        return self.model_.predict(
            np.atleast_2d(np.asarray(x, dtype=np.float64)), num_threads=self.num_threads
        )


def search_weights(
    regressor: WeightRegressor,
    n_columns: int,
    n_samples: int = N_SAMPLES,
    top_k: int = TOP_K,
    seed: int = 0,
) -> dict[str, Any]:
    """The mean of the ``top_k`` of ``n_samples`` flat-Dirichlet weight vectors with the lowest
    predicted loss: ``{"weights": array, "predicted": loss of that mean, "top_k_predicted": ...}``."""
    from assay.predictors.mixture_search import sample_mixtures

    if not 1 <= top_k <= n_samples:
        raise ValueError(f"need 1 <= top_k <= n_samples (got top_k={top_k}, n_samples={n_samples})")
    draws, _ = sample_mixtures(
        np.full(n_columns, 1.0 / n_columns), n_samples, np.random.default_rng(seed), n_columns
    )
    predicted = regressor.predict(draws)
    best = np.argsort(predicted, kind="stable")[:top_k]
    weights = draws[best].mean(axis=0)
    weights /= weights.sum()
    return {
        "weights": weights,
        "predicted": float(regressor.predict(weights)[0]),
        "top_k_predicted": float(predicted[best].mean()),
        "n_samples": int(n_samples),
        "top_k": int(top_k),
    }
