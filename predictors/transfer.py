"""Carrying a change of validation loss over to task losses (the link `assay forecast` needs).

A mixture regressor predicts how a data mixture moves a *reference validation loss* (RegMix:
Pile-CC loss of a small proxy). The task ladder predicts each task's bits-per-byte for the
ladder's own data. To compose them, Assay assumes a power-law link fitted on the ladder itself:

    log bpb_task = c_task + e_task * log L_ref        (per task, over all ladder checkpoints)

so a mixture that multiplies L_ref by r multiplies bpb_task by r ** e_task. The elasticity
e_task is estimated across model sizes and training lengths, not across mixtures — that is the
assumption, and `backtest` measures how well the link predicts held-out sizes' task losses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

REFERENCE_LOSS = "eval/pile-validation/CrossEntropyLoss"


def read_reference_loss(paths: list[str | Path], column: str = REFERENCE_LOSS) -> pl.DataFrame:
    """(run, step, ref_loss) from OLMo ladder CSVs."""
    frames = []
    for path in sorted(Path(p) for p in paths):
        raw = pl.read_csv(path, columns=["_step", column], infer_schema_length=None)
        frames.append(
            raw.select(
                pl.lit(path.stem).alias("run"),
                pl.col("_step").cast(pl.Int64).alias("step"),
                pl.col(column).cast(pl.Float64).alias("ref_loss"),
            )
        )
    return pl.concat(frames).drop_nulls()


class LossTransfer:
    """Per-task elasticity of task bits-per-byte with respect to a reference validation loss."""

    def __init__(self, skip: float = 0.1, reference: str = REFERENCE_LOSS):
        self.skip = skip  # early checkpoints sit off the curve, as in the ladder's step 2
        self.reference = reference
        self.params: dict[str, dict[str, float]] = {}

    def _points(self, long_table: pl.DataFrame, ref: pl.DataFrame) -> pl.DataFrame:
        joined = long_table.join(ref, on=["run", "step"], how="inner").drop_nulls(["bpb", "ref_loss"])
        steps = joined.group_by("run").agg(pl.col("step").max().alias("last"))
        return (
            joined.join(steps, on="run")
            .filter(pl.col("step") >= pl.col("last") * self.skip)
            .filter((pl.col("bpb") > 0) & (pl.col("ref_loss") > 0))
        )

    def fit(self, long_table: pl.DataFrame, ref: pl.DataFrame) -> LossTransfer:
        pts = self._points(long_table, ref)
        for task, g in pts.group_by("task"):
            x, y = np.log(g["ref_loss"].to_numpy()), np.log(g["bpb"].to_numpy())
            e, c = np.polyfit(x, y, 1)
            resid = y - (c + e * x)
            self.params[task[0]] = {
                "elasticity": float(e),
                "intercept": float(c),
                "log_rmse": float(resid.std()),
            }
        return self

    def bpb_ratio(self, task: str, loss_ratio: float | np.ndarray) -> np.ndarray:
        """How much a task's bpb is multiplied when the reference loss is multiplied by loss_ratio."""
        return np.asarray(loss_ratio, dtype=float) ** self.params[task]["elasticity"]

    def backtest(self, long_table: pl.DataFrame, ref: pl.DataFrame, hold_out: str) -> pl.DataFrame:
        """Fit without runs of size `hold_out`, then predict their final task bpb from their final
        reference loss: relative error per task (the link, tested where the data allows)."""
        from assay.predictors.ladder_data import size_label

        sized = long_table.with_columns(
            pl.col("run").map_elements(size_label, return_dtype=pl.String).alias("_size")
        )
        train = LossTransfer(self.skip, self.reference).fit(sized.filter(pl.col("_size") != hold_out), ref)
        test = train._points(sized.filter(pl.col("_size") == hold_out), ref)
        last = test.group_by("run", "task").agg(
            pl.col("bpb").tail(5).mean(), pl.col("ref_loss").tail(5).mean()
        )
        rows = []
        for r in last.iter_rows(named=True):
            p = train.params[r["task"]]
            pred = float(np.exp(p["intercept"] + p["elasticity"] * np.log(r["ref_loss"])))
            rows.append(
                {
                    "run": r["run"],
                    "task": r["task"],
                    "bpb": r["bpb"],
                    "predicted": pred,
                    "rel_error": abs(pred - r["bpb"]) / r["bpb"],
                }
            )
        return pl.DataFrame(rows).sort("task", "run")

    def to_json(self) -> dict:
        return {
            "kind": "transfer",
            "version": "1",
            "reference": self.reference,
            "skip": self.skip,
            "params": self.params,
        }

    @classmethod
    def from_json(cls, d: dict) -> LossTransfer:
        out = cls(d.get("skip", 0.1), d.get("reference", REFERENCE_LOSS))
        out.params = d["params"]
        return out
