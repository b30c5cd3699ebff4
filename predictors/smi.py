"""SMI predictor: closed-book QA accuracy of a fact from how its subject and object co-occur in
the pretraining corpus (Jiang, Zhang et al., arXiv 2502.04066; METHODS.md §1.3–1.6).

Per fact, from document counts: the MI term `p_so·log2(p_so / (p_s·p_o))` (facts with MI ≤ 0 are
dropped); log2-binned to 0.2 with truncation toward zero; min-max normalised; raised to
`1 + 1/log2(N)` for a model of N parameters (SMI). Facts are grouped by that value, and one line
`acc ≈ a·SMI + b` is fitted to the bin means. `paper_fit` reproduces the paper's per-model tables
(CO-OCCUR and MI baselines included) to float precision; `SMIPredictor` turns the same fit into a
forecaster: fit on models of one or several sizes, predict per-fact accuracy for new counts
(a mixture's `fact_counts`) and a model size, with intervals and a backtest.

Choices beyond the paper, each documented where it is made:

* New counts are placed on the *fitted* scale: the min and max of log-binned MI are stored at fit
  time and reused, so a mixture's facts are comparable with the facts the line was fitted on;
  values outside that range are clamped to [0, 1], where the line has evidence.
* Facts with MI ≤ 0 (never seen together) get the mean accuracy such facts had in the fitted data.
* `weighting="bins"` (default) is the paper's unweighted fit over bin means; `"facts"` weights each
  bin by its number of facts (ordinary least squares over facts). The paper's line gives sparse
  tail bins as much say as dense ones and over-predicts the mean accuracy over all facts (by about
  0.04 on Pythia-12B); the facts line predicts that mean within 0.001 but fits tail bins worse.
* Across sizes, slope, intercept and the unseen-fact accuracy follow `smi_cross.CrossSize`: the
  fitted models' own values, interpolated in ln N, and beyond them the rule `rule` (chosen by
  leave-one-family-out, see `smi_cross`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np
import polars as pl

from assay.predictors.ranges import beyond_range
from assay.predictors.smi_cross import (
    ALPHA,
    DAMPING,
    DEFAULT_RULES,
    TREND_SIZES,
    WEIGHT,
    CrossSize,
    PooledLine,
    SizeTrend,
    backtest_by_facts,
    backtest_by_size,
    backtest_summary,
    check_rule,
)
from assay.predictors.smi_data import COUNT_COLUMNS, normalise_columns

KIND = "smi"
VERSION = "2"  # 2: cross-size rules and per-bin sums (version 1 fits read as rule "trend")
METHODS = ("CO-OCCUR", "MI", "SMI")
N_BANDS = 10  # bands of predicted accuracy with their own per-fact interval
BINS_PER_LOG2 = 5  # bins 0.2 wide in log2 (paper §1.4, `int(log2(m) * 5) / 5`)


def _log2(values: np.ndarray) -> np.ndarray:
    # math.log2, not np.log2: numpy differs by 1 ulp on some inputs, and a bin edge can hinge on it
    return np.fromiter((math.log2(v) for v in values.tolist()), dtype=np.float64, count=len(values))


def mutual_information(table: pl.DataFrame) -> np.ndarray:
    """The (s=1, o=1) term of the subject/object mutual information, per fact (paper §1.3).

    0 where subject and object never co-occur (or there are no documents).
    """
    seqs, subj, obj, both = (table[c].cast(pl.Float64).to_numpy() for c in COUNT_COLUMNS)
    ok = (both > 0) & (seqs > 0) & (subj > 0) & (obj > 0)
    p_s = subj[ok] / seqs[ok]
    p_o = obj[ok] / seqs[ok]
    p_so = both[ok] / seqs[ok]
    mi = np.zeros(len(seqs))
    mi[ok] = p_so * _log2(p_so / p_s / p_o)  # same operation order as the reference
    return mi


def log_bin(values: np.ndarray) -> np.ndarray:
    """`int(log2(v) * 5) / 5`: 0.2-wide bins in log2, truncating toward zero (paper §1.4)."""
    return np.trunc(_log2(np.asarray(values, dtype=np.float64)) * BINS_PER_LOG2) / BINS_PER_LOG2


def size_exponent(model_size: float) -> float:
    """`1 + 1/log2(N)`, the SMI size exponent (paper §1.4)."""
    if not model_size > 1:
        raise ValueError(f"model size must be a parameter count above 1, got {model_size}")
    return 1.0 + 1.0 / math.log2(model_size)


def normalise(binned: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if not hi > lo:
        raise ValueError("all facts fall in one log2 bin; SMI needs at least two distinct bins")
    return (binned - lo) / (hi - lo)


@dataclass
class MethodFit:
    """One row of the paper's per-model table."""

    model: str
    method: str
    slope: float
    intercept: float
    r2: float
    mse: float
    acc: float
    n_facts: int
    n_bins: int

    @property
    def x_intercept(self) -> float:
        return -self.intercept / self.slope if self.slope != 0 else float("nan")

    @property
    def upper_bound(self) -> float:
        """Predicted accuracy at normalised SMI = 1 (paper's "upper bound" a + b)."""
        return self.slope + self.intercept

    def to_dict(self) -> dict:
        return asdict(self) | {"x_intercept": self.x_intercept, "upper_bound": self.upper_bound}


def bin_fit(
    x: np.ndarray, acc: np.ndarray, weighting: str = "bins"
) -> tuple[float, float, float, float, int]:
    """Line over bin means; returns slope, intercept, R² over bins, MSE, number of bins.

    MSE as the paper defines it: per bin, the mean squared deviation of its facts from the line;
    then the mean over bins (every bin counts once).
    """
    from scipy import stats

    keys, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, acc) / counts
    if len(keys) < 2:
        raise ValueError("a line needs facts in at least two SMI bins")
    if weighting == "bins":
        fit = stats.linregress(keys, means)
        slope, intercept, r2 = float(fit.slope), float(fit.intercept), float(fit.rvalue**2)
    elif weighting == "facts":
        w = counts / counts.sum()
        xm, ym = (w * keys).sum(), (w * means).sum()
        slope = float((w * (keys - xm) * (means - ym)).sum() / (w * (keys - xm) ** 2).sum())
        intercept = float(ym - slope * xm)
        resid = means - (slope * keys + intercept)
        r2 = float(1 - (w * resid**2).sum() / (w * (means - ym) ** 2).sum())
    else:
        raise ValueError(f"weighting must be 'bins' or 'facts', got {weighting!r}")
    squared = (acc - (slope * x + intercept)) ** 2
    mse = float((np.bincount(inverse, squared) / counts).mean())
    return slope, intercept, r2, mse, len(keys)


def paper_fit(table: pl.DataFrame, model_size: float, model: str = "") -> dict[str, MethodFit]:
    """CO-OCCUR, MI and SMI fits of one model, exactly as the paper's tables (§1.4–1.6).

    All three keep the same facts (MI > 0); each normalises over those facts by itself.
    """
    table = normalise_columns(table)
    if "acc" not in table.columns:
        raise ValueError("fitting needs observed per-fact accuracy in an 'acc' column")
    mi = mutual_information(table)
    kept = mi > 0
    acc = table["acc"].cast(pl.Float64).to_numpy()[kept]
    out = {}
    for method in METHODS:
        raw = table["time_s1j1"].cast(pl.Float64).to_numpy()[kept] if method == "CO-OCCUR" else mi[kept]
        binned = log_bin(raw)
        x = normalise(binned, binned.min(), binned.max())
        if method == "SMI":
            x = x ** size_exponent(model_size)
        slope, intercept, r2, mse, n_bins = bin_fit(x, acc, "bins")
        out[method] = MethodFit(
            model, method, slope, intercept, r2, mse, float(acc.mean()), int(kept.sum()), n_bins
        )
    return out


def line_predictions(smi: np.ndarray, coefficients: dict[str, float]) -> np.ndarray:
    """Per-fact accuracy on the line, clipped to [0, 1]; facts without SMI (NaN): the unseen accuracy."""
    c = coefficients
    line = np.clip(c["slope"] * np.nan_to_num(smi) + c["intercept"], 0, 1)
    return np.where(np.isnan(smi), c["acc_unseen"], line)


class SMIPredictor:
    """Fit per-fact CBQA accuracy on counts of one or several model sizes; predict for new counts.

    `fit(table)` takes columns model, model_size, fact_id, time_seqs, time_subj, time_obj,
    time_s1j1, acc (see `load_model_table`); `predict(counts, model_size)` returns fact_id, smi,
    predicted, lower, upper; `expected_accuracy(predicted)` the mean with its interval.
    Beyond the fitted sizes the cross-size `rule` applies ("trend", "pool", "shrink", "power"
    with `damping`, `trend_sizes`, `weight`, `alpha`; see `smi_cross`); settings left out take
    the choice made for the weighting by leave-one-family-out (`smi_cross.DEFAULT_RULES`).
    """

    def __init__(
        self,
        weighting: str = "bins",
        rule: str | None = None,
        damping: float | None = None,
        trend_sizes: int = TREND_SIZES,
        weight: float | None = None,
        alpha: float | None = None,
        coverage: float = 0.9,
        folds: int = 5,
        seed: int = 0,
    ):
        if weighting not in ("bins", "facts"):
            raise ValueError(f"weighting must be 'bins' or 'facts', got {weighting!r}")
        # settings left out: the cross-size rule chosen for this weighting (smi_cross.DEFAULT_RULES)
        default = DEFAULT_RULES[weighting]
        self.weighting = weighting
        self.rule = default["rule"] if rule is None else rule
        self.damping = float(default.get("damping", DAMPING) if damping is None else damping)
        self.weight = float(default.get("weight", WEIGHT) if weight is None else weight)
        self.alpha = float(default.get("alpha", ALPHA) if alpha is None else alpha)
        check_rule(self.rule, self.weight, self.alpha)
        self.trend_sizes = trend_sizes
        self.coverage = coverage
        self.folds = folds
        self.seed = seed

    def _params(self) -> dict:
        return {
            k: getattr(self, k)
            for k in (
                "weighting",
                "rule",
                "damping",
                "trend_sizes",
                "weight",
                "alpha",
                "coverage",
                "folds",
                "seed",
            )
        }

    # ---- fit -------------------------------------------------------------------------------
    def fit(self, table: pl.DataFrame, backtest: bool = True) -> SMIPredictor:
        table = normalise_columns(table)
        missing = [c for c in ("model_size", "acc") if c not in table.columns]
        if missing:
            raise ValueError(f"fitting needs columns {missing} (model size and observed per-fact accuracy)")
        if "model" not in table.columns:
            table = table.with_columns(pl.col("model_size").cast(pl.Utf8).alias("model"))
        groups = [(str(m), part) for (m,), part in table.group_by("model", maintain_order=True)]
        mis = [mutual_information(part) for _, part in groups]
        binned_all = np.concatenate([log_bin(mi[mi > 0]) for mi in mis])
        if binned_all.size == 0:
            raise ValueError("no fact has MI > 0 (subject and object never co-occur); nothing to fit")
        self.lo_, self.hi_ = float(binned_all.min()), float(binned_all.max())
        self.models_ = []
        for (model, part), mi in zip(groups, mis):
            size = float(part["model_size"][0])
            acc = part["acc"].cast(pl.Float64).to_numpy()
            kept = mi > 0
            x = self._smi(mi[kept], size)
            slope, intercept, r2, mse, _ = bin_fit(x, acc[kept], self.weighting)
            unseen = float(acc[~kept].mean()) if (~kept).any() else float(np.clip(intercept, 0, 1))
            fitted = np.clip(slope * x + intercept, 0, 1)
            resid = acc[kept] - fitted
            self.models_.append(
                {
                    "model": model,
                    "model_size": size,
                    "n_facts": int(len(acc)),
                    "n_kept": int(kept.sum()),
                    "slope": slope,
                    "intercept": intercept,
                    "acc_unseen": unseen,
                    "interval_bands": self._bands(fitted, resid, acc[~kept]),
                    "residual_var": float(resid.var()),
                    "bins": self._bin_sums(mi[kept], acc[kept], acc[~kept]),
                    "paper": {k: v.to_dict() for k, v in paper_fit(part, size, model).items()},
                }
            )
        self.models_.sort(key=lambda m: m["model_size"])
        self._build_trend()
        self.backtest_ = None
        if backtest:
            hold_out = "size" if len({m["model_size"] for m in self.models_}) > 1 else "facts"
            rows = self.backtest(table, hold_out=hold_out)
            self.backtest_ = backtest_summary(rows, hold_out)
        return self

    def _bands(self, fitted: np.ndarray, resid: np.ndarray, unseen_acc: np.ndarray) -> dict:
        """Per-fact interval ends: residual quantiles within bands of predicted accuracy.

        Residuals depend on the prediction (facts predicted near 0 are mostly 0), so one global
        spread would be too wide at the bottom and too narrow at the top.
        """
        q = (1 - self.coverage) / 2
        edges = np.unique(np.quantile(fitted, np.linspace(0, 1, N_BANDS + 1)[1:-1]))
        band = np.searchsorted(edges, fitted, side="right")
        lower, upper = [], []
        for b in range(len(edges) + 1):
            r = resid[band == b] if (band == b).any() else resid
            lower.append(float(np.quantile(r, q)))
            upper.append(float(np.quantile(r, 1 - q)))
        unseen = unseen_acc if len(unseen_acc) else np.array([0.0])
        return {
            "edges": edges.tolist(),
            "lower": lower,
            "upper": upper,
            "unseen": [float(np.quantile(unseen, q)), float(np.quantile(unseen, 1 - q))],
        }

    @staticmethod
    def _bin_sums(mi: np.ndarray, acc: np.ndarray, unseen_acc: np.ndarray) -> dict:
        """Facts and accuracy sums per log2 MI bin: what the pooled line is refitted from."""
        keys, inverse, counts = np.unique(log_bin(mi), return_inverse=True, return_counts=True)
        return {
            "log2_mi": keys.tolist(),
            "n": counts.tolist(),
            "acc_sum": np.bincount(inverse, acc).tolist(),
            "unseen_n": int(len(unseen_acc)),
            "unseen_sum": float(unseen_acc.sum()),
        }

    def _build_trend(self) -> None:
        values = np.array([[m["slope"], m["intercept"], m["acc_unseen"]] for m in self.models_])
        sizes = [m["model_size"] for m in self.models_]
        trend = SizeTrend(sizes, values, self.damping, self.trend_sizes)
        bins = [m.get("bins") for m in self.models_]
        pooled = None if None in bins else PooledLine.pool(bins, self.lo_, self.hi_, self.weighting)
        self.trend_ = CrossSize(trend, pooled, self.rule, self.weight, self.alpha)

    def with_rule(self, rule: str, **settings) -> SMIPredictor:
        """The same per-model fits under another cross-size rule (no refit; no backtest kept).

        `settings`: damping, trend_sizes, weight, alpha; those left out keep this fit's values.
        """
        other = SMIPredictor(**(self._params() | {"rule": rule} | settings))
        other.lo_, other.hi_, other.models_ = self.lo_, self.hi_, self.models_
        other._build_trend()
        other.backtest_ = None
        return other

    def _smi(self, mi: np.ndarray, model_size: float) -> np.ndarray:
        # the stored scale, clamped: the line has no evidence outside the fitted range
        x = np.clip(normalise(log_bin(mi), self.lo_, self.hi_), 0.0, 1.0)
        return x ** size_exponent(model_size)

    # ---- predict -----------------------------------------------------------------------------
    def coefficients(self, model_size: float) -> dict[str, float]:
        """Slope, intercept and unseen-fact accuracy at `model_size` (see `smi_cross.CrossSize`)."""
        slope, intercept, unseen = self.trend_(model_size)
        return {
            "slope": float(slope),
            "intercept": float(intercept),
            "acc_unseen": float(np.clip(unseen, 0, 1)),
        }

    def _nearest(self, model_size: float) -> dict:
        return min(self.models_, key=lambda m: abs(math.log(m["model_size"] / model_size)))

    def predict(self, table: pl.DataFrame, model_size: float) -> pl.DataFrame:
        """Per-fact expected accuracy for a model of `model_size` parameters trained on these counts."""
        table = normalise_columns(table)
        mi = mutual_information(table)
        kept = mi > 0
        c = self.coefficients(model_size)
        smi = np.full(len(mi), np.nan)
        smi[kept] = self._smi(mi[kept], model_size)
        predicted = line_predictions(smi, c)
        bands = self._nearest(model_size)["interval_bands"]
        band = np.searchsorted(np.asarray(bands["edges"]), predicted, side="right")
        lower = np.where(kept, predicted + np.asarray(bands["lower"])[band], bands["unseen"][0])
        upper = np.where(kept, predicted + np.asarray(bands["upper"])[band], bands["unseen"][1])
        return pl.DataFrame(
            {
                "fact_id": table["fact_id"],
                "smi": pl.Series(smi).fill_nan(None),
                "predicted": predicted,
                "lower": np.clip(np.minimum(lower, predicted), 0, 1),
                "upper": np.clip(np.maximum(upper, predicted), 0, 1),
            }
        )

    def predict_from_counts(self, counts: pl.DataFrame, model_size: float) -> pl.DataFrame:
        """`predict` for the catalog's `fact_counts` columns (n_docs, n_subj, n_obj, n_both)."""
        return self.predict(normalise_columns(counts, source="fact_counts"), model_size)

    def expected_accuracy(self, predicted: pl.DataFrame, model_size: float | None = None) -> dict:
        """Mean predicted accuracy over facts, with an interval.

        Half-width: z·sqrt(σ_sys² + var/n), where σ_sys is the largest error of the mean accuracy
        in the fit's backtest (held-out sizes, else held-out facts): the error grows with the
        extrapolation, so the worst step is kept rather than an average. var/n is the sampling
        variance of a mean of n facts with the fitted per-fact residual variance.
        """
        p = predicted["predicted"].to_numpy()
        n = len(p)
        sigma_sys = (self.backtest_ or {}).get("mean_error_max", 0.0)
        ref = self._nearest(model_size) if model_size else self.models_[-1]
        half = NormalDist().inv_cdf(0.5 + self.coverage / 2) * math.sqrt(
            sigma_sys**2 + ref["residual_var"] / max(n, 1)
        )
        mean = float(p.mean()) if n else float("nan")
        return {
            "expected": mean,
            "lower": max(0.0, mean - half),
            "upper": min(1.0, mean + half),
            "coverage": self.coverage,
            "n_facts": n,
            "n_unseen": int(predicted["smi"].is_null().sum()),
        }

    # ---- backtest ----------------------------------------------------------------------------
    def backtest(self, table: pl.DataFrame, hold_out: str = "facts") -> pl.DataFrame:
        """Errors on data the fit did not see.

        `hold_out="facts"`: k folds of fact ids (the same facts leave every model); each model is
        predicted at its own size on its held-out facts. `hold_out="size"`: forward chaining; each
        model is predicted from all strictly smaller ones, next to its own fit (the floor).
        Errors (see `smi_cross.bin_errors`) cover facts with MI > 0; `mean_error` covers all facts.
        """
        table = normalise_columns(table)
        if "model" not in table.columns:
            table = table.with_columns(pl.col("model_size").cast(pl.Utf8).alias("model"))

        def make() -> SMIPredictor:
            return SMIPredictor(**self._params())

        if hold_out == "facts":
            return backtest_by_facts(make, table, self.folds, self.seed)
        if hold_out == "size":
            return backtest_by_size(make, table)
        raise ValueError(f"hold_out must be 'facts' or 'size', got {hold_out!r}")

    def range_note(self, model_size: float) -> str | None:
        """How far a model size lies outside the sizes of the fitted family."""
        return beyond_range({"model size": (float(model_size), [m["model_size"] for m in self.models_])})

    # ---- JSON --------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "kind": KIND,
            "version": VERSION,
            "params": self._params(),
            "normalisation": {"log2_mi_bin_min": self.lo_, "log2_mi_bin_max": self.hi_},
            "models": self.models_,
            "size_trend": self.trend_.to_json(),
            "fitted_on": {
                "models": [m["model"] for m in self.models_],
                "model_sizes": [m["model_size"] for m in self.models_],
                "n_facts": [m["n_facts"] for m in self.models_],
                "n_kept": [m["n_kept"] for m in self.models_],
            },
            "backtest": self.backtest_,
        }

    @classmethod
    def from_json(cls, d: dict) -> SMIPredictor:
        if d.get("kind") != KIND:
            raise ValueError(f"not an SMI fit (kind={d.get('kind')!r})")
        version = str(d.get("version"))
        if version not in ("1", VERSION):
            raise ValueError(f"SMI fit version {version!r}; this Assay reads versions 1 and {VERSION}")
        if version == "1":  # before the cross-size rules: the damped trend, no per-bin sums
            self = cls(**(d["params"] | {"rule": "trend"}))
            self.trend_ = CrossSize(SizeTrend.from_json(d["size_trend"]), None, "trend")
        else:
            self = cls(**d["params"])
            self.trend_ = CrossSize.from_json(d["size_trend"])
        self.lo_ = d["normalisation"]["log2_mi_bin_min"]
        self.hi_ = d["normalisation"]["log2_mi_bin_max"]
        self.models_ = d["models"]
        self.backtest_ = d.get("backtest")
        return self
