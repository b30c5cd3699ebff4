"""Task-ladder backtests on the real OLMo ladder (../shared/data): error tables and design choices.

Run: .venv/bin/python bench/predictors_ladder.py  (about a minute on 2 cores: the
per-task step-1 fits run L-BFGS-B to the reference's tolerances)

1. The backtest of the issue: fit on 190M-1B, predict every 3B run's final accuracy from (N, D).
2. Design choices, each on three hold-outs (3B from 190M-1B, 1B from 190M-760M, 3B from 190M-760M)
   and on the published 13B-5T target (actual accuracies and the published chained predictions
   from the OLMo-ladder repository, `src/scripts/paper/figures/chained_main.csv`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from assay.predictors.ladder import LadderOptions, LadderPredictor  # noqa: E402
from assay.predictors.ladder_data import TASKS, read_olmo_ladder  # noqa: E402

LADDER = REPO.parent / "shared" / "data" / "eval_results" / "olmo_ladder" / "ladder-runs"

# OLMo-2 13B after 5T tokens (Bhagia et al. 2024, final.json: N; the 13B-5T eval file: D) and its
# actual accuracies and the paper's chained predictions (OLMo-ladder repo, chained_main.csv).
TARGET_13B = {"n": 13_202_396_160, "d": 5_000_080_130_048}
ACTUAL_13B = {
    "mmlu": 0.5161, "hellaswag": 0.8319, "arc_challenge": 0.6381, "arc_easy": 0.8717,
    "piqa": 0.8296, "csqa": 0.7410, "socialiqa": 0.6160, "openbookqa": 0.4864,
}  # fmt: skip
PUBLISHED_13B = {
    "mmlu": 0.5127, "hellaswag": 0.8530, "arc_challenge": 0.5267, "arc_easy": 0.7724,
    "piqa": 0.8208, "csqa": 0.7761, "socialiqa": 0.5995, "openbookqa": 0.4486,
}  # fmt: skip

SIZES = ["190M", "370M", "760M", "1B", "3B"]


def _variants() -> list[tuple[str, LadderOptions, bool]]:
    """(label, options, keep reruns); the first is the published method on its own runs (1-10xC)."""
    ref = LadderOptions(shared_exponents=False, min_tokens_per_param=15.0)
    return [
        ("published: per-task fits, 1-10xC", ref, False),
        ("per-task fits, all runs", LadderOptions(shared_exponents=False, min_tokens_per_param=0.0), True),
        ("per-task fits, 1-10xC + reruns", ref, True),
        ("shared exponents, all runs", LadderOptions(min_tokens_per_param=0.0), True),
        ("shared exponents, 1-10xC + reruns (default)", LadderOptions(), True),
    ]


def _runs(table: pl.DataFrame, sizes: list[str], reruns: bool, hold: str | None = None) -> pl.DataFrame:
    """The fitting sizes (without reruns where asked) plus every run of the held-out size."""
    out = table.filter(pl.col("size").is_in(sizes))
    if not reruns:
        out = out.filter(~pl.col("run").str.contains("rerun"))
    return pl.concat([out, table.filter(pl.col("size") == hold)]) if hold else out


def _target_error(options: LadderOptions, table: pl.DataFrame) -> tuple[float, dict[str, float]]:
    pred = LadderPredictor(options).fit(table).predict(pl.DataFrame(TARGET_13B))
    err = {r["task"]: abs(r["predicted"] - ACTUAL_13B[r["task"]]) * 100 for r in pred.iter_rows(named=True)}
    return float(np.mean(list(err.values()))), err


def main() -> None:
    if not LADDER.exists():
        print(f"needs the shared ladder runs in {LADDER}")
        return
    start = time.time()
    table = read_olmo_ladder(sorted(LADDER.glob("*.csv")))

    print("Task ladder backtest: fit on 190M-1B, predict every 3B run (0.5xC-10xC, rerun) from (N, D)")
    print("absolute error in accuracy points; coverage of the 95% interval over the 6 runs\n")
    columns = {}
    for label, options, reruns in (_variants()[0], _variants()[-1]):
        p = LadderPredictor(options)
        p.backtest(_runs(table, SIZES[:4], reruns, "3B"), "3B")
        columns[label] = p.backtest_
    names = list(columns)
    print(f"  {'task':<14} " + " ".join(f"{n[:34]:>36}" for n in names))
    for task in TASKS:
        cells = [f"{c['per_task'][task]['abs_error_points']:>6.2f} (max {c['per_task'][task]['max_error_points']:5.2f}, "
                 f"cov {c['per_task'][task]['coverage']:.2f})" for c in columns.values()]  # fmt: skip
        print(f"  {task:<14} " + " ".join(f"{cell:>36}" for cell in cells))
    means = [f"{c['mean_abs_error_points']:>6.2f} (coverage {c['coverage']:.2f})" for c in columns.values()]
    print(f"  {'mean':<14} " + " ".join(f"{m:>36}" for m in means))

    print("\nDesign choices: mean absolute error (points) over the 8 tasks")
    header = ["3B | 190M-1B", "1B | 190M-760M", "3B | 190M-760M", "13B-5T | all", "13B-5T | 190M-1B"]
    print(f"  {'variant':<44} " + " ".join(f"{h:>16}" for h in header))
    for label, options, reruns in _variants():
        cells = []
        for hold, sizes in (("3B", SIZES[:4]), ("1B", SIZES[:3]), ("3B", SIZES[:3])):
            p = LadderPredictor(options)
            p.backtest(_runs(table, sizes, reruns, hold), hold)
            cells.append(p.backtest_["mean_abs_error_points"])
        cells.append(_target_error(options, _runs(table, SIZES, reruns))[0])
        cells.append(_target_error(options, _runs(table, SIZES[:4], reruns))[0])
        print(f"  {label:<44} " + " ".join(f"{c:>16.2f}" for c in cells))
    published = np.mean([abs(PUBLISHED_13B[t] - ACTUAL_13B[t]) * 100 for t in TASKS])
    print(
        f"  {'(the paper, 13B-5T from 190M-1B)':<44} "
        + " ".join(f"{'':>16}" for _ in range(4))
        + f"{published:>17.2f}"
    )

    _, err = _target_error(LadderOptions(), _runs(table, SIZES, True))
    print(
        "\n13B-5T per task, default fit on all sizes (points): "
        + ", ".join(f"{t} {e:.1f}" for t, e in err.items())
    )
    print(f"\n({time.time() - start:.1f} s)")


if __name__ == "__main__":
    main()
