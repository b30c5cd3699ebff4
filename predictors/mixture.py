"""Mixture regression: mixture weights -> validation loss (RegMix, METHODS §9a; mixing law, §9c).

Three regressors share one interface:

* ``lightgbm`` — RegMix's gradient-boosted trees. The training mixtures are cut into k folds;
  one model per fold is trained on the other folds and stops early on its own fold (held-out
  *training* mixtures, never the test set), and the prediction is the mean of the k models.
* ``linear`` — RegMix's linear baseline: least squares on the raw weights.
* ``mixing_law`` — L = c + k·exp(Σ t_j r_j) (see ``predictors.mixing_law``).

The table is either layout of ``predictors.mixture_data``: RegMix's wide files, or recipes
(rows recipe, domain, weight) joined with one task/metric of a long results file, keyed by
``recipe``. The target is one loss (or result) column or ``mean``. For ``mean`` one regressor is
fitted per validation domain and their predictions are averaged: on the RegMix data that ranks
held-out mixtures far better than regressing the averaged loss directly (bench/predictors_mixture.py).

Intervals come from held-out residuals: the k-fold out-of-fold residuals of the training
mixtures give the lower and upper quantiles added to a prediction. For LightGBM the fold that
scores a model also chose its stopping round, so those residuals are slightly optimistic.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from assay.predictors.mixing_law import MixingLaw, fit_mixing_law
from assay.predictors.mixture_data import (
    domain_name,
    key_column,
    mixture_vector,
    resolve_target,
    split_columns,
    weight_matrix,
)

METHODS = ("lightgbm", "linear", "mixing_law")
VERSION = "1"


MIN_LEAF = 10  # rows per leaf, chosen on RegMix 1M -> 60M (bench/predictors_mixture.py; LightGBM: 20)


def auto_min_leaf(n_rows: int) -> int:
    """``MIN_LEAF`` rows per leaf, or a quarter of the rows (at least 2) when fewer than 4 x that:
    a tree needs twice min_leaf rows to split, so on a 15-recipe table a fixed 10 (or LightGBM's
    20) would leave every model a constant."""
    return min(MIN_LEAF, max(2, n_rows // 4))


def _folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    return np.array_split(np.random.default_rng(seed).permutation(n), k)


def rank_metrics(predicted: np.ndarray, observed: np.ndarray) -> dict[str, float]:
    """Spearman ρ, Pearson r and mean absolute error of predictions against observations."""
    from scipy.stats import pearsonr, spearmanr

    return {
        "spearman": float(spearmanr(predicted, observed)[0]),
        "pearson": float(pearsonr(predicted, observed)[0]),
        "mae": float(np.mean(np.abs(predicted - observed))),
    }


@dataclass
class MixturePredictor:
    """Predicts a target validation loss (or task result) from mixture weights; see the module docstring."""

    method: str = "lightgbm"
    target: str = "pile_cc"
    n_folds: int = 5
    # repeated k-fold: more bagged models (RegMix uses one split). 3 repeats rank RegMix's 60M test
    # mixtures 0.0004 better (bench/predictors_mixture.py) at 3x the fitting, search and JSON cost: not the default
    n_repeats: int = 1
    seed: int = 42  # RegMix's seed
    # RegMix fits lr 1e-2; 5e-2 ranks the held-out mixtures as well (ρ 0.993 at both) with 5x fewer
    # trees, so the 100k-mixture search and the saved JSON are 5x smaller (bench/predictors_mixture.py)
    learning_rate: float = 0.05
    max_rounds: int = 1000  # RegMix num_iterations
    early_stopping: int = 20  # rounds without gain on the held-out fold (RegMix: 3, on its test set)
    # num_leaves and min_leaf chosen on RegMix 1M-train -> 60M-test transfer (bench/predictors_mixture.py;
    # 7 leaves and 20 rows per leaf before, 0.0007 lower in mean Spearman ρ on the choosing columns)
    num_leaves: int = 15
    # LightGBM min_data_in_leaf; None: auto_min_leaf of the rows a model fits on (10, or a quarter
    # of the rows when fewer than 40; the quarter rule was set on datablations, bench/predictors_forecast.py)
    min_leaf: int | None = None
    subsample: float = 0.8
    colsample: float = 0.8
    interval: float = 0.9  # coverage aimed at by [lower, upper]
    num_threads: int = 1
    domains_: list[str] = field(default_factory=list)
    target_columns_: list[str] = field(default_factory=list)
    models_: dict[str, list[Any]] = field(default_factory=dict)
    prior_: list[float] = field(default_factory=list)
    residual_quantiles_: tuple[float, float] = (0.0, 0.0)
    fitted_on_: dict = field(default_factory=dict)
    backtest_: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method '{self.method}'; use one of {', '.join(METHODS)}")
        if self.n_folds < 2:
            raise ValueError("n_folds must be at least 2 (early stopping needs a held-out fold)")

    # ---- fitting -------------------------------------------------------------------------
    def fit(self, table: pl.DataFrame) -> MixturePredictor:
        """Fit on a joined table: ``index``, weight columns, loss columns (metric/… or …_loss)."""
        weights, losses = split_columns(table)
        if not weights:
            raise ValueError("the table has no weight columns")
        self.domains_ = weights
        self.target_columns_ = resolve_target(losses, self.target)
        if table.height < 2 * self.n_folds:
            raise ValueError(f"{table.height} mixtures are too few for {self.n_folds} folds")
        x = weight_matrix(table, weights)
        self.prior_ = (x.mean(axis=0) / x.mean(axis=0).sum()).tolist()
        self.models_, out_of_fold, rounds = {}, [], []
        for column in self.target_columns_:
            y = table[column].to_numpy().astype(float)
            models, oof, used = self._fit_column(x, y)
            self.models_[column] = models
            out_of_fold.append(oof)
            rounds += used
        observed = self._target_values(table)
        oof = np.mean(out_of_fold, axis=0)
        residuals = observed - oof
        tail = (1.0 - self.interval) / 2
        self.residual_quantiles_ = (
            float(np.quantile(residuals, tail)),
            float(np.quantile(residuals, 1 - tail)),
        )
        self.fitted_on_ = {
            "n_mixtures": table.height,
            "domains": [domain_name(d) for d in weights],
            "target_columns": self.target_columns_,
            "target_min": float(observed.min()),
            "target_max": float(observed.max()),
            # the corner of the simplex the training mixtures cover, for range checks
            "weight_max": [float(v) for v in (x / x.sum(axis=1, keepdims=True)).max(axis=0)],
        }
        if rounds:
            self.fitted_on_["boosting_rounds"] = {
                "min": min(rounds),
                "max": max(rounds),
                "n_models": len(rounds),
            }
        self.backtest_ = {
            "out_of_fold": {
                "scheme": f"{self.n_folds}-fold out-of-fold on the training mixtures",
                "n": table.height,
                **rank_metrics(oof, observed),
            }
        }
        return self

    def _fit_column(self, x: np.ndarray, y: np.ndarray) -> tuple[list[Any], np.ndarray, list[int]]:
        oof_sum, oof_count = np.zeros(len(y)), np.zeros(len(y))
        models, rounds = [], []
        for repeat in range(self.n_repeats):
            folds = _folds(len(y), self.n_folds, self.seed + repeat)
            for i, held in enumerate(folds):
                train = np.setdiff1d(np.arange(len(y)), held)
                if self.method == "lightgbm":
                    booster, used = self._boost(
                        x[train], y[train], x[held], y[held], self.seed + 100 * repeat + i
                    )
                    models.append(booster)
                    rounds.append(used)
                    oof_sum[held] += booster.predict(x[held], num_threads=self.num_threads)
                else:
                    oof_sum[held] += _predict_one_model(
                        self.method, self._fit_simple(x[train], y[train]), x[held]
                    )
                oof_count[held] += 1
        if self.method != "lightgbm":
            models = [self._fit_simple(x, y)]
        return models, oof_sum / oof_count, rounds

    def _fit_simple(self, x: np.ndarray, y: np.ndarray) -> Any:
        if self.method == "linear":
            design = np.hstack([np.ones((len(x), 1)), x])
            return np.linalg.lstsq(design, y, rcond=None)[0]
        return fit_mixing_law(x, y, seed=self.seed)

    def _boost(
        self, x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, seed: int
    ) -> tuple[Any, int]:
        import lightgbm as lgb

        params = {
            "objective": "regression",  # RegMix: gbdt, L2 regression
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_leaf if self.min_leaf is not None else auto_min_leaf(len(y)),
            "bagging_fraction": self.subsample,
            "bagging_freq": 1 if self.subsample < 1 else 0,
            "feature_fraction": self.colsample,
            "seed": seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "verbosity": -1,
        }
        train = lgb.Dataset(x, y, free_raw_data=False)
        valid = lgb.Dataset(xv, yv, reference=train)
        booster = lgb.train(
            params,
            train,
            num_boost_round=self.max_rounds,
            valid_sets=[valid],
            callbacks=[lgb.early_stopping(self.early_stopping, verbose=False)],
        )
        best = booster.best_iteration or self.max_rounds
        # keep only the trees up to the stopping round, as the saved model will
        return lgb.Booster(model_str=booster.model_to_string(num_iteration=best)), best

    # ---- prediction ----------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not self.models_:
            raise ValueError("the mixture predictor is not fitted; call fit() or load one with from_json()")

    def predict_matrix(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(prediction, spread across the bagged models) for rows of weights in ``domains_`` order."""
        self._check_fitted()
        x = np.atleast_2d(np.asarray(x, dtype=float))
        per_model = 0.0
        for models in self.models_.values():
            per_model = per_model + np.stack(
                [_predict_one_model(self.method, m, x, self.num_threads) for m in models]
            )
        per_model = per_model / len(self.models_)
        spread = per_model.std(axis=0) if len(per_model) > 1 else np.zeros(x.shape[0])
        return per_model.mean(axis=0), spread

    def predict(self, table: pl.DataFrame) -> pl.DataFrame:
        """One row per mixture: its key (recipe or index, when the table has one), predicted,
        lower, upper, spread."""
        self._check_fitted()
        predicted, spread = self.predict_matrix(weight_matrix(table, self.domains_))
        low, high = self.residual_quantiles_
        out = pl.DataFrame(
            {"predicted": predicted, "lower": predicted + low, "upper": predicted + high, "spread": spread}
        )
        key = key_column(table)
        if key is not None:
            out = out.insert_column(0, table[key])
        return out

    def predict_mixture(self, mixture: dict[str, float]) -> dict[str, float]:
        """Predicted target loss of one mixture {domain: weight}, with the held-out-residual interval.

        Domains may be full column names or short names (``pile_cc``); absent domains weigh 0 and
        the weights are renormalised to sum to 1.
        """
        self._check_fitted()
        predicted, spread = self.predict_matrix(mixture_vector(mixture, self.domains_))
        low, high = self.residual_quantiles_
        value = float(predicted[0])
        return {"predicted": value, "lower": value + low, "upper": value + high, "spread": float(spread[0])}

    def range_note(self, mixture: dict[str, float]) -> str | None:
        """Domains whose weight exceeds every training mixture's (the regressor extrapolates there)."""
        high = self.fitted_on_.get("weight_max")
        if not high:
            return None
        x = mixture_vector(mixture, self.domains_)
        over = [
            f"{domain_name(d)} {w:.2f} > {h:.2f}" for d, w, h in zip(self.domains_, x, high) if w > h + 1e-9
        ]
        return f"weights beyond every training mixture: {', '.join(over)}" if over else None

    def _target_values(self, table: pl.DataFrame) -> np.ndarray:
        missing = [c for c in self.target_columns_ if c not in table.columns]
        if missing:
            raise ValueError(f"the table lacks the target loss columns {missing}")
        return table.select(self.target_columns_).to_numpy().astype(float).mean(axis=1)

    def backtest(self, table: pl.DataFrame) -> pl.DataFrame:
        """Error on held-out mixtures (a joined table with losses): ρ, r, MAE and interval coverage."""
        observed = self._target_values(table)
        predicted = self.predict(table)
        inside = (observed >= predicted["lower"].to_numpy()) & (observed <= predicted["upper"].to_numpy())
        row = {
            "method": self.method,
            "target": self.target,
            "n": table.height,
            **rank_metrics(predicted["predicted"].to_numpy(), observed),
            "coverage": float(inside.mean()),
        }
        return pl.DataFrame([row])

    # ---- persistence ---------------------------------------------------------------------
    def to_json(self) -> dict:
        self._check_fitted()
        params = {
            k: getattr(self, k)
            for k in (
                "method", "target", "n_folds", "n_repeats", "seed", "learning_rate", "max_rounds",
                "early_stopping", "num_leaves", "min_leaf", "subsample", "colsample", "interval",
            )
        }  # fmt: skip
        return {
            "kind": "mixture",
            "version": VERSION,
            "params": params,
            "domains": self.domains_,
            "target_columns": self.target_columns_,
            "prior": self.prior_,
            "interval": {
                "source": "k-fold out-of-fold residuals on the training mixtures",
                "level": self.interval,
                "residual_quantiles": list(self.residual_quantiles_),
            },
            "models": {c: [_model_to_json(self.method, m) for m in ms] for c, ms in self.models_.items()},
            "fitted_on": self.fitted_on_,
            "backtest": self.backtest_,
        }

    @classmethod
    def from_json(cls, d: dict) -> MixturePredictor:
        if d.get("kind") != "mixture":
            raise ValueError(f"not a mixture predictor (kind={d.get('kind')!r})")
        if str(d.get("version")) != VERSION:
            raise ValueError(f"mixture predictor version {d.get('version')!r}; this Assay reads {VERSION}")
        model = cls(**d["params"])
        model.domains_ = list(d["domains"])
        model.target_columns_ = list(d["target_columns"])
        model.prior_ = [float(v) for v in d["prior"]]
        low, high = d["interval"]["residual_quantiles"]
        model.residual_quantiles_ = (float(low), float(high))
        model.models_ = {c: [_model_from_json(model.method, m) for m in ms] for c, ms in d["models"].items()}
        model.fitted_on_ = d.get("fitted_on", {})
        model.backtest_ = d.get("backtest", {})
        return model


def _predict_one_model(method: str, model: Any, x: np.ndarray, num_threads: int = 1) -> np.ndarray:
    if method == "lightgbm":
        return model.predict(x, num_threads=num_threads)
    if method == "linear":
        return model[0] + x @ model[1:]
    return model.predict(x)


def _model_to_json(method: str, model: Any) -> Any:
    if method == "lightgbm":
        # the LightGBM model text compresses about 4x; it travels inside the JSON as a string
        return {
            "lightgbm_zlib_base64": base64.b64encode(
                zlib.compress(model.model_to_string().encode(), 9)
            ).decode()
        }
    if method == "linear":
        return {"intercept": float(model[0]), "coef": [float(v) for v in model[1:]]}
    return model.to_json()


def _model_from_json(method: str, d: dict) -> Any:
    if method == "lightgbm":
        import lightgbm as lgb

        return lgb.Booster(model_str=zlib.decompress(base64.b64decode(d["lightgbm_zlib_base64"])).decode())
    if method == "linear":
        return np.array([d["intercept"], *d["coef"]], dtype=float)
    return MixingLaw.from_json(d)


def backtest_methods(
    train: pl.DataFrame,
    test: pl.DataFrame,
    targets: tuple[str, ...] = ("pile_cc", "mean"),
    methods: tuple[str, ...] = METHODS,
    **settings: Any,
) -> pl.DataFrame:
    """Fit every method on ``train`` for every target and score it on ``test``, side by side."""
    rows = []
    for target in targets:
        for method in methods:
            model = MixturePredictor(method=method, target=target, **settings).fit(train)
            rows.append(
                model.backtest(test).with_columns(
                    pl.lit(model.backtest_["out_of_fold"]["spearman"]).alias("cv_spearman")
                )
            )
    return pl.concat(rows)


def choose_settings(
    train: pl.DataFrame,
    test: pl.DataFrame,
    grid: dict[str, Sequence[Any]],
    targets: Sequence[str],
    **fixed: Any,
) -> pl.DataFrame:
    """Every combination of ``grid`` fitted on ``train`` and scored on ``test``, best first.

    The score of a combination is the mean Spearman ρ over ``targets`` (loss columns or short
    names), each fitted as its own predictor; ``fixed`` holds the settings that do not vary.
    Ties keep the grid's order, so list the cheaper value of a setting first. The test set
    chooses here: its figures are "used to choose", never a validation of the choice.
    """
    import itertools
    import time

    if not grid or not targets:
        raise ValueError("choose_settings needs a non-empty grid and at least one target")
    names = list(grid)
    rows = []
    for values in itertools.product(*(grid[n] for n in names)):
        settings = {**fixed, **dict(zip(names, values))}
        started = time.time()
        scores = [
            MixturePredictor(target=t, **settings).fit(train).backtest(test).row(0, named=True)
            for t in targets
        ]
        rho = [s["spearman"] for s in scores]
        rows.append(
            {
                **dict(zip(names, values)),
                "spearman_mean": float(np.mean(rho)),
                "spearman_min": float(np.min(rho)),
                "mae_mean": float(np.mean([s["mae"] for s in scores])),
                "seconds": time.time() - started,
            }
        )
    table = pl.DataFrame(rows).with_row_index("grid_order")
    return table.sort(["spearman_mean", "grid_order"], descending=[True, False]).drop("grid_order")


def best_settings(table: pl.DataFrame, grid: dict[str, Sequence[Any]], margin: float = 0.0) -> dict[str, Any]:
    """The settings a ``choose_settings`` table picks: the first combination in grid order whose
    mean ρ is within ``margin`` of the best. With each setting's cheaper values listed first and
    a margin of about twice the seed-to-seed spread, a costlier setting is taken only when it
    beats a cheaper one by more than noise; margin 0 takes the best row."""
    import itertools

    best = table["spearman_mean"].max()
    for values in itertools.product(*(grid[n] for n in grid)):
        match = table.filter(pl.all_horizontal([pl.col(n) == v for n, v in zip(grid, values)]))
        if match.height and match["spearman_mean"][0] >= best - margin:
            return dict(zip(grid, values))
    raise ValueError("the table holds none of the grid's combinations")


def cross_validate(table: pl.DataFrame, k: int = 5, seed: int = 0, **settings: Any) -> pl.DataFrame:
    """Out-of-sample prediction of every mixture of a joined table, with two baselines.

    The mixtures are cut into ``k`` folds (``k`` = the number of rows: leave one out); a predictor
    with ``settings`` is fitted on the other folds and predicts the held-out one, so no mixture is
    ever predicted by a model that saw it (its inner folds stop early on training mixtures only).
    Baselines, from the same training folds: ``mean`` (the mean target of the training mixtures)
    and ``nearest`` (the target of the training mixture nearest in L1 distance of the weights;
    ties are averaged). Returns key (when the table has one), observed, predicted, mean, nearest.
    """
    n = table.height
    if not 2 <= k <= n:
        raise ValueError(f"k = {k} folds for {n} mixtures; use 2 <= k <= {n}")
    probe = MixturePredictor(**settings)
    weights, losses = split_columns(table)
    probe.target_columns_ = resolve_target(losses, probe.target)
    observed = probe._target_values(table)
    x = weight_matrix(table, weights)
    x = x / x.sum(axis=1, keepdims=True)
    predicted, mean, nearest = np.zeros(n), np.zeros(n), np.zeros(n)
    folds = [np.array([i]) for i in range(n)] if k == n else _folds(n, k, seed)
    for held in folds:
        train = np.setdiff1d(np.arange(n), held)
        model = MixturePredictor(**settings).fit(table[train])
        predicted[held] = model.predict(table[held])["predicted"].to_numpy()
        mean[held] = observed[train].mean()
        for i in held:
            distance = np.abs(x[train] - x[i]).sum(axis=1)
            nearest[i] = observed[train][distance <= distance.min() + 1e-12].mean()
    out = pl.DataFrame({"observed": observed, "predicted": predicted, "mean": mean, "nearest": nearest})
    key = key_column(table)
    return out.insert_column(0, table[key]) if key is not None else out


def score_columns(
    frame: pl.DataFrame, columns: Sequence[str] = ("predicted", "nearest", "mean")
) -> pl.DataFrame:
    """Spearman ρ and MAE of each prediction column of a ``cross_validate`` frame against
    ``observed`` (ρ of the mean baseline is left empty: across folds it only mirrors the fold means)."""
    rows = []
    for column in columns:
        m = rank_metrics(frame[column].to_numpy(), frame["observed"].to_numpy())
        rows.append(
            {"predictor": column, "spearman": None if column == "mean" else m["spearman"], "mae": m["mae"]}
        )
    return pl.DataFrame(rows, schema={"predictor": pl.String, "spearman": pl.Float64, "mae": pl.Float64})
