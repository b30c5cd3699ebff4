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
        mixture_fits = preds.get("mixture", [])
        if (
            weights is not None
            and mixture_fits
            and mixture_fits[0][1].get("fitted_on", {}).get("target_is_loss", True) is False
        ):
            # a regressor of an accuracy-like score cannot stand for the reference loss the link scales
            on = mixture_fits[0][1]["fitted_on"]
            notes.append(
                f"mixture:{mixture_fits[0][0]} predicts {on.get('task')}/{on.get('metric')}, not a loss: "
                "the mixture is not accounted for (register a regressor of a loss or bpb)"
            )
            mixture_fits = []
        if weights is not None and mixture_fits and "transfer" in preds:
            from assay.predictors.mixture import MixturePredictor
            from assay.predictors.transfer import LossTransfer

            mname, msaved = mixture_fits[0]
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


# ---- end-to-end backtests (bench/predictors_forecast.py) -------------------------------------
def forecast_recipes(
    root: Path, mixtures: Any, n: float, d: float, domain_map: dict[str, str] | None = None
) -> Any:
    """`forecast` for every recipe of a recipe frame (``recipe`` + one weight column per domain):
    one row per (recipe, task) with predicted accuracy, interval and loss ratio. ``domain_map``
    sends a recipe domain to the mixture regressor's domain; mapped weights add up."""
    import polars as pl

    rows = []
    for r in mixtures.iter_rows(named=True):
        weights: dict[str, float] = {}
        for domain, w in r.items():
            if domain != "recipe" and w > 0:
                key = (domain_map or {}).get(domain, domain)
                weights[key] = weights.get(key, 0.0) + float(w)
        for row in forecast(root, weights, n, d):
            rows.append(
                {
                    "recipe": r["recipe"],
                    "task": row["task"],
                    "predicted": row["predicted"],
                    "lower": row["lower"],
                    "upper": row["upper"],
                    "loss_ratio": row.get("loss_ratio"),
                }
            )
    return pl.DataFrame(rows)


def backtest_composition(
    table: Any,
    reference: str,
    tasks: list[str],
    elasticities: dict[str, float] | None = None,
    k: int = 5,
    seed: int = 0,
    **settings: Any,
) -> Any:
    """Stages 2-3 of the forecast on held-out mixtures of a table with a reference loss and task
    losses (columns named metric/...): a mixture regressor of the reference loss gives each held-out
    mixture's ratio r to the reference mixture (the regressor's prior), and each task's loss is
    predicted as base_task * r ** e_task.

    ``elasticities`` are the link's e_task (the forecast takes them from `assay fit transfer`,
    across model sizes); None fits them across the training mixtures instead (log task loss on log
    reference loss). base_task stands in for the ladder, which one proxy scale cannot test: the
    geometric mean over the training mixtures of task loss / r ** e_task. k folds over mixtures;
    returns one row per (mixture, task): observed, composed, and the elasticity used.
    """
    import polars as pl

    from assay.predictors.mixture import MixturePredictor, _folds
    from assay.predictors.mixture_data import key_column

    n_rows = table.height
    key = key_column(table)
    ref = table[reference].to_numpy().astype(float)
    rows = []
    for held in _folds(n_rows, k, seed):
        train = np.setdiff1d(np.arange(n_rows), held)
        reg = MixturePredictor(target=reference, **settings).fit(table[train])
        at_prior = reg.predict_mixture(dict(zip(reg.domains_, reg.prior_)))["predicted"]
        r_train = np.log(ref[train] / at_prior)
        r_held = np.log(reg.predict(table[held])["predicted"].to_numpy() / at_prior)
        for task in tasks:
            y = np.log(table[task].to_numpy().astype(float))
            if elasticities is None:
                e = float(np.polyfit(r_train, y[train], 1)[0])
            else:
                e = float(elasticities[task])
            base = float(np.mean(y[train] - e * r_train))
            composed = np.exp(base + e * r_held)
            for i, c in zip(held, composed):
                rows.append(
                    {
                        "key": table[key][int(i)] if key else int(i),
                        "task": task,
                        "observed": float(np.exp(y[i])),
                        "composed": float(c),
                        "elasticity": e,
                    }
                )
    return pl.DataFrame(rows)
