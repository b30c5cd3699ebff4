"""The loss link used to compose mixture regression with the task ladder."""

from __future__ import annotations

import numpy as np
import polars as pl

from assay.predictors.transfer import LossTransfer, read_reference_loss


def _synthetic(elasticity: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(0)
    rows, refs = [], []
    for run in ("190M-1xC", "1B-1xC", "3B-1xC"):
        for step in range(1, 101):
            ref = 4.0 * step**-0.2 * rng.uniform(0.99, 1.01)
            refs.append({"run": run, "step": step, "ref_loss": ref})
            rows.append(
                {
                    "run": run,
                    "n": 1e8,
                    "d": step * 1e6,
                    "step": step,
                    "task": "piqa",
                    "bpb": 0.3 * ref**elasticity,
                    "acc": 0.6,
                }
            )
    return pl.DataFrame(rows), pl.DataFrame(refs)


def test_recovers_a_known_elasticity_and_round_trips():
    table, ref = _synthetic(0.8)
    t = LossTransfer().fit(table, ref)
    assert abs(t.params["piqa"]["elasticity"] - 0.8) < 1e-9
    assert abs(float(t.bpb_ratio("piqa", 0.9)) - 0.9**0.8) < 1e-9
    again = LossTransfer.from_json(t.to_json())
    assert again.params == t.params
    bt = t.backtest(table, ref, "3B")
    assert bt["rel_error"].max() < 1e-4  # averaging the last 5 checkpoints bends an exact power law slightly


def test_link_predicts_held_out_ladder_size(shared_data):
    from assay.predictors.ladder_data import read_olmo_ladder

    paths = sorted((shared_data / "eval_results/olmo_ladder/ladder-runs").glob("*.csv"))
    table, ref = read_olmo_ladder(paths), read_reference_loss(paths)
    bt = LossTransfer().backtest(table, ref, "3B")
    per_task = bt.group_by("task").agg(pl.col("rel_error").mean())
    assert per_task.height == 8
    assert per_task["rel_error"].max() < 0.05  # measured: 0.6-2.4 % per task
