"""`assay forecast`: what a mixture will give a model of N parameters trained on D tokens.

Every predictor registered under ROOT/predictors/*.json contributes what it can:

* ladder (task scaling laws): accuracy per task at (N, D) for the ladder's own training data;
* mixture (RegMix-style regression) + transfer (the loss link, predictors/transfer.py): the
  mixture's predicted reference loss relative to the regressor's reference mixture (its prior:
  the mean training mixture) multiplies each task's bits-per-byte by ratio ** elasticity before
  the ladder's loss->accuracy curve. Assumption: the ladder's data behaves like the reference
  mixture, and a relative loss change seen at proxy scale holds at the target scale;
* smi: expected closed-book QA accuracy from the mixture's fact counts and N;
* boundary: the attainable frontier (τ-quantile of public models) at 6·N·D FLOPs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def registered(root: Path) -> dict[str, list[tuple[str, dict]]]:
    """kind -> [(name, saved JSON)] of the predictors registered in the root."""
    out: dict[str, list[tuple[str, dict]]] = {}
    folder = root / "predictors"
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON ({exc})") from None
        if isinstance(d, dict) and "kind" in d:
            out.setdefault(d["kind"], []).append((path.stem, d))
    return out


POOL = "pool"  # the built-in baseline: the whole corpus (what a uniform sample of it would give)


def mixture_weights(root: Path, name: str, domain_map: dict[str, str] | None = None) -> dict[str, float]:
    """Token share per source of a selected mixture (repetitions counted), or of the whole corpus
    for the name `pool`, from the catalog."""
    from assay.corpora.catalog import ident, open_catalog, view_name
    from assay.corpora.mixture import list_mixtures

    if name != POOL and name not in list_mixtures(root):
        known = ", ".join(list_mixtures(root)) or "none"
        raise ValueError(f"no mixture {name!r} in {root} (mixtures: {known}; `pool` is the whole corpus)")
    con = open_catalog(root)
    try:
        view = "docs" if name == POOL else ident("mixture_" + view_name(name))
        cols = {r[0] for r in con.sql("SELECT column_name FROM (DESCRIBE annotations)").fetchall()}
        tokens = "a.tokens_est" if "tokens_est" in cols else "strlen(m.text) / 4.0"  # UTF-8 bytes / 4
        rows = con.sql(
            f"SELECT m.source, sum({tokens})::DOUBLE FROM {view} m LEFT JOIN annotations a USING (id) GROUP BY 1"
        ).fetchall()
    finally:
        con.close()
    if not rows:
        raise ValueError(f"mixture {name!r} is empty (assay mixtures show {name})")
    total = sum(t for _, t in rows)
    weights: dict[str, float] = {}
    for source, t in rows:
        key = (domain_map or {}).get(source, source)
        weights[key] = weights.get(key, 0.0) + t / total
    return weights


def check_scale(n: float, d: float) -> None:
    """Refuse sizes no pretraining run has: most often an exponent left out (--n 7 for 7e9)."""
    if not n >= 1e6:
        raise ValueError(f"--n {n:g}: a model has at least 1e6 parameters; give the count, e.g. 7e9")
    if not d >= n:
        raise ValueError(f"--d {d:g} is fewer tokens than the {n:g} parameters; give the count, e.g. 2e12")


def _ladder_rows(ladder: Any, n: float, d: float) -> dict[str, dict]:
    import polars as pl

    pred = ladder.predict(pl.DataFrame({"n": [float(n)], "d": [float(d)]}))
    return {r["task"]: r for r in pred.iter_rows(named=True)}


def forecast(
    root: Path,
    weights: dict[str, float] | None,
    n: float,
    d: float,
    mixture: str | None = None,
    facts: str | None = None,
) -> list[dict]:
    """One row per (task, predictor) with expected accuracy, interval, backtest error, and a
    `warning` naming every input that lies outside what the predictors were fitted on."""
    check_scale(n, d)
    preds = registered(root)
    rows: list[dict] = []
    if "ladder" in preds:
        from assay.predictors.ladder import LadderPredictor

        name, saved = preds["ladder"][0]
        ladder = LadderPredictor.from_json(saved)
        base = _ladder_rows(ladder, n, d)
        per_task = (saved.get("backtest") or {}).get("per_task", {})
        errors = {t: v["abs_error_points"] / 100 for t, v in per_task.items()}
        ratio = None
        used = [f"ladder:{name}"]
        notes = [ladder.range_note(n, d)]
        if weights is not None and "mixture" in preds and "transfer" in preds:
            from assay.predictors.mixture import MixturePredictor
            from assay.predictors.transfer import LossTransfer

            mname, msaved = preds["mixture"][0]
            tname, tsaved = preds["transfer"][0]
            regressor = MixturePredictor.from_json(msaved)
            link = LossTransfer.from_json(tsaved)
            ref = regressor.predict_mixture(dict(zip(regressor.domains_, regressor.prior_)))
            mix = regressor.predict_mixture(weights)
            notes.append(regressor.range_note(weights))
            ratio = np.array([mix["lower"], mix["predicted"], mix["upper"]]) / ref["predicted"]
            used += [f"mixture:{mname}", f"transfer:{tname}"]
        for task, r in base.items():
            row = {
                "task": task,
                "predicted": r["predicted"],
                "lower": r["lower"],
                "upper": r["upper"],
                "predictor": "+".join(used),
                "backtest_abs_error": errors.get(task),
                "warning": _join(notes),
            }
            if ratio is not None and task in link.params:
                bpb = r["bpb_predicted"] * link.bpb_ratio(task, ratio)
                acc = np.clip(ladder.fits_[task].curve(bpb), 0.0, 1.0)  # the ladder's step 2
                shift = float(acc[1]) - r["predicted"]
                row["predicted"] = float(acc[1])
                row["lower"] = min(r["lower"] + shift, float(acc.min()))
                row["upper"] = max(r["upper"] + shift, float(acc.max()))
                row["loss_ratio"] = float(ratio[1])
            rows.append(row)
    if "smi" in preds and facts:
        from assay.corpora.facts import read_fact_counts
        from assay.predictors.smi import SMIPredictor

        name, saved = preds["smi"][0]
        smi = SMIPredictor.from_json(saved)
        counts = read_fact_counts(root, facts, None, mixture)
        exp = smi.expected_accuracy(smi.predict_from_counts(counts, n), n)
        smi_note = smi.range_note(n)
        rows.append(
            {
                "task": f"cbqa:{facts}",
                "predicted": exp["expected"],
                "lower": exp["lower"],
                "upper": exp["upper"],
                "predictor": f"smi:{name}",
                "backtest_abs_error": (saved.get("backtest") or {}).get("mean_error_max"),
                "warning": smi_note,
            }
        )
    for name, saved in preds.get("boundary", []):
        from assay.predictors.boundary import BoundaryPredictor

        b = BoundaryPredictor.from_json(saved)
        value = float(np.atleast_1d(b.boundary_at(6.0 * n * d))[0])
        rows.append(
            {
                "task": f"frontier:{saved.get('fitted_on', {}).get('y', name)}",
                "predicted": value,
                "lower": None,
                "upper": value,
                "predictor": f"boundary:{name}",
                "backtest_abs_error": None,
                "warning": b.range_note(6.0 * n * d),
            }
        )
    if not rows:
        raise ValueError(
            f"no usable predictors registered in {root / 'predictors'}: fit one with `assay fit ladder "
            "--register NAME` (and `assay fit mixture`, `assay fit transfer` to account for the mixture)"
        )
    return rows


def _join(notes: list[str | None]) -> str | None:
    return "; ".join(n for n in notes if n) or None
