"""SMI predictor on the SMI paper's own data (../shared/data/eval_results/smi).

1. Reproduction: R², slope, intercept, MSE and upper bound of CO-OCCUR, MI and SMI for every model
   in merge_outputs/, side by side with the paper's tables/analysis_tables_<model>.xlsx.
2. Cross-size: fit on the smaller models of a family, predict a larger one from its counts and
   size alone; per-bin and per-fact MAE against the target's own fit (the floor) and baselines.
3. Damping sweep over every forward split of the three families (why damping = 0.5).

Run: .venv/bin/python bench/predictors_smi.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from assay.predictors.smi import (  # noqa: E402
    METHODS,
    SMIPredictor,
    bin_fit,
    log_bin,
    mutual_information,
    normalise,
    paper_fit,
    size_exponent,
)
from assay.predictors.smi_cross import bin_errors  # noqa: E402
from assay.predictors.smi_data import load_model_table, parse_model_size  # noqa: E402

FAMILIES = {
    "pythia": ["14m", "31m", "70m", "160m", "410m", "1.4b", "2.8b", "6.9b", "12b"],
    "gpt-neo": ["gpt-neo-125m", "gpt-neo-1.3B", "gpt-neo-2.7B", "gpt-j-6b"],
    "bloom": ["560m", "1b1", "1b7", "3b", "7b1"],
}
FAMILIES["pythia"] = [f"pythia-{s}" for s in FAMILIES["pythia"]]
FAMILIES["bloom"] = [f"bloom-{s}" for s in FAMILIES["bloom"]]
SPLITS = [  # (family, largest model fitted, target)
    ("pythia", "pythia-2.8b", "pythia-12b"),
    ("pythia", "pythia-6.9b", "pythia-12b"),
    ("pythia", "pythia-2.8b", "pythia-6.9b"),
    ("pythia", "pythia-1.4b", "pythia-12b"),
    ("gpt-neo", "gpt-neo-2.7B", "gpt-j-6b"),
    ("bloom", "bloom-3b", "bloom-7b1"),
    ("bloom", "bloom-1b7", "bloom-7b1"),
]
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


def pooled_line(tables: dict[str, pl.DataFrame], train: list[str], target_size: float) -> tuple[float, float]:
    """The naive baseline: one paper line over the facts of all smaller models, pooled."""
    xs, ys = [], []
    for model in train:
        t = tables[model]
        mi = mutual_information(t)
        kept = mi > 0
        b = log_bin(mi[kept])
        xs.append(normalise(b, b.min(), b.max()) ** size_exponent(target_size))
        ys.append(t["acc"].to_numpy()[kept])
    slope, intercept, *_ = bin_fit(np.concatenate(xs), np.concatenate(ys))
    return slope, intercept


def cross_size(tables: dict[str, pl.DataFrame], weighting: str) -> None:
    print(f"== 2. Cross-size prediction, weighting={weighting} (per-bin MAE / per-fact MAE / mean error) ==")
    print(
        "floor = the target's own paper SMI line (unclipped, as the paper draws it); pooled = one line over "
        "all smaller models' facts;\nlast = the largest fitted model's line; undamped / ours = ln N trend "
        "carried at damping 1 / 0.5. Predictions are clipped to [0, 1]."
    )
    cols = ["floor", "pooled", "last", "undamped", "ours"]
    print(f"{'target':<12}{'fitted up to':<14}" + "".join(f"{c:>24}" for c in cols) + f"{'ours/floor':>12}")
    for family, upto, target in SPLITS:
        members = FAMILIES[family]
        train = members[: members.index(upto) + 1]
        part = tables[target]
        size = parse_model_size(target)
        fit_table = pl.concat([tables[m] for m in train])
        row = {}
        own = paper_fit(part, size)["SMI"]
        fits = {
            d: SMIPredictor(weighting=weighting, damping=d).fit(fit_table, backtest=False)
            for d in (0, 1, 0.5)
        }
        pred = fits[0.5].predict(part, size)
        kept = pred["smi"].is_not_null().to_numpy()
        x = pred["smi"].to_numpy()[kept]
        acc = part["acc"].to_numpy()
        row["floor"] = bin_errors(x, acc[kept], own.slope * x + own.intercept)
        a, b = pooled_line(tables, train, size)
        row["pooled"] = bin_errors(x, acc[kept], np.clip(a * x + b, 0, 1))
        for name, d in (("last", 0), ("undamped", 1), ("ours", 0.5)):
            p = fits[d].predict(part, size)
            row[name] = bin_errors(x, acc[kept], p["predicted"].to_numpy()[kept])
            row[name]["mean_error"] = float(p["predicted"].mean() - acc.mean())
        cells = "".join(
            f"{row[c]['bin_mae']:>8.4f}{row[c]['fact_mae']:>8.4f}{row[c]['mean_error']:>+8.3f}" for c in cols
        )
        ratio = row["ours"]["bin_mae"] / row["floor"]["bin_mae"]
        print(f"{target:<12}{upto:<14}{cells}{ratio:>12.3f}")
        if target == "pythia-12b" and upto == "pythia-2.8b":
            # refit with its backtest: the interval of the mean is built from the backtest's error
            fitted = SMIPredictor(weighting=weighting).fit(fit_table)
            c = fitted.coefficients(size)
            s = fitted.expected_accuracy(fitted.predict(part, size), size)
            print(
                f"{'':<26}at 12e9: acc = {c['slope']:.4f}·SMI {c['intercept']:+.4f} (own fit {own.slope:.4f}·SMI "
                f"{own.intercept:+.4f}); mean {s['expected']:.4f} [{s['lower']:.4f}, {s['upper']:.4f}] vs "
                f"observed {acc.mean():.4f}"
            )
    print()


def damping_sweep(tables: dict[str, pl.DataFrame], weighting: str) -> None:
    print(
        f"== 3. Damping sweep, weighting={weighting}: every forward split whose largest fitted model is >= 300M =="
    )
    print(
        "ratio = per-bin MAE / the target's own paper line (unclipped); mean err = predicted - observed mean accuracy"
    )
    print(f"{'damping':>8}{'ratio mean':>12}{'ratio max':>11}{'> 1.1':>8}{'mean err RMS':>14}")
    for damping in (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0):
        ratios, errors = [], []
        for members in FAMILIES.values():
            for i in range(2, len(members)):
                train = members[:i]
                if parse_model_size(train[-1]) < 300e6:
                    continue
                fitted = SMIPredictor(weighting=weighting, damping=damping).fit(
                    pl.concat([tables[m] for m in train]), backtest=False
                )
                for target in members[i:]:
                    part, size = tables[target], parse_model_size(target)
                    pred = fitted.predict(part, size)
                    kept = pred["smi"].is_not_null().to_numpy()
                    x, acc = pred["smi"].to_numpy()[kept], part["acc"].to_numpy()
                    own = paper_fit(part, size)["SMI"]
                    floor = bin_errors(x, acc[kept], own.slope * x + own.intercept)["bin_mae"]
                    ratios.append(
                        bin_errors(x, acc[kept], pred["predicted"].to_numpy()[kept])["bin_mae"] / floor
                    )
                    errors.append(float(pred["predicted"].mean() - acc.mean()))
        r = np.array(ratios)
        rms = float(np.sqrt(np.mean(np.square(errors))))
        print(
            f"{damping:>8.1f}{r.mean():>12.3f}{r.max():>11.3f}{int((r > 1.1).sum()):>5}/{len(r):<2}{rms:>14.4f}"
        )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="the shared data folder")
    args = parser.parse_args()
    smi = Path(args.data) / "eval_results" / "smi"
    if not smi.exists():
        sys.exit(f"{smi}: not found (the SMI data is read from ../shared, never copied into the project)")
    start = time.perf_counter()
    reproduction(smi)
    names = [m for members in FAMILIES.values() for m in members]
    tables = {m: load_model_table([(smi / "merge_outputs" / f"{m}.json.gz", None)]) for m in names}
    for weighting in ("bins", "facts"):
        cross_size(tables, weighting)
        damping_sweep(tables, weighting)
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
