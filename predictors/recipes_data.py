"""Recipe results in the long format, the points a recipe predictor fits, and the two baselines.

The long format has one row per (run, task, metric):

    recipe  str    the data recipe (a corpus, a filter, a mixture)
    params  num    model parameters
    tokens  num    training tokens
    task    str    task or validation set
    metric  str    acc, centered_acc, val_loss, ce_loss, bpb, ... (see LOSS_METRICS)
    value   num    the number; accuracies are fractions in [0, 1]
    run     str    optional: the run id (runs of one recipe at one size are its repeats)
    source  str    optional: where the results come from

`../shared/data/eval_results/recipes/*_long.csv` are in this format. Also here: the points a
fit sees (repeats merged), the per-recipe loss curves of step 1 (`fit_curves`, see
predictors/recipes.py), and baselines (a) "the ranking at the largest available scale" and (b)
"per-recipe fits of score vs log compute", so that the bench and the tests measure the same thing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from assay.predictors.ladder_fit import LossLaw, fit_loss_laws_shared

REQUIRED = ("recipe", "params", "tokens", "task", "metric", "value")

# Loss-like metrics: lower is better; the first ones are answer losses (zero loss: always right).
ANSWER_LOSSES = ("bpb", "ce_loss", "downstream_perplexity")
LOSS_METRICS = (*ANSWER_LOSSES, "ctx_ce_loss", "val_loss")
# The metric a task's own loss is taken from, in this order (DataDecide: a continuous likelihood
# metric at small scale ranks recipes better than accuracy does).
TASK_LOSS_ORDER = ("bpb", "ce_loss", "downstream_perplexity", "ctx_ce_loss", "val_loss")
# The metric kind a source's reference loss is averaged over when a task has no loss of its own.
REFERENCE_ORDER = ("val_loss", "bpb", "ce_loss", "downstream_perplexity")
# Same scale: compute levels closer than this ratio are one level (IsoFLOP budgets are exact).
LEVEL_TOLERANCE = 1.02


def lower_is_better(task: str, metric: str) -> bool:
    return (
        metric in LOSS_METRICS
        or metric in ("ppl", "as_reported")
        or metric.startswith("train_loss")
        or task == "perplexity"
    )


def is_target(metric: str) -> bool:
    """Seed spreads and perplexities (exp of a loss already fitted) are not fitted on their own."""
    return not metric.endswith("_std") and metric != "ppl"


def read_long(paths: Iterable[str | Path]) -> pl.DataFrame:
    """Read and check long-format files (.csv, .csv.gz, .parquet)."""
    frames = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        try:
            if path.suffix == ".parquet":
                raw = pl.read_parquet(path)
            else:
                raw = pl.read_csv(path, infer_schema_length=None)
        except pl.exceptions.NoDataError as err:
            raise ValueError(f"{path}: the file is empty") from err
        except pl.exceptions.PolarsError as err:
            raise ValueError(f"{path}: not a readable table ({type(err).__name__})") from err
        frames.append(check_long(raw, str(path)))
    if not frames:
        raise ValueError("no result files given")
    return pl.concat(frames, how="diagonal_relaxed")


def check_long(table: pl.DataFrame, where: str = "table") -> pl.DataFrame:
    """Cast to the long format, name what is missing, drop empty values."""
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise ValueError(
            f"{where}: missing columns {missing}; the long format needs {list(REQUIRED)} "
            "(one row per run, task and metric)"
        )
    try:
        out = table.with_columns(
            pl.col("recipe").cast(pl.String),
            pl.col("task").cast(pl.String),
            pl.col("metric").cast(pl.String),
            pl.col("params").cast(pl.Float64),
            pl.col("tokens").cast(pl.Float64),
            pl.col("value").cast(pl.Float64),
        )
    except pl.exceptions.PolarsError as err:
        raise ValueError(
            f"{where}: params, tokens and value must be numbers ({err.__class__.__name__})"
        ) from err
    if "run" not in out.columns:
        out = out.with_columns(run=pl.format("{}@{}@{}", "recipe", "params", "tokens"))
    out = out.with_columns(pl.col("run").cast(pl.String)).drop_nulls(["recipe", "task", "metric", "value"])
    if out.is_empty():
        raise ValueError(f"{where}: no rows with a value")
    bad = out.filter(~(pl.col("params") > 0) | ~(pl.col("tokens") > 0) | pl.col("params").is_null())
    if bad.height:
        row = bad.row(0, named=True)
        raise ValueError(f"{where}: params and tokens must be positive (run {row['run']!r})")
    return out.with_columns(flops=6.0 * pl.col("params") * pl.col("tokens"))


def points(table: pl.DataFrame, repeats: str = "mean") -> pl.DataFrame:
    """One point per (recipe, params, tokens, task, metric), from all runs of that recipe at that size.

    repeats="mean": the mean over the runs (seeds, learning-rate variants), their standard
    deviation kept as `sd` (the noise floor of the intervals); "best": the best run for this
    task and metric (the user's best hyperparameters). `seed_sd` carries `<metric>_seed_std` rows.
    """
    if repeats not in ("mean", "best"):
        raise ValueError(f"repeats must be 'mean' or 'best', got {repeats!r}")
    keys = ["recipe", "params", "tokens", "task", "metric"]
    spreads = table.filter(pl.col("metric").str.ends_with("_seed_std")).select(
        "recipe", "params", "tokens", "task",
        pl.col("metric").str.strip_suffix("_seed_std"), pl.col("value").alias("seed_sd"),
    ).unique(keys, keep="first")  # fmt: skip
    rows = table.filter(~pl.col("metric").str.ends_with("_std") & (pl.col("metric") != "ppl"))  # is_target
    low = pl.struct("task", "metric").map_elements(
        lambda s: lower_is_better(s["task"], s["metric"]), return_dtype=pl.Boolean
    )
    rows = rows.with_columns(low=low)
    out = rows.group_by(keys).agg(
        (pl.col("value").mean() if repeats == "mean" else _best()).alias("value"),
        pl.col("value").std().alias("sd"),
        pl.len().alias("runs"),
        pl.col("low").first(),
    )
    out = out.join(spreads, on=keys, how="left")
    return out.with_columns(flops=6.0 * pl.col("params") * pl.col("tokens")).sort(keys)


def _best() -> pl.Expr:
    """The best value of a group: the lowest for a loss, the highest for a score."""
    return pl.when(pl.col("low").first()).then(pl.col("value").min()).otherwise(pl.col("value").max())


def compute_levels(flops: np.ndarray, tolerance: float = LEVEL_TOLERANCE) -> np.ndarray:
    """Level id per value: sorted compute values within `tolerance` of the previous are one level."""
    flops = np.asarray(flops, float)
    order = np.argsort(flops)
    ids = np.zeros(len(flops), int)
    level = 0
    for i in range(1, len(order)):
        if flops[order[i]] > flops[order[i - 1]] * tolerance:
            level += 1
        ids[order[i]] = level
    return ids


def split_largest(
    table: pl.DataFrame, axis: str = "flops", at: float | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, test): test holds the runs with `axis` >= `at` (default: its largest value, within 2 %)."""
    if axis not in ("flops", "params", "tokens"):
        raise ValueError(f"axis must be flops, params or tokens, got {axis!r}")
    top = float(table[axis].max()) if at is None else float(at)
    held = pl.col(axis) >= top / LEVEL_TOLERANCE
    return table.filter(~held), table.filter(held)


def reference_loss(pts: pl.DataFrame) -> tuple[str, pl.DataFrame] | None:
    """The mean over tasks of the first loss kind every scale of the runs has (REFERENCE_ORDER)."""
    keys = ["recipe", "params", "tokens"]
    for metric in REFERENCE_ORDER:
        rows = pts.filter(pl.col("metric") == metric)
        if rows.is_empty():
            continue
        groups = rows.select(keys).unique().height
        common = rows.group_by("task").agg(pl.len()).filter(pl.col("len") == groups)["task"].sort()
        if common.is_empty():
            continue
        mean = (
            rows.filter(pl.col("task").is_in(common.to_list()))
            .group_by(keys)
            .agg(pl.col("value").mean(), pl.col("flops").first())
        )
        return f"reference/{metric}", mean
    return None


def few(names) -> str:
    names = sorted(names)
    return ", ".join(names[:6]) + (f" (+{len(names) - 6} more)" if len(names) > 6 else "")


def summarise(table: pl.DataFrame) -> dict[str, Any]:
    scales = table.select("params", "tokens").unique().sort("params", "tokens")
    return {
        "sources": sorted(set(table["source"])) if "source" in table.columns else [],
        "recipes": sorted(set(table["recipe"])),
        "runs": int(table["run"].n_unique()),
        "sizes": sorted({float(v) for v in table["params"].unique()}),
        "tokens": sorted({float(v) for v in table["tokens"].unique()}),
        "scales": scales.rows(),
    }


# ------------------------------------------------------- step 1: loss curves


@dataclass
class Curves:
    """x per recipe at (N, D): mean and delta-method standard deviation."""

    mode: str
    laws: dict[str, LossLaw] = field(default_factory=dict)  # nd
    coef: dict[str, list[float]] = field(default_factory=dict)  # compute: c_r, var c_r, cov(c_r, s)
    slope: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # s, var s, centre of ln C
    values: dict[str, float] = field(default_factory=dict)  # fixed
    scale: list[float] = field(default_factory=list)  # fixed: N, D

    def __call__(self, recipe: str, n: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, d = np.atleast_1d(np.asarray(n, float)), np.atleast_1d(np.asarray(d, float))
        if self.mode == "fixed":
            far = (np.abs(np.log(n / self.scale[0])) > np.log(LEVEL_TOLERANCE)) | (
                np.abs(np.log(d / self.scale[1])) > np.log(LEVEL_TOLERANCE)
            )
            if far.any():
                raise ValueError(
                    f"the runs have a single scale (N = {self.scale[0]:.4g}, D = {self.scale[1]:.4g}): "
                    "there is no scale axis to extrapolate along; predict at that scale or fit runs at two or more"
                )
            v = self.values.get(recipe, float(np.mean(list(self.values.values()))))
            return np.full(len(n), v), np.zeros(len(n))
        if self.mode == "nd":
            laws = [self.laws[recipe]] if recipe in self.laws else list(self.laws.values())
            means = np.mean([law(n, d) for law in laws], axis=0)
            sds = np.mean([law(n, d) * law.log_std(n, d) for law in laws], axis=0)
            return means, sds
        s, var_s, centre = self.slope
        u = np.log(6 * n * d) - centre
        rows = [self.coef[recipe]] if recipe in self.coef else list(self.coef.values())
        means = np.mean([np.exp(c + s * u) for c, _, _ in rows], axis=0)
        log_sd = np.mean(
            [np.sqrt(np.maximum(vc + u**2 * var_s + 2 * u * cv, 0)) for _, vc, cv in rows], axis=0
        )
        return means, means * log_sd


def fit_curves(pts: pl.DataFrame) -> Curves:
    """Pick the law the runs identify (module docstring, step 2) and fit it; pts: recipe, params, tokens, value."""
    if compute_levels(pts["flops"].to_numpy()).max() == 0:
        first = pts.row(0, named=True)
        vals = {r: float(v) for r, v in pts.group_by("recipe").agg(pl.col("value").mean()).iter_rows()}
        return Curves("fixed", values=vals, scale=[first["params"], first["tokens"]])
    pts = pts.filter(pl.col("value") > 0)  # the laws live in log space
    if compute_levels(pts["flops"].to_numpy()).max() == 0:
        raise ValueError("fewer than two scales with a positive value")
    n, d = pts["params"].to_numpy(), pts["tokens"].to_numpy()
    sizes = pts.group_by("recipe").agg(pl.len().alias("k")).filter(pl.col("k") >= 4)["recipe"].to_list()
    if len(np.unique(n)) >= 3 and np.ptp(np.log(d / n)) >= np.log(2) and sizes:
        by = {r: g for (r,), g in pts.filter(pl.col("recipe").is_in(sizes)).group_by("recipe")}
        laws = fit_loss_laws_shared(
            {
                r: (g["params"].to_numpy(), g["tokens"].to_numpy(), g["value"].to_numpy())
                for r, g in by.items()
            }
        )
        return Curves("nd", laws=laws)
    recipes = sorted(set(pts["recipe"]))
    index = {r: i for i, r in enumerate(recipes)}
    u = np.log(pts["flops"].to_numpy())
    centre = float(u.mean())
    design = np.zeros((pts.height, len(recipes) + 1))
    design[np.arange(pts.height), [index[r] for r in pts["recipe"]]] = 1.0
    design[:, -1] = u - centre
    y = np.log(pts["value"].to_numpy())
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ beta
    s2 = float(resid @ resid) / max(len(y) - design.shape[1], 1)
    cov = s2 * np.linalg.pinv(design.T @ design)
    coef = {r: [float(beta[i]), float(cov[i, i]), float(cov[i, -1])] for r, i in index.items()}
    return Curves("compute", coef=coef, slope=[float(beta[-1]), float(cov[-1, -1]), centre])


# --------------------------------------------------------------- baselines


def _with_levels(pts: pl.DataFrame) -> pl.DataFrame:
    return pts.with_columns(level=pl.Series(compute_levels(pts["flops"].to_numpy())))


def baseline_largest_scale(train: pl.DataFrame, test: pl.DataFrame) -> pl.DataFrame:
    """(a) Each recipe's score at its largest training scale (the best run there), no extrapolation."""
    pts = _with_levels(train)
    top = pts.filter(pl.col("level") == pl.col("level").max().over("recipe", "task", "metric"))
    at_top = top.group_by("recipe", "task", "metric").agg(_best().alias("predicted"))
    return test.join(at_top, on=["recipe", "task", "metric"], how="inner")


def baseline_log_compute(train: pl.DataFrame, test: pl.DataFrame) -> pl.DataFrame:
    """(b) Per recipe and task, a straight line of score vs ln(6ND) through its best run per compute level.

    A recipe needs two compute levels; test rows of recipes with fewer are left out.
    """
    pts = _with_levels(train)
    frontier = pts.group_by("recipe", "task", "metric", "level").agg(
        _best().alias("value"), pl.col("flops").mean().log().alias("x")
    )
    lines = (
        frontier.group_by("recipe", "task", "metric")
        .agg(pl.col("x"), pl.col("value"))
        .filter(pl.col("x").list.len() >= 2)
    )
    coef = {}
    for r in lines.iter_rows(named=True):
        slope, intercept = np.polyfit(np.array(r["x"]), np.array(r["value"]), 1)
        coef[(r["recipe"], r["task"], r["metric"])] = (slope, intercept)
    keys = list(zip(test["recipe"], test["task"], test["metric"]))
    x = np.log(test["flops"].to_numpy())
    pred = [coef[k][1] + coef[k][0] * xi if k in coef else None for k, xi in zip(keys, x)]
    return test.with_columns(predicted=pl.Series(pred, dtype=pl.Float64)).drop_nulls("predicted")


# ----------------------------------------------------------------- scoring


def score_predictions(rows: pl.DataFrame) -> dict[str, float]:
    """MAE in points (x100), mean Spearman over rankings of >= 3 recipes, pooled pairwise accuracy.

    A ranking is the recipes of one task and metric at one compute level; a pair whose actual
    scores tie is skipped. `rows` needs recipe, task, metric, flops, value (actual), predicted, low.
    """
    from scipy.stats import spearmanr

    if rows.is_empty():
        return {
            "mae_points": float("nan"),
            "spearman": float("nan"),
            "pairwise": float("nan"),
            "n": 0,
            "pairs": 0,
        }
    rows = rows.with_columns(level=pl.Series(compute_levels(rows["flops"].to_numpy())))
    rhos, right, pairs = [], 0, 0
    for _, g in rows.group_by("task", "metric", "level"):
        act, pred = g["value"].to_numpy(), g["predicted"].to_numpy()
        if len(act) >= 3 and np.ptp(act) > 0 and np.ptp(pred) > 0:
            rhos.append(spearmanr(act, pred)[0])
        i, j = np.triu_indices(len(act), 1)
        keep = act[i] != act[j]
        right += int(np.sum(np.sign(act[i] - act[j])[keep] == np.sign(pred[i] - pred[j])[keep]))
        pairs += int(keep.sum())
    return {
        "mae_points": float(np.mean(np.abs(rows["predicted"] - rows["value"]).to_numpy()) * 100),
        "spearman": float(np.mean(rhos)) if rhos else float("nan"),
        "pairwise": right / pairs if pairs else float("nan"),
        "n": rows.height,
        "pairs": pairs,
    }
