"""Recipe-predictor backtests on the public sweeps in ../shared/data/eval_results/recipes.

Run: .venv/bin/python bench/predictors_recipes.py  (one to two minutes on 2 cores)

Every table is a leave-largest-scale-out split: fit on the runs below the largest scale of the
source, predict the held-out runs, score the predictions (MAE in points, the mean Spearman over the
rankings of >= 3 recipes of one task at one compute level, and the share of recipe pairs ordered
right). Methods, measured in the same run:
  (a) each recipe's score at its largest training scale: the ranking without extrapolation;
  (b) per-recipe straight lines of score vs ln(6ND), fitted independently;
  (c) RecipePredictor (predictors/recipes.py).
The settings of (c) were chosen on loss_to_loss (its tables say "used to choose"); gadre and dclm
are held out. datablations and OLMix have one scale each, so they have no split (said below).
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from assay.predictors.recipes import RecipeOptions, RecipePredictor  # noqa: E402
from assay.predictors.recipes_data import (  # noqa: E402
    baseline_largest_scale,
    baseline_log_compute,
    points,
    read_long,
    score_predictions,
    split_largest,
)

DATA = REPO.parent / "shared" / "data" / "eval_results" / "recipes"

# The OLMo evaluation suite and MMLU of the loss-to-loss sweep, and the tasks in its olmo_suite mean.
L2L_TASKS = [
    "olmo_suite/acc", "mmlu_suite/acc", "arc_easy/acc", "boolq/acc", "sciq/acc", "winogrande/acc",
    "arc_challenge/acc_len_norm", "hellaswag/acc_len_norm", "openbook_qa/acc_len_norm", "piqa/acc_len_norm",
]  # fmt: skip
# Gadre et al. 2024's 17 low-variance tasks (scaling/constants.py SUBSET), fixed before any result.
GADRE_TASKS = [
    f"{t}/acc"
    for t in (
        "bigbench_operators", "pubmed_qa_labeled", "hellaswag_zeroshot", "boolq", "arc_easy", "coqa",
        "bigbench_dyck_languages", "lambada_openai", "bigbench_novel_concepts", "winograd",
        "bigbench_cs_algorithms", "commonsense_qa", "bigbench_qa_wikidata", "hellaswag", "copa", "squad", "piqa",
    )
]  # fmt: skip
DCLM_TASKS = ["core/centered_acc", "extended/centered_acc"]


def _pair_probability(rows: pl.DataFrame) -> float:
    """Mean predicted probability that a pair keeps its predicted order (to set beside the pairwise accuracy)."""
    from scipy.stats import norm

    probs = []
    for _, g in rows.group_by("task", "metric", "flops"):
        mu, sd = g["predicted"].to_numpy(), g["sd"].to_numpy()
        i, j = np.triu_indices(len(mu), 1)
        probs.extend(norm.cdf(np.abs(mu[i] - mu[j]) / np.maximum(np.hypot(sd[i], sd[j]), 1e-12)))
    return float(np.mean(probs)) if probs else float("nan")


def _line(label: str, s: dict, extra: str = "") -> str:
    def f(v, fmt):
        width = int(fmt[1:].split(".")[0])
        return "-".rjust(width) if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, fmt)

    return f"  {label:<44} {f(s['mae_points'], '>10.2f')} {f(s['spearman'], '>9.3f')} {f(s['pairwise'], '>9.3f')} {s['n']:>5} {extra}"


HEADER = f"  {'method':<44} {'MAE (pts)':>10} {'Spearman':>9} {'pairwise':>9} {'n':>5}"


def compare(table, axis, at, tasks, test_runs=None, options=None) -> list[str]:
    """(a), (b) and (c) on one split; returns printable lines."""
    options = options or RecipeOptions()
    train, test = split_largest(table, axis, at)
    if test_runs is not None:
        test = test.filter(pl.col("run").is_in(test_runs))
    tr = points(train)
    te = points(test).filter(pl.format("{}/{}", "task", "metric").is_in(tasks))
    te = te.filter(pl.col("recipe").is_in(tr["recipe"].unique().to_list()))
    lines = [HEADER]
    lines.append(
        _line(
            "(a) largest training scale, no extrapolation", score_predictions(baseline_largest_scale(tr, te))
        )
    )
    lines.append(_line("(b) per-recipe score vs ln C", score_predictions(baseline_log_compute(tr, te))))
    model = RecipePredictor(replace(options, tasks=tasks))
    try:
        rows = model.backtest(table, axis, at, test_runs=test_runs)
    except ValueError as err:
        lines.append(f"  {'(c) RecipePredictor':<44} n/a: {err}")
        return lines
    b = model.backtest_
    extra = (
        f"coverage {b['coverage']:.2f}, mean P(order) {_pair_probability(rows):.2f}, kappa {b['kappa']:.2f}"
    )
    lines.append(_line("(c) RecipePredictor", b, extra))
    return lines


def loss_to_loss() -> None:
    table = read_long([DATA / "loss_to_loss_sweep_long.csv.gz"])
    _, test = split_largest(table, "flops")
    # each corpus's compute-optimal run of the held-out budget: the lowest loss on its own corpus
    own = test.filter(pl.col("task") == "own_corpus_val", pl.col("metric") == "val_loss")
    optimal = own.sort("value").group_by("recipe").first()["run"].to_list()
    print("loss_to_loss [used to choose]: fit budgets < 4.84e19, predict each corpus's compute-optimal")
    print(f"run at 4.84e19 (6 corpora x {len(L2L_TASKS)} tasks)\n")
    print("Settings of (c), point predictions only:")
    print(HEADER)
    variants = [
        ("loss=auto, top-level offset (default)", RecipeOptions()),
        ("loss=auto, no offset", RecipeOptions(offset_window=0)),
        ("loss=auto, offset_window=2.5", RecipeOptions(offset_window=2.5)),
        ("loss=auto, offset_window=5", RecipeOptions(offset_window=5)),
        ("loss=auto, offset from all runs", RecipeOptions(offset_window=1e6)),
        ("loss=reference, top-level offset", RecipeOptions(loss="reference")),
        ("loss=direct, top-level offset", RecipeOptions(loss="direct")),
        ("loss=direct, no offset", RecipeOptions(loss="direct", offset_window=0)),
    ]
    for label, options in variants:
        model = RecipePredictor(replace(options, tasks=L2L_TASKS, calibrate=False))
        model.backtest(table, "flops", test_runs=optimal)
        print(_line(label, model.backtest_))
    print("\nBaselines and the default (used to choose):")
    print("\n".join(compare(table, "flops", None, L2L_TASKS, test_runs=optimal)))


def gadre() -> None:
    table = read_long([DATA / "gadre_long.csv"])
    print("\ngadre [held out]: fit 10.6M-153.7M (x 0.25-32 tokens), predict every 411.6M run")
    print(f"(3 corpora x 8 token multipliers x the paper's {len(GADRE_TASKS)} low-variance tasks)")
    print("\n".join(compare(table, "params", None, GADRE_TASKS)))


def dclm() -> None:
    table = read_long([DATA / "dclm_long.csv"])
    print("\ndclm [held out], split 1: fit 412M (1x), predict 1B 1x for the 12 recipes run at both")
    train, test = split_largest(table, "params")
    tr, te = points(train), points(test.filter(pl.col("tokens") < 5e10))
    te = te.filter(pl.col("recipe").is_in(tr["recipe"].unique().to_list()))
    print(HEADER)
    target = te.filter(pl.format("{}/{}", "task", "metric").is_in(DCLM_TASKS))
    print(_line("(a) 412M score, no extrapolation", score_predictions(baseline_largest_scale(tr, target))))
    # DataDecide's alternative at one scale: rank by a continuous metric (mean answer loss)
    loss = (
        tr.filter(pl.col("metric") == "downstream_perplexity").group_by("recipe").agg(pl.col("value").mean())
    )
    ranked = target.join(loss.select("recipe", (-pl.col("value")).alias("predicted")), on="recipe")
    s = score_predictions(ranked) | {"mae_points": float("nan")}
    print(_line("(a') 412M mean downstream loss, rank only", s))
    print(f"  {'(b), (c)':<44} n/a: one training scale (412M, 8.2B tokens), nothing to fit a scale axis on")
    print("\ndclm [held out], split 2: fit 412M and 1B 1x, predict the 1B 5x runs (144B tokens; the one 7x")
    print("run's recipe has no smaller runs and is left out)")
    print("\n".join(compare(table, "tokens", 1e11, DCLM_TASKS)))
    sensitivity = compare(table, "tokens", 1e11, DCLM_TASKS, options=RecipeOptions(repeats="best"))[-1]
    print(
        sensitivity.replace("(c) RecipePredictor" + " " * 25, "(c) with repeats=best (sensitivity)" + " " * 9)
    )


def single_scale() -> None:
    print("\ndatablations: every run is 2.8B parameters on 55B tokens: no scale axis, so no split.")
    table = read_long([DATA / "datablations_long.csv"])
    model = RecipePredictor(RecipeOptions(tasks=["average/avg_score"])).fit(table)
    fit = model.targets_["average/avg_score"]
    print(
        f"  fit/decide work at that scale only ('fixed' mode): average/avg_score over {len(fit.recipes)} recipes, "
        f"noise sd {100 * fit.noise_sd:.2f} points from the reported seed spreads"
    )
    print(
        "olmix_*: every run is a ~30M proxy at 5x (nominal 3B tokens): no scale to extrapolate, so no split;"
    )
    print("  they are mixture-regression data (`assay fit mixture`), not a scale-up test.")


def main() -> None:
    if not DATA.exists():
        print(f"needs the shared recipe results in {DATA}")
        return
    start = time.time()
    loss_to_loss()
    gadre()
    dclm()
    single_scale()
    print(f"\n({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
