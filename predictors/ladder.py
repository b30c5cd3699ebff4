"""Task ladder: predict a large model's benchmark accuracy from a ladder of small runs.

Bhagia et al. 2024, "Establishing Task Scaling Laws via Compute-Efficient Model Ladders"
(arXiv 2412.04403). Two fitted steps, chained:

1. (N, D) -> task loss (bits per byte of the correct answer), L = A/N^alpha + B/D^beta + E,
   on one point per run (the mean of its last 5 checkpoints, D = its final tokens);
2. task loss -> accuracy, Acc = a / (1 + exp(-k (L - L0))) + b, on all intermediate checkpoints
   (first 10 % skipped, moving average 5, plus the ideal point (0, 1)).

Interval: the delta method, from both fits' parameter covariances, plus the scatter of checkpoint
accuracies around the step-2 curve (benchmark noise), at the `level` of a normal distribution.
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
VERSION = "1"


@dataclass
class LadderOptions:
    shared_exponents: bool = True  # False: one independent step-1 fit per task (the reference)
    min_tokens_per_param: float = 15.0  # runs with D/N below this (0.5xC = 10) are left out; 0 keeps all
    last_checkpoints: int = 5  # step 1: average of the last checkpoints of each run
    skip: float = 0.1  # step 2: share of each run's first checkpoints dropped
    window: int = 5  # step 2: moving-average window
    level: float = 0.95  # interval coverage under a normal approximation
    checkpoint_noise: bool = True  # add the checkpoint scatter around the step-2 curve to the interval


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

    # ------------------------------------------------------------------ fit

    def fit(self, table: pl.DataFrame) -> LadderPredictor:
        table = self._usable(check_long_table(table))
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
        return self

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
        """One row per target and task: task, n, d, predicted, lower, upper, bpb_predicted (+ target columns)."""
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
            half = z * np.sqrt(var)
            frames.append(
                targets.with_columns(
                    task=pl.lit(task),
                    n=pl.Series(n),
                    d=pl.Series(d),
                    predicted=pl.Series(acc),
                    lower=pl.Series(np.clip(acc - half, 0.0, 1.0)),
                    upper=pl.Series(np.clip(acc + half, 0.0, 1.0)),
                    bpb_predicted=pl.Series(bpb),
                )
            )
        out = pl.concat(frames)
        first = ["task", "n", "d", "predicted", "lower", "upper", "bpb_predicted"]
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
        train, test = table.filter(~held), table.filter(held)
        if test.is_empty():
            raise ValueError(f"hold_out={hold_out!r} matches no run")
        clone = LadderPredictor(options=LadderOptions(**asdict(self.options))).fit(train)
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
        rows = rows.with_columns(
            error=pl.col("predicted") - pl.col("actual"),
            abs_error=(pl.col("predicted") - pl.col("actual")).abs(),
            covered=(pl.col("actual") >= pl.col("lower")) & (pl.col("actual") <= pl.col("upper")),
        )
        order = {t: i for i, t in enumerate(clone.fits_)}
        rows = rows.sort(pl.col("task").replace_strict(order, return_dtype=pl.Int64), "d", "run")
        label = hold_out if hold_out is not None else _largest_label(table)
        self.backtest_ = {
            "hold_out": str(label),
            "fitted_on_sizes": sorted({float(x) for x in train["n"].unique()}),
            **summarise_backtest(rows),
        }
        return rows.select(
            "run", "task", "n", "d", "actual", "predicted", "lower", "upper",
            "error", "abs_error", "covered", "bpb_actual", "bpb_predicted",
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
            "method": "Bhagia et al. 2024 (arXiv 2412.04403), chained; interval: delta method",
            "params": {"options": asdict(self.options), "tasks": tasks},
            "fitted_on": self.fitted_on_,
            "backtest": self.backtest_,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LadderPredictor:
        if d.get("kind") != KIND:
            raise ValueError(f"not a ladder predictor: kind={d.get('kind')!r}")
        if str(d.get("version")) != VERSION:
            raise ValueError(
                f"ladder predictor version {d.get('version')!r}; this Assay reads version {VERSION}"
            )
        p = d["params"]
        self = cls(options=LadderOptions(**p["options"]))
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


def _largest_label(table: pl.DataFrame) -> str:
    biggest = table.filter(pl.col("n") == pl.col("n").max())
    return size_label(biggest["run"][0])


def summarise_backtest(rows: pl.DataFrame) -> dict[str, Any]:
    """Mean absolute error per task and over tasks, in accuracy points (x100), and interval coverage."""
    per = rows.group_by("task", maintain_order=True).agg(
        pl.len().alias("runs"),
        (pl.col("abs_error").mean() * 100).alias("abs_error_points"),
        (pl.col("abs_error").max() * 100).alias("max_error_points"),
        pl.col("covered").mean().alias("coverage"),
    )
    return {
        "mean_abs_error_points": float(per["abs_error_points"].mean()),
        "coverage": float(rows["covered"].mean()),
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
