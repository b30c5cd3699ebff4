"""SMI predictor on the SMI paper's own data (../shared/data/eval_results/smi).

1. Reproduction: R², slope, intercept, MSE and upper bound of CO-OCCUR, MI and SMI for every model
   in merge_outputs/, side by side with the paper's tables/analysis_tables_<model>.xlsx.
2. Cross-size rule, leave one family out (per weighting of the per-model lines): every candidate
   rule of `smi_cross.CANDIDATES` on the forward splits of Pythia, GPT-Neo/J and BLOOM (a family's
   larger models predicted from its smaller ones); for each family the rule chosen on the other
   two, its held-out per-bin MAE beside naive pooling and the target's own-fit floor; the rule
   chosen on all three families (the default).
3. Pythia-12B from Pythia <= 2.8B with the default rule: coefficients and the mean with its interval.

Run: .venv/bin/python bench/predictors_smi.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from assay.predictors.smi import METHODS, SMIPredictor, paper_fit  # noqa: E402
from assay.predictors.smi_cross import (  # noqa: E402
    DEFAULT_RULES,
    candidate_scores,
    choose_rule,
    cross_size_errors,
    forecast_errors,
    leave_one_family_out,
    rule_label,
)
from assay.predictors.smi_data import load_families, load_model_table, parse_model_size  # noqa: E402

XLSX_COLUMNS = {"slope": "a", "intercept": "b", "r2": "R2", "mse": "MSE", "upper_bound": "upper bound"}


def read_paper_table(path: Path) -> dict[str, dict]:
    import openpyxl

    rows = list(openpyxl.load_workbook(path, read_only=True).active.iter_rows(values_only=True))
    header = list(rows[0])
    return {r[header.index("method")]: dict(zip(header, r)) for r in rows[1:]}


def reproduction(smi: Path) -> float:
    print("== 1. Reproduction of the paper's per-model tables (ours / paper) ==")
    head = f"{'model':<14}{'method':<10}" + "".join(f"{k:>24}" for k in XLSX_COLUMNS) + f"{'max |diff|':>12}"
    print(head)
    worst = 0.0
    for path in sorted((smi / "merge_outputs").glob("*.json.gz")):
        model = path.name.removesuffix(".json.gz")
        table = load_model_table([(path, None)])
        ours = paper_fit(table, parse_model_size(model), model)
        paper = read_paper_table(smi / "tables" / f"analysis_tables_{model}.xlsx")
        for method in METHODS:
            o, p = ours[method].to_dict(), paper[method]
            diff = max(abs(o[k] - p[c]) for k, c in XLSX_COLUMNS.items())
            diff = max(diff, abs(o["acc"] - p["acc"]), abs(o["x_intercept"] - p["x intercept"]))
            worst = max(worst, diff)
            cells = "".join(f"{o[k]:>12.6f}{p[c]:>12.6f}" for k, c in XLSX_COLUMNS.items())
            print(f"{model:<14}{method:<10}{cells}{diff:>12.1e}")
    print(f"largest difference over all models, methods and columns (incl. acc, x intercept): {worst:.1e}\n")
    return worst


def cross_size(families: dict[str, dict[str, pl.DataFrame]], weighting: str) -> pl.DataFrame:
    errors = cross_size_errors(families, weighting=weighting)
    names = list(families)
    n_fits = errors.select("family", "fit_upto").unique().height
    n_splits = errors.select("family", "fit_upto", "target").unique().height
    print(
        f"== 2. Cross-size rule, weighting={weighting}, leave one family out ({n_splits} forward splits: "
        f"{n_fits} fits on a family's models up to >= 300M, each predicting every larger model) =="
    )
    print(
        "ratio = per-bin MAE / the target's own-fit floor (its own line, fitted and clipped the same way), "
        "averaged over a family's splits;\nscore = mean of the families' ratios. Every figure in table (a) "
        "is USED TO CHOOSE; table (b)'s 'held out' columns are not."
    )
    scores = candidate_scores(errors)
    per_family = errors.group_by("family", "candidate").agg(pl.col("ratio").mean())
    chosen_all = choose_rule(errors)
    print(f"(a) every candidate on every family (used to choose; sorted by score over all {len(names)})")
    print(f"{'candidate':<22}" + "".join(f"{f:>10}" for f in names) + f"{'score':>9}")
    for cand in scores["candidate"]:
        cells = "".join(
            f"{per_family.filter((pl.col('family') == f) & (pl.col('candidate') == cand))['ratio'][0]:>10.3f}"
            for f in names
        )
        score = scores.filter(pl.col("candidate") == cand)["score"][0]
        print(
            f"{cand:<22}{cells}{score:>9.3f}" + ("   <- chosen on all families" if cand == chosen_all else "")
        )
    lofo = leave_one_family_out(errors)
    print("(b) each family held out: the rule chosen on the other families, applied to this one")
    print(
        f"{'family':<9}{'splits':>7}  {'chosen on the others':<22}{'score there':>12}{'held-out MAE':>14}"
        f"{'ratio':>8}{'pooling MAE':>13}{'ratio':>8}{'floor MAE':>11}"
    )
    for r in lofo.iter_rows(named=True):
        there = candidate_scores(errors, exclude=r["family"])
        score = there.filter(pl.col("candidate") == r["chosen_on_others"])["score"][0]
        print(
            f"{r['family']:<9}{r['splits']:>7}  {r['chosen_on_others']:<22}{score:>12.3f}{r['bin_mae']:>14.4f}"
            f"{r['ratio']:>8.3f}{r['pool_bin_mae']:>13.4f}{r['pool_ratio']:>8.3f}{r['floor_bin_mae']:>11.4f}"
        )
    print("(c) the held-out splits (per-bin MAE; chosen = the rule chosen without the family)")
    print(f"{'target':<14}{'fitted up to':<15}{'chosen':>9}{'pooling':>9}{'floor':>9}{'chosen/floor':>14}")
    chosen = dict(zip(lofo["family"], lofo["chosen_on_others"]))
    for (family, upto, target), part in errors.group_by("family", "fit_upto", "target", maintain_order=True):
        c = part.filter(pl.col("candidate") == chosen[family]).row(0, named=True)
        pool = part.filter(pl.col("candidate") == "pool")["bin_mae"][0]
        print(
            f"{target:<14}{upto:<15}{c['bin_mae']:>9.4f}{pool:>9.4f}{c['floor_bin_mae']:>9.4f}{c['ratio']:>14.3f}"
        )
    default = rule_label(DEFAULT_RULES[weighting])
    note = "" if default == chosen_all else f"  (WARNING: smi_cross.DEFAULT_RULES says {default})"
    print(f"rule chosen on all three families (the default for weighting={weighting}): {chosen_all}{note}\n")
    return errors


def pythia_12b(families: dict[str, dict[str, pl.DataFrame]]) -> None:
    print("== 3. Pythia-12B from Pythia <= 2.8B, default rule (bins weighting) ==")
    tables = families["pythia"]
    fit_table = pl.concat([t for m, t in tables.items() if parse_model_size(m) <= 2.8e9])
    part, size = tables["pythia-12b"], 12e9
    fitted = SMIPredictor().fit(fit_table)
    own = SMIPredictor().fit(part, backtest=False)
    c, o = fitted.coefficients(size), own.coefficients(size)
    errs, floor = forecast_errors(fitted, part, size), forecast_errors(own, part, size)
    s = fitted.expected_accuracy(fitted.predict(part, size), size)
    print(
        f"rule {fitted.trend_.describe()}: acc = {c['slope']:.4f}·SMI {c['intercept']:+.4f} (own fit "
        f"{o['slope']:.4f}·SMI {o['intercept']:+.4f}); per-bin MAE {errs['bin_mae']:.4f} (floor "
        f"{floor['bin_mae']:.4f}); mean {s['expected']:.4f} [{s['lower']:.4f}, {s['upper']:.4f}] vs observed "
        f"{part['acc'].mean():.4f}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="the shared data folder")
    args = parser.parse_args()
    smi = Path(args.data) / "eval_results" / "smi"
    if not smi.exists():
        sys.exit(f"{smi}: not found (the SMI data is read from ../shared, never copied into the project)")
    start = time.perf_counter()
    reproduction(smi)
    families = load_families(smi / "merge_outputs")
    for weighting in ("bins", "facts"):
        cross_size(families, weighting)
    pythia_12b(families)
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
