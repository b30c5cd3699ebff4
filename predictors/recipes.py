"""Recipe predictor: how each data recipe's scores grow with model size N and training tokens D.

For one target (a task and metric), every recipe at once:

1. A continuous loss x: the task's own answer loss where the results have one (bpb, ce_loss,
   DCLM's downstream_perplexity), else the source's reference loss (the mean validation loss),
   else the target itself. DataDecide found that such likelihood metrics at small scale rank
   recipes better than accuracy does, and a loss is what a scaling law extrapolates well.
2. x per recipe as a function of (N, D), chosen by what the runs can identify:
   "nd"      x_r = E_r + A_r/N^alpha + B_r/D^beta, alpha and beta shared across recipes (the task
             ladder's shared-exponent Huber fit, keyed by recipe), when N takes >= 3 values and
             D/N varies >= 2x; a recipe with < 4 sizes uses the mean curve;
   "compute" ln x_r = c_r + s ln(6ND), slope shared, when N and D move together (DCLM's 1x runs
             cannot tell alpha from beta);
   "fixed"   one scale only (datablations, OLMix): no extrapolation, the observed values.
3. Accuracy from x: the ladder's sigmoid with its chance floor, one curve per task shared across
   recipes (a loss-to-accuracy map is a property of the task), with the ideal point (0, 1) for
   answer losses.
4. A recipe offset: the mean residual of the recipe's runs within `offset_window` (compute ratio)
   of its largest run. Losses of different corpora are related by shifted power laws (arXiv
   2411.12925), so the shared map is right up to a per-recipe shift, which this absorbs.

Repeats (seeds, HP variants at one recipe and size) become one point per (recipe, N, D): their
mean by default, their spread the noise floor of the interval (`repeats="best"` keeps the best
run instead). Token multipliers are different D and enter the law as such.
Interval (normal, at `level`): the delta method on the law and the map, plus one run's noise
(the scatter at the recipes' largest runs, floored by repeats and reported seed spreads), plus a
drift that grows with ln(C / the recipe's largest training C), measured on the recipe's smaller
runs. A factor kappa >= 1 widens it where an inner leave-largest-scale-out finds it too narrow.
Settings (loss="auto", offset_window=1) were chosen on loss_to_loss; see bench/predictors_recipes.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl

from assay.predictors.ladder_fit import AccuracyCurve, LossLaw, fit_accuracy_curve
from assay.predictors.ranges import beyond_range
from assay.predictors.recipes_data import (
    ANSWER_LOSSES,
    LEVEL_TOLERANCE,
    TASK_LOSS_ORDER,
    Curves,
    check_long,
    compute_levels,
    few,
    fit_curves,
    points,
    reference_loss,
    score_predictions,
    split_largest,
    summarise,
)

KIND = "recipes"
VERSION = "1"
TWO_CHOICE = {"boolq", "piqa", "winogrande", "winograd", "copa", "siqa", "bigbench_strategy_qa"}


@dataclass
class RecipeOptions:
    loss: str = "auto"  # "auto" (task loss, else reference), "reference", or "direct" (the target itself)
    offset_window: float = 1.0  # offset from the runs within this compute ratio of the largest; 0: none
    repeats: str = "mean"  # "mean" or "best" over runs at one (recipe, N, D)
    level: float = 0.9  # interval coverage
    calibrate: bool = True  # set kappa by an inner leave-largest-scale-out
    tasks: list[str] | None = None  # "task" or "task/metric" to fit; None: every target


@dataclass
class TargetFit:
    task: str
    metric: str
    low: bool  # lower is better
    x: str  # key into RecipePredictor.curves_
    flip: bool  # x = 1 - target (a score fitted as an error)
    link: AccuracyCurve | None
    offsets: dict[str, list[float]]  # recipe -> [offset, runs it is the mean of, largest training compute]
    noise_sd: float  # one run's scatter
    recipes: list[str]
    drift_sd: float = 0.0  # extra error per e-fold of compute beyond the recipe's largest run


@dataclass
class RecipePredictor:
    """`fit(long_table)`, `predict(targets)`, `backtest(table)`, `decide(n, d, task)`, JSON round trip."""

    options: RecipeOptions = field(default_factory=RecipeOptions)
    curves_: dict[str, Curves] = field(default_factory=dict)
    targets_: dict[str, TargetFit] = field(default_factory=dict)
    kappa_: float = 1.0
    fitted_on_: dict[str, Any] = field(default_factory=dict)
    backtest_: dict[str, Any] | None = None
    skipped_: dict[str, str] = field(default_factory=dict)  # targets that could not be fitted, and why

    # ------------------------------------------------------------------ fit

    def fit(self, table: pl.DataFrame) -> RecipePredictor:
        from threadpoolctl import threadpool_limits

        table = check_long(table)
        with threadpool_limits(1):  # tiny matrices: threaded BLAS is only overhead
            self._fit_points(points(table, self.options.repeats))
            if self.options.calibrate:
                self.kappa_ = self._calibrate(table)
        self.fitted_on_ = {**summarise(table), "skipped": self.skipped_}
        return self

    def _fit_points(self, pts: pl.DataFrame) -> None:
        self.curves_, self.targets_ = {}, {}
        wanted = pts.select("task", "metric", "low").unique().sort("task", "metric")
        if self.options.tasks:
            names = set(self.options.tasks)
            wanted = wanted.filter(
                pl.col("task").is_in(names) | pl.format("{}/{}", "task", "metric").is_in(names)
            )
            if wanted.is_empty():
                raise ValueError(f"none of the tasks {sorted(names)} is in the results")
        reference = reference_loss(pts)
        self.skipped_ = {}
        for task, metric, low in wanted.iter_rows():
            y = pts.filter(pl.col("task") == task, pl.col("metric") == metric)
            try:
                self.targets_[f"{task}/{metric}"] = self._fit_target(pts, y, task, metric, low, reference)
            except ValueError as err:  # e.g. a task scored 0 by every run: nothing to fit
                if self.options.tasks:
                    raise ValueError(f"{task}/{metric}: {err}") from err
                self.skipped_[f"{task}/{metric}"] = str(err)
        if not self.targets_:
            raise ValueError(f"no target could be fitted: {few(self.skipped_)}")

    def _series(self, key: str, pts: pl.DataFrame) -> Curves:
        if key not in self.curves_:
            self.curves_[key] = fit_curves(pts)
        return self.curves_[key]

    def _fit_target(self, pts, y, task, metric, low, reference) -> TargetFit:
        o = self.options
        x_key, x_pts, flip, link = f"{task}/{metric}", y, False, None
        fixed = compute_levels(y["flops"].to_numpy()).max() == 0
        if not low and not fixed:
            own = [
                m for m in TASK_LOSS_ORDER if pts.filter(pl.col("task") == task, pl.col("metric") == m).height
            ]
            if o.loss == "auto" and own:
                x_key = f"{task}/{own[0]}"
                x_pts = pts.filter(pl.col("task") == task, pl.col("metric") == own[0])
            elif o.loss in ("auto", "reference") and reference is not None:
                x_key, x_pts = reference
            else:
                x_key, x_pts, flip = f"1-{task}/{metric}", y.with_columns(value=1 - pl.col("value")), True
            if not flip:
                link = _fit_link(x_pts, y, task, metric, ideal=x_key.split("/")[-1] in ANSWER_LOSSES)
                if link is None:  # the map did not converge: fit the score itself
                    x_key, x_pts, flip = f"1-{task}/{metric}", y.with_columns(value=1 - pl.col("value")), True
        curves = self._series(x_key, x_pts)
        if curves.mode == "fixed" and not fixed:  # the loss was measured at one scale only
            x_key, link = f"1-{task}/{metric}" if not low else f"{task}/{metric}", None
            flip = not low
            curves = self._series(x_key, y.with_columns(value=1 - pl.col("value")) if flip else y)
        fit = TargetFit(task, metric, low, x_key, flip, link, {}, 0.0, sorted(set(y["recipe"])))
        y = _residuals(self, fit, y).with_columns(
            gap=(pl.col("flops").max().over("recipe") / pl.col("flops")).log()
        )
        window = float(np.log(max(o.offset_window, LEVEL_TOLERANCE)))
        use = o.offset_window > 0 and curves.mode != "fixed"
        stats = y.group_by("recipe").agg(
            pl.col("resid").filter(pl.col("gap") <= window).mean(),
            (pl.col("gap") <= window).sum().alias("k"),
            pl.col("flops").max(),
        )
        fit.offsets = {
            r: [float(m) if use else 0.0, int(k) if use else 0, float(c)] for r, m, k, c in stats.iter_rows()
        }
        resid = y["resid"].to_numpy() - np.array([fit.offsets[r][0] for r in y["recipe"]])
        gap = y["gap"].to_numpy()
        inside = gap <= window
        floor = (y["sd"].drop_nulls() ** 2).to_list() + (y["seed_sd"].drop_nulls() ** 2).to_list()
        used = len(fit.offsets) if use else 0
        noise2 = float(np.mean(floor)) if floor else 0.0
        if curves.mode != "fixed" and (int(inside.sum()) > used or not floor):
            # run noise: the scatter inside the offset windows (floored by repeats and seed spreads);
            # with one run per window and no repeats, the scatter of all runs stands in
            sel = inside if int(inside.sum()) > used else np.ones(len(resid), bool)
            noise2 = max(noise2, float(resid[sel] @ resid[sel]) / max(int(sel.sum()) - used, 1))
        # drift: how far the chain strays per e-fold of compute away from a recipe's largest run
        out = ~inside & (gap > 0)
        if curves.mode != "fixed" and out.any():
            fit.drift_sd = float(np.sqrt(np.mean(np.maximum(resid[out] ** 2 - noise2, 0.0) / gap[out] ** 2)))
        fit.noise_sd = float(np.sqrt(noise2))
        return fit

    def _base(self, fit: TargetFit, recipe: str, rows: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The shared chain at (N, D): mean and standard deviation, before the recipe offset."""
        xm, xs = self.curves_[fit.x](recipe, rows["params"].to_numpy(), rows["tokens"].to_numpy())
        if fit.link is not None:
            with np.errstate(over="ignore"):  # a steep map far from its data saturates: that is its value
                return fit.link(xm), np.sqrt((fit.link.slope(xm) * xs) ** 2 + fit.link.std(xm) ** 2)
        return (1 - xm if fit.flip else xm), xs

    def _calibrate(self, table: pl.DataFrame) -> float:
        """kappa: the |z| quantile at `level` of an inner leave-largest-scale-out, over the normal one."""
        from scipy.stats import norm

        pts = points(table, self.options.repeats)
        levels = compute_levels(pts["flops"].to_numpy())
        per_level = (
            pts.with_columns(level=pl.Series(levels)).group_by("level").agg(pl.col("recipe").n_unique())
        )
        shared = per_level.filter(pl.col("recipe") >= 2)["level"]
        if len(shared) < 3:  # the inner fit would have a single scale left
            return 1.0
        cut = float(pts["flops"].to_numpy()[levels == shared.max()].min())
        inner = RecipePredictor(RecipeOptions(**{**asdict(self.options), "calibrate": False}))
        try:
            inner._fit_points(pts.filter(pl.col("flops") < cut / LEVEL_TOLERANCE))
        except ValueError:  # too little left below the cut to fit: no evidence to widen by
            return 1.0
        test = pts.filter(pl.col("flops") >= cut / LEVEL_TOLERANCE)
        z = []
        for fit in inner.targets_.values():
            rows = test.filter(
                pl.col("task") == fit.task,
                pl.col("metric") == fit.metric,
                pl.col("recipe").is_in(fit.recipes),
            )
            if rows.height:
                mean, sd = inner._predict_rows(fit, rows)
                z.extend(np.abs(rows["value"].to_numpy() - mean) / np.maximum(sd, 1e-12))
        if len(z) < 5:
            return 1.0
        q = float(np.quantile(z, self.options.level)) / float(norm.ppf(0.5 + self.options.level / 2))
        return float(np.clip(q, 1.0, 20.0))  # only widens: the inner hold-out is a shorter extrapolation

    def range_note(self, n: float, d: float) -> str | None:
        """How far (N, D) lies beyond the sizes and token counts of the fitted runs."""
        seen = {"N": (n, self.fitted_on_.get("sizes")), "D": (d, self.fitted_on_.get("tokens"))}
        # within the 2 % that counts as one scale (1.44e9 for 1,439,795,200) is not beyond
        near = {
            k: (v, s)
            for k, (v, s) in seen.items()
            if not s or not min(s) / LEVEL_TOLERANCE <= v <= max(s) * LEVEL_TOLERANCE
        }
        return beyond_range(near)

    # ------------------------------------------------------------- predict

    def _predict_rows(self, fit: TargetFit, rows: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        mean, sd = np.empty(rows.height), np.empty(rows.height)
        recipes = rows["recipe"].to_numpy()
        for r in np.unique(recipes):
            m = recipes == r
            some = rows.filter(pl.Series(m))
            base, base_sd = self._base(fit, r, some)
            off, k, anchor = fit.offsets[r]
            gap = np.maximum(np.log(some["flops"].to_numpy() / anchor), 0.0)
            mean[m] = base + off
            sd[m] = np.sqrt(
                base_sd**2 + fit.noise_sd**2 * (1 + (1 / k if k else 0)) + (fit.drift_sd * gap) ** 2
            )
        return mean, sd

    def target(self, task: str, metric: str | None = None) -> TargetFit:
        """The fitted target for a task (and metric); a bare task picks its only score-like metric."""
        if metric is None and "/" in task:
            task, metric = task.rsplit("/", 1)
        if metric is not None:
            if f"{task}/{metric}" in self.targets_:
                return self.targets_[f"{task}/{metric}"]
            raise ValueError(f"no fitted target {task}/{metric}; fitted: {few(self.targets_)}")
        options = [f for f in self.targets_.values() if f.task == task]
        scores = [f for f in options if not f.low] or options
        if len(scores) == 1:
            return scores[0]
        if not scores:
            raise ValueError(f"no fitted task {task!r}; fitted: {few(self.targets_)}")
        raise ValueError(
            f"task {task!r} has several metrics ({', '.join(f.metric for f in scores)}): name one as TASK/METRIC"
        )

    def predict(self, targets: pl.DataFrame) -> pl.DataFrame:
        """Rows of recipe, params, tokens, task, metric; returns them with predicted, lower, upper, sd."""
        from scipy.stats import norm

        if not self.targets_:
            raise ValueError("this RecipePredictor is not fitted; call fit() or load one with from_json()")
        missing = [c for c in ("recipe", "params", "tokens", "task", "metric") if c not in targets.columns]
        if missing:
            raise ValueError(f"targets: missing columns {missing}; need recipe, params, tokens, task, metric")
        t = targets.with_columns(
            pl.col("params").cast(pl.Float64, strict=False), pl.col("tokens").cast(pl.Float64, strict=False)
        )
        if t.filter(
            ~(pl.col("params") > 0).fill_null(False) | ~(pl.col("tokens") > 0).fill_null(False)
        ).height:
            raise ValueError("targets: params and tokens must be positive numbers")
        t = t.with_row_index("_row").with_columns(flops=6.0 * pl.col("params") * pl.col("tokens"))
        z = float(norm.ppf(0.5 + self.options.level / 2))
        parts = []
        for (task, metric), g in t.group_by("task", "metric", maintain_order=True):
            fit = self.target(str(task), str(metric))
            unknown = sorted(set(g["recipe"]) - set(fit.recipes))
            if unknown:
                raise ValueError(
                    f"targets: recipe {unknown[0]!r} has no fitted runs for {task}/{metric}; known: {few(fit.recipes)}"
                )
            mean, sd = self._predict_rows(fit, g)
            sd = sd * self.kappa_
            if not fit.low:
                mean = np.minimum(mean, 1.0)
            parts.append(g.with_columns(
                predicted=pl.Series(mean), lower=pl.Series(mean - z * sd), upper=pl.Series(mean + z * sd), sd=pl.Series(sd)
            ))  # fmt: skip
        return (
            pl.concat(parts).sort("_row").drop("_row", *(["flops"] if "flops" not in targets.columns else []))
        )

    def decide(
        self, n: float, d: float, task: str, recipes: list[str] | None = None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Rank recipes at (N, D) on a task: (ranking, pairs); each pair's probability that its order holds."""
        from scipy.stats import norm

        fit = self.target(task)
        chosen = list(dict.fromkeys(recipes)) if recipes else fit.recipes
        grid = pl.DataFrame(
            {"recipe": chosen, "params": float(n), "tokens": float(d), "task": fit.task, "metric": fit.metric}
        )
        rows = self.predict(grid).sort("predicted", descending=not fit.low)
        mu, sd, names = rows["predicted"].to_numpy(), rows["sd"].to_numpy(), rows["recipe"].to_list()
        pairs = []
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                scale = np.hypot(sd[i], sd[j])
                gap = abs(mu[i] - mu[j])
                # no spread at all (one run per recipe at one scale): the probability is unknown
                p = float("nan") if scale == 0 else float(norm.cdf(gap / scale))
                pairs.append({"better": names[i], "worse": names[j], "gap": gap, "probability": p})
        pairs_df = pl.DataFrame(
            pairs,
            schema={"better": pl.String, "worse": pl.String, "gap": pl.Float64, "probability": pl.Float64},
        )
        nxt = {(p["better"], p["worse"]): p["probability"] for p in pairs}
        above = [nxt.get((names[i], names[i + 1])) if i + 1 < len(names) else None for i in range(len(names))]
        ranking = rows.select("recipe", "predicted", "lower", "upper", "sd").with_columns(
            rank=pl.int_range(1, rows.height + 1), p_above_next=pl.Series(above, dtype=pl.Float64)
        )
        return ranking.select("rank", "recipe", "predicted", "lower", "upper", "sd", "p_above_next"), pairs_df

    # ------------------------------------------------------------ backtest

    def backtest(
        self,
        table: pl.DataFrame,
        axis: str = "flops",
        at: float | None = None,
        test_runs: list[str] | None = None,
    ) -> pl.DataFrame:
        """Fit a copy on the runs below the largest `axis` value (or `at`); predict the runs at or above it.

        `test_runs` keeps only those held-out runs (e.g. each budget's compute-optimal run). Test
        recipes without training runs are left out. The summary is kept in `backtest_`.
        """
        table = check_long(table)
        train, test = split_largest(table, axis, at)
        if train.is_empty() or test.is_empty():
            raise ValueError(f"the split at the largest {axis} leaves no training or no test runs")
        if test_runs is not None:
            test = test.filter(pl.col("run").is_in(list(test_runs)))
        clone = RecipePredictor(RecipeOptions(**asdict(self.options))).fit(train)
        held = points(test, self.options.repeats).filter(
            pl.format("{}/{}", "task", "metric").is_in(list(clone.targets_))
        )
        known = {k: set(f.recipes) for k, f in clone.targets_.items()}
        held = held.filter(pl.struct("task", "metric", "recipe").map_elements(
            lambda s: s["recipe"] in known[f"{s['task']}/{s['metric']}"], return_dtype=pl.Boolean))  # fmt: skip
        if held.is_empty():
            raise ValueError(f"no run at the largest {axis} has a recipe and task with runs below it")
        rows = clone.predict(held.rename({"value": "actual"})).rename({"actual": "value"})
        rows = rows.with_columns(
            covered=(pl.col("value") >= pl.col("lower")) & (pl.col("value") <= pl.col("upper"))
        )
        self.backtest_ = {"axis": axis, "held_out_from": float(test[axis].min()), **score_predictions(rows),
                          "coverage": float(rows["covered"].mean()), "kappa": clone.kappa_}  # fmt: skip
        return rows

    # ---------------------------------------------------------------- JSON

    def to_json(self) -> dict[str, Any]:
        if not self.targets_:
            raise ValueError("nothing to save: the predictor is not fitted")
        curves = {k: {**{f: v for f, v in asdict(c).items() if f != "laws"}, "laws": {r: {"params": law.params.tolist(), "cov": law.cov.tolist()} for r, law in c.laws.items()}} for k, c in self.curves_.items()}  # fmt: skip
        targets = {}
        for key, f in self.targets_.items():
            link = None if f.link is None else {"params": f.link.params.tolist(), "cov": f.link.cov.tolist(), "resid_std": f.link.resid_std}  # fmt: skip
            targets[key] = {**{k: v for k, v in asdict(f).items() if k != "link"}, "link": link}
        return {
            "kind": KIND, "version": VERSION,
            "method": "per-recipe loss law (shared exponents) -> shared sigmoid map -> recipe offset; kappa-calibrated interval",
            "params": {"options": asdict(self.options), "kappa": self.kappa_, "curves": curves, "targets": targets},
            "fitted_on": self.fitted_on_, "backtest": self.backtest_,
        }  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RecipePredictor:
        if d.get("kind") != KIND:
            raise ValueError(f"not a recipes predictor: kind={d.get('kind')!r}")
        if str(d.get("version")) != VERSION:
            raise ValueError(
                f"recipes predictor version {d.get('version')!r}; this Assay reads version {VERSION}"
            )
        p = d["params"]
        self = cls(options=RecipeOptions(**p["options"]), kappa_=float(p["kappa"]))
        for key, c in p["curves"].items():
            laws = {r: LossLaw(np.array(v["params"]), np.array(v["cov"])) for r, v in c["laws"].items()}
            self.curves_[key] = Curves(**{**c, "laws": laws})
        for key, t in p["targets"].items():
            link = t.pop("link")
            if link is not None:
                link = AccuracyCurve(
                    np.array(link["params"]), np.array(link["cov"]), float(link["resid_std"])
                )
            self.targets_[key] = TargetFit(**t, link=link)
        self.fitted_on_, self.backtest_ = d.get("fitted_on") or {}, d.get("backtest")
        return self


def _residuals(model: RecipePredictor, fit: TargetFit, y: pl.DataFrame) -> pl.DataFrame:
    parts = []
    for (r,), g in y.group_by("recipe", maintain_order=True):
        base, _ = model._base(fit, r, g)
        parts.append(g.with_columns(resid=pl.Series(g["value"].to_numpy() - base)))
    return pl.concat(parts)


def _fit_link(
    x_pts: pl.DataFrame, y: pl.DataFrame, task: str, metric: str, ideal: bool
) -> AccuracyCurve | None:
    keys = ["recipe", "params", "tokens"]
    pairs = y.select(*keys, "value").join(x_pts.select(*keys, pl.col("value").alias("x")), on=keys)
    if pairs.height < 5:
        return None
    x, acc = pairs["x"].to_numpy(), pairs["value"].to_numpy()
    if ideal:  # zero answer loss: the right answer always wins
        x, acc = np.append(x, 0.0), np.append(acc, 1.0)
    chance = (
        0.0 if metric in ("centered_acc", "gen_score", "avg_score") else (0.5 if task in TWO_CHOICE else 0.25)
    )
    try:
        with np.errstate(over="ignore"):  # trial steps of the optimiser overflow and are rejected
            return fit_accuracy_curve(x, acc, chance)
    except (RuntimeError, ValueError):
        return None
