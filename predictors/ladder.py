"""Task ladder: predict a large model's benchmark accuracy from a ladder of small runs.

Bhagia et al. 2024, "Establishing Task Scaling Laws via Compute-Efficient Model Ladders"
(arXiv 2412.04403). Two fitted steps, chained:

1. (N, D) -> task loss (bits per byte of the correct answer), L = A/N^alpha + B/D^beta + E,
   on one point per run (the mean of its last 5 checkpoints, D = its final tokens);
2. task loss -> accuracy, Acc = a / (1 + exp(-k (L - L0))) + b, on all intermediate checkpoints
   (first 10 % skipped, moving average 5, plus the ideal point (0, 1)).

Interval: the delta method, from both fits' parameter covariances, plus the scatter of checkpoint
accuracies around the step-2 curve (benchmark noise), at the `level` of a normal distribution,
widened by a calibration factor. The delta method alone is too narrow out of sample (95 % nominal
covered 79 % of the 3B runs): it ignores that the law itself is only approximately right. The factor
is measured inside the ladder being fitted, never on the target: each size from the third up is
predicted from the sizes below it (forward steps), and the factor is the conformal `level`-quantile
of |actual - predicted| / sd over those runs, divided by the normal quantile. Point predictions are
unchanged. `calibrate=False` keeps the plain delta-method interval.
Departures from the reference are options, each measured in `bench/predictors_ladder.py`:
`shared_exponents` (one alpha, beta for all tasks) and `min_tokens_per_param` (runs under ~1xC left
out, as the reference ladder does).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl

from assay.predictors.ladder_data import (
    CHANCE,
    TASKS,
    check_long_table,
    checkpoint_points,
    final_points,
    size_label,
)
from assay.predictors.ladder_fit import (
    AccuracyCurve,
    LossLaw,
    fit_accuracy_curve,
    fit_loss_law,
    fit_loss_laws_shared,
)
from assay.predictors.ranges import beyond_range

KIND = "ladder"
VERSION = "2"  # 2: interval calibration (version-1 fits load with factor 1)
READS = ("1", "2")


@dataclass
class LadderOptions:
    shared_exponents: bool = True  # False: one independent step-1 fit per task (the reference)
    min_tokens_per_param: float = 15.0  # runs with D/N below this (0.5xC = 10) are left out; 0 keeps all
    last_checkpoints: int = 5  # step 1: average of the last checkpoints of each run
    skip: float = 0.1  # step 2: share of each run's first checkpoints dropped
    window: int = 5  # step 2: moving-average window
    level: float = 0.95  # interval coverage under a normal approximation
    checkpoint_noise: bool = True  # add the checkpoint scatter around the step-2 curve to the interval
    calibrate: bool = True  # widen the interval by a factor measured on forward steps inside the ladder
    calibration_min_sizes: int = 2  # a forward step fits on at least this many smaller sizes


@dataclass
class TaskFit:
    loss: LossLaw
    curve: AccuracyCurve
    chance: float


@dataclass
class LadderPredictor:
    """`fit(long_table)`, `predict(targets with n, d)`, `backtest(long_table, hold_out)`, JSON round trip."""

    options: LadderOptions = field(default_factory=LadderOptions)
    fits_: dict[str, TaskFit] = field(default_factory=dict)
    fitted_on_: dict[str, Any] = field(default_factory=dict)
    backtest_: dict[str, Any] | None = None
    calibration_: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ fit

    def fit(self, table: pl.DataFrame) -> LadderPredictor:
        raw = check_long_table(table)
        table = self._usable(raw)
        tasks = [t for t in TASKS if t in set(table["task"].unique())]
        tasks += sorted(set(table["task"].unique()) - set(TASKS))
        if not tasks:
            raise ValueError("no task has both bpb and accuracy values to fit")
        o = self.options
        finals = {t: final_points(table, t, o.last_checkpoints) for t in tasks}
        if o.shared_exponents and len(tasks) > 1:
            laws = fit_loss_laws_shared({t: (f.n, f.d, f.bpb) for t, f in finals.items()})
        else:
            laws = {t: fit_loss_law(f.n, f.d, f.bpb) for t, f in finals.items()}
        self.fits_ = {}
        for t in tasks:
            x, y, _ = checkpoint_points(table, t, o.skip, o.window)
            # the ideal point: zero task loss means the correct answer always wins
            try:
                curve = fit_accuracy_curve(np.append(x, 0.0), np.append(y, 1.0), CHANCE.get(t, 0.25))
            except RuntimeError as e:  # curve_fit gave up
                raise ValueError(f"step 2 (loss -> accuracy) for task {t!r} did not converge: {e}") from e
            self.fits_[t] = TaskFit(loss=laws[t], curve=curve, chance=CHANCE.get(t, 0.25))
        self.fitted_on_ = _summarise(table, finals)
        self.calibration_ = self._calibrate(raw) if o.calibrate else {}
        return self

    @property
    def factor(self) -> float:
        """The calibration factor on the predictive sd (1 when not calibrated)."""
        return float(self.calibration_.get("factor", 1.0)) if self.options.calibrate else 1.0

    def _calibrate(self, table: pl.DataFrame) -> dict[str, Any]:
        """Forward steps within `table`: predict each size from the sizes below it, pool |error| / sd.

        Only the sizes of `table` take part, so a backtest's held-out size never touches the
        factor. A step whose fit fails (too few runs) is skipped and named.
        """
        table = table.drop_nulls(["bpb", "acc"])
        sizes = sorted({float(x) for x in table["n"].unique()})
        plain = LadderOptions(**{**asdict(self.options), "calibrate": False})
        steps, skipped, scores = [], [], []
        for k in range(max(self.options.calibration_min_sizes, 1), len(sizes)):
            part = table.filter(pl.col("n") <= sizes[k])
            try:
                rows = _holdout_rows(part, part["n"] == sizes[k], plain)[0]
            except ValueError as e:
                skipped.append({"n": sizes[k], "reason": str(e)})
                continue
            r = (rows["error"].abs() / rows["sd"]).to_numpy()
            scores.append(r[np.isfinite(r)])  # a zero sd (no noise term at all) says nothing about scale
            steps.append(
                {
                    "hold_out": _label(part, sizes[k]),
                    "n": sizes[k],
                    "fitted_on": [_label(part, x) for x in sizes[:k]],
                    "runs": int(rows["run"].n_unique()),
                    "residuals": int(len(r)),
                    "coverage_uncalibrated": float(rows["covered"].mean()),
                    "mean_abs_error_points": float(rows["abs_error"].mean() * 100),
                }
            )
        out: dict[str, Any] = {"method": "conformal", "level": self.options.level, "steps": steps}
        if skipped:
            out["skipped"] = skipped
        if not scores:
            out.update(
                factor=1.0, note=f"no forward step possible on {len(sizes)} sizes; interval not calibrated"
            )
            return out
        from scipy.stats import norm

        r = np.sort(np.concatenate(scores))
        z = float(norm.ppf(0.5 + self.options.level / 2))
        # split-conformal rank: the ceil((n + 1) level)-th smallest score, the largest when n is small
        k = min(int(np.ceil((len(r) + 1) * self.options.level)), len(r))
        factor = float(r[k - 1] / z)
        out.update(
            factor=factor,
            residuals=int(len(r)),
            coverage_uncalibrated=float(np.mean(r <= z)),
            coverage_calibrated=float(np.mean(r <= factor * z)),  # in-sample: what chose the factor
        )
        return out

    def range_note(self, n: float, d: float) -> str | None:
        """How far (N, D) lies beyond the model sizes and token counts the ladder was fitted on."""
        sizes, tokens = self.fitted_on_.get("sizes"), self.fitted_on_.get("tokens")
        return beyond_range({"N": (n, sizes), "D": (d, tokens)})

    def _usable(self, table: pl.DataFrame) -> pl.DataFrame:
        table = table.drop_nulls(["bpb", "acc"])
        if self.options.min_tokens_per_param > 0:
            final_d = table.group_by("run").agg(pl.col("d").max().alias("_final_d"))
            table = (
                table.join(final_d, on="run")
                .filter(pl.col("_final_d") >= self.options.min_tokens_per_param * pl.col("n"))
                .drop("_final_d")
            )
        if table.is_empty():
            raise ValueError(
                "no usable runs: every run lacks bpb/acc or has fewer than "
                f"{self.options.min_tokens_per_param} tokens per parameter (set min_tokens_per_param=0 to keep them)"
            )
        return table

    # ------------------------------------------------------------- predict

    def predict(self, targets: pl.DataFrame) -> pl.DataFrame:
        """One row per target and task: task, n, d, predicted, lower, upper, bpb_predicted, sd (+ target columns).

        `sd` is the predictive standard deviation the interval uses (calibration factor included).
        """
        if not self.fits_:
            raise ValueError("this LadderPredictor is not fitted; call fit() or load one with from_json()")
        for c in ("n", "d"):
            if c not in targets.columns:
                raise ValueError(f"targets need columns 'n' (parameters) and 'd' (tokens); missing {c!r}")
        n = targets["n"].cast(pl.Float64).to_numpy()
        d = targets["d"].cast(pl.Float64).to_numpy()
        if np.any(~np.isfinite(n) | ~np.isfinite(d) | (n <= 0) | (d <= 0)):
            raise ValueError("targets: n and d must be positive numbers")
        from scipy.stats import norm

        z = float(norm.ppf(0.5 + self.options.level / 2))
        frames = []
        for task, f in self.fits_.items():
            bpb = f.loss(n, d)
            bpb_std = bpb * f.loss.log_std(n, d)
            acc = np.clip(f.curve(bpb), 0.0, 1.0)
            var = (f.curve.slope(bpb) * bpb_std) ** 2 + f.curve.std(bpb) ** 2
            if self.options.checkpoint_noise:
                var = var + f.curve.resid_std**2
            sd = self.factor * np.sqrt(var)
            half = z * sd
            frames.append(
                targets.with_columns(
                    task=pl.lit(task),
                    n=pl.Series(n),
                    d=pl.Series(d),
                    predicted=pl.Series(acc),
                    lower=pl.Series(np.clip(acc - half, 0.0, 1.0)),
                    upper=pl.Series(np.clip(acc + half, 0.0, 1.0)),
                    bpb_predicted=pl.Series(bpb),
                    sd=pl.Series(sd),
                )
            )
        out = pl.concat(frames)
        first = ["task", "n", "d", "predicted", "lower", "upper", "bpb_predicted", "sd"]
        return out.select(first + [c for c in out.columns if c not in first])

    # ------------------------------------------------------------ backtest

    def backtest(self, table: pl.DataFrame, hold_out: str | float | None = None) -> pl.DataFrame:
        """Fit a copy on every run but the held-out size; predict each held-out run's final accuracy.

        `hold_out`: a size label ("3B", matched to a `size` column or the run-name prefix), a
        parameter count, or None for the largest size. Returns one row per held-out run and task;
        `actual` is the accuracy at the run's last checkpoint. The summary is kept in `backtest_`.
        """
        table = check_long_table(table).drop_nulls(["bpb", "acc"])
        held = self._held_out_mask(table, hold_out)
        if not held.any():
            raise ValueError(f"hold_out={hold_out!r} matches no run")
        rows, clone, train = _holdout_rows(table, held, self.options)
        label = hold_out if hold_out is not None else _largest_label(table)
        self.backtest_ = {
            "hold_out": str(label),
            "fitted_on_sizes": sorted({float(x) for x in train["n"].unique()}),
            **summarise_backtest(rows),
            "calibration": clone.calibration_ or None,
        }
        return rows.select(
            "run", "task", "n", "d", "actual", "predicted", "lower", "upper", "sd",
            "error", "abs_error", "covered", "covered_uncalibrated", "bpb_actual", "bpb_predicted",
        )  # fmt: skip

    def _held_out_mask(self, table: pl.DataFrame, hold_out: str | float | None) -> pl.Series:
        if hold_out is None:
            return table["n"] == table["n"].max()
        if isinstance(hold_out, int | float):
            return table["n"] == float(hold_out)
        sizes = table["size"] if "size" in table.columns else table["run"].map_elements(size_label, pl.String)
        return sizes == str(hold_out)

    # ---------------------------------------------------------------- JSON

    def to_json(self) -> dict[str, Any]:
        if not self.fits_:
            raise ValueError("nothing to save: the predictor is not fitted")
        tasks = {}
        for t, f in self.fits_.items():
            a, b, alpha, beta, e = (float(v) for v in f.loss.params)
            ca, x0, k, cb = (float(v) for v in f.curve.params)
            tasks[t] = {
                "chance": f.chance,
                "step1": {"ln_A": a, "ln_B": b, "alpha": alpha, "beta": beta, "E": e, "cov": f.loss.cov.tolist()},
                "step2": {"a": ca, "L0": x0, "k": k, "b": cb, "cov": f.curve.cov.tolist(), "resid_std": f.curve.resid_std},
            }  # fmt: skip
        return {
            "kind": KIND,
            "version": VERSION,
            "method": "Bhagia et al. 2024 (arXiv 2412.04403), chained; interval: delta method"
            + (", calibrated on forward steps within the ladder" if self.options.calibrate else ""),
            "params": {"options": asdict(self.options), "tasks": tasks, "calibration": self.calibration_},
            "fitted_on": self.fitted_on_,
            "backtest": self.backtest_,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LadderPredictor:
        if d.get("kind") != KIND:
            raise ValueError(f"not a ladder predictor: kind={d.get('kind')!r}")
        if str(d.get("version")) not in READS:
            raise ValueError(
                f"ladder predictor version {d.get('version')!r}; this Assay reads versions {', '.join(READS)}"
            )
        p = d["params"]
        # a version-1 fit has no calibration: its options say so, and its intervals stay as they were
        options = {"calibrate": False, **p["options"]}
        self = cls(options=LadderOptions(**options))
        self.calibration_ = p.get("calibration") or {}
        for t, v in p["tasks"].items():
            s1, s2 = v["step1"], v["step2"]
            self.fits_[t] = TaskFit(
                loss=LossLaw(
                    params=np.array([s1["ln_A"], s1["ln_B"], s1["alpha"], s1["beta"], s1["E"]]),
                    cov=np.array(s1["cov"], dtype=float),
                ),
                curve=AccuracyCurve(
                    params=np.array([s2["a"], s2["L0"], s2["k"], s2["b"]]),
                    cov=np.array(s2["cov"], dtype=float),
                    resid_std=float(s2["resid_std"]),
                ),
                chance=float(v["chance"]),
            )
        self.fitted_on_ = d.get("fitted_on") or {}
        self.backtest_ = d.get("backtest")
        return self


def _holdout_rows(
    table: pl.DataFrame, held: pl.Series, options: LadderOptions
) -> tuple[pl.DataFrame, LadderPredictor, pl.DataFrame]:
    """Fit on the rows not `held`, predict the final accuracy of each held run and task.

    Returns (rows, the fitted copy, its training rows). `covered_uncalibrated` is the coverage of
    the delta-method interval before the calibration factor (equal to `covered` without one).
    """
    train, test = table.filter(~held), table.filter(held)
    clone = LadderPredictor(options=LadderOptions(**asdict(options))).fit(train)
    last = (
        test.sort("step")
        .group_by("run", "task", maintain_order=True)
        .agg(
            pl.col("n").last(),
            pl.col("d").max(),
            pl.col("acc").last().alias("actual"),
            pl.col("bpb").last(),
        )
    )
    last = last.filter(pl.col("task").is_in(list(clone.fits_)))
    targets = last.select(
        "run", "n", "d", "actual", pl.col("bpb").alias("bpb_actual"), pl.col("task").alias("target_task")
    )
    # predict() crosses every target with every task; keep each run's own task
    rows = clone.predict(targets).filter(pl.col("task") == pl.col("target_task")).drop("target_task")
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + options.level / 2))
    rows = rows.with_columns(
        error=pl.col("predicted") - pl.col("actual"),
        abs_error=(pl.col("predicted") - pl.col("actual")).abs(),
        covered=(pl.col("actual") >= pl.col("lower")) & (pl.col("actual") <= pl.col("upper")),
        covered_uncalibrated=(pl.col("predicted") - pl.col("actual")).abs()
        <= z * pl.col("sd") / clone.factor,
    )
    order = {t: i for i, t in enumerate(clone.fits_)}
    rows = rows.sort(pl.col("task").replace_strict(order, return_dtype=pl.Int64), "d", "run")
    return rows, clone, train


def _label(table: pl.DataFrame, n: float) -> str:
    """The size label of the runs with `n` parameters ('760M'), or the count itself."""
    runs = table.filter(pl.col("n") == n)["run"]
    return size_label(runs[0]) if runs.len() else f"{n:.4g}"


def _largest_label(table: pl.DataFrame) -> str:
    biggest = table.filter(pl.col("n") == pl.col("n").max())
    return size_label(biggest["run"][0])


def summarise_backtest(rows: pl.DataFrame) -> dict[str, Any]:
    """Mean absolute error per task and over tasks, in accuracy points (x100), and interval coverage
    (with the calibration factor, and without it: `coverage_uncalibrated`)."""
    per = rows.group_by("task", maintain_order=True).agg(
        pl.len().alias("runs"),
        (pl.col("abs_error").mean() * 100).alias("abs_error_points"),
        (pl.col("abs_error").max() * 100).alias("max_error_points"),
        pl.col("covered").mean().alias("coverage"),
        pl.col("covered_uncalibrated").mean().alias("coverage_uncalibrated"),
    )
    return {
        "mean_abs_error_points": float(per["abs_error_points"].mean()),
        "coverage": float(rows["covered"].mean()),
        "coverage_uncalibrated": float(rows["covered_uncalibrated"].mean()),
        "per_task": {
            r["task"]: {k: v for k, v in r.items() if k != "task"} for r in per.iter_rows(named=True)
        },
    }


def _summarise(table: pl.DataFrame, finals: dict) -> dict[str, Any]:
    """What the fit saw: runs, sizes, token range, checkpoints, and each run's final point per task."""
    points = [
        {"task": t, "run": r, "n": float(n), "d": float(d), "bpb": float(b), "acc": float(a)}
        for t, f in finals.items()
        for r, n, d, b, a in zip(f.run, f.n, f.d, f.bpb, f.acc)
    ]
    return {
        "runs": int(table["run"].n_unique()),
        "checkpoints": int(table.select("run", "step").unique().height),
        "sizes": sorted({float(x) for x in table["n"].unique()}),
        "tokens": [float(table["d"].min()), float(table["d"].max())],
        "tasks": list(finals),
        "final_points": points,
    }
