"""`assay fit boundary` and `assay forecast boundary`: the capability boundary from the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from assay.pipelines.cli.common import fit_targets, load_fit, root_option, save_fit
from assay.predictors.boundary_fit import LAMBDA_B

_SUMMARISED = {"no_compute", "missing_score", "duplicate"}  # one line per kind, not per row


def _read_table(path: Path):
    import polars as pl

    if path.suffix.lower() in {".parquet", ".pq"}:
        return pl.read_parquet(path)
    if path.suffix.lower() in {".csv", ".tsv"}:
        return pl.read_csv(
            path, separator="\t" if path.suffix.lower() == ".tsv" else ",", infer_schema_length=None
        )
    raise click.BadParameter(f"{path}: expected a .csv, .tsv or .parquet table", param_hint="--table")


def _echo_issues(table: Path, issues: list) -> None:
    """Every correction on its own line; drops of the same kind on one line."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for issue in issues:
        if issue.issue in _SUMMARISED:
            grouped.setdefault((issue.issue, issue.detail), []).append(issue.model)
        else:
            click.echo(f"warning: {table.name}: {issue.model}: {issue.detail} ({issue.action})", err=True)
    for (kind, detail), models in grouped.items():
        shown = ", ".join(models[:5]) + (f", … (+{len(models) - 5})" if len(models) > 5 else "")
        click.echo(f"warning: {table.name}: {len(models)} rows dropped, {detail} [{kind}]: {shown}", err=True)


def _load_fit(fit: str, root):
    return load_fit(fit, root, "boundary")


@click.command("boundary")
@root_option
@click.option(
    "--table", "table_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--x", default="flops", show_default=True, help="Compute column; 'flops' finds or computes 6·N·D."
)
@click.option("--y", required=True, help="Score column, e.g. MMLU (fractions, or percentages)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Where to write the fit JSON.")
@click.option("--register", help="Also save as ROOT/predictors/NAME.json for `assay forecast`.")
@click.option("--tau", default=0.98, show_default=True, help="Quantile level of the boundary.")
@click.option("--kappa", default=50.0, show_default=True, help="Smoothing of the pinball loss.")
@click.option(
    "--lambda-b",
    "lambda_b",
    default=LAMBDA_B,
    show_default=True,
    help="Penalty λ_b·b² on the slope (METHODS §8.2 uses 1e-2).",
)
@click.option("--folds", default=5, show_default=True, help="Random folds of the backtest (0: no backtest).")
@click.option(
    "--train-fraction", default=0.7, show_default=True, help="Compute-split backtest: share fitted on."
)
@click.option(
    "--dates",
    default=None,
    help="Release-date column (2023-07 or 2023-07-18) for a temporal backtest: fit on earlier releases, "
    "test on the next period. 'builtin': Assay's approximate release months of the observational-scaling "
    "models (that table has no dates; months from general knowledge, not from the data).",
)
@click.option(
    "--cuts",
    default=None,
    help="Temporal cut dates, comma-separated (2023-01,2023-07,...); default: every January and July "
    "with 20 models before it and 8 in the half year after.",
)
@click.option(
    "--window",
    type=click.Choice(["expanding", "period"]),
    default="expanding",
    show_default=True,
    help="Temporal training set: every earlier release, or only the period before the cut (the paper's).",
)
def fit_boundary(
    root: str,
    table_path: Path,
    x: str,
    y: str,
    out: Path | None,
    register: str | None,
    tau: float,
    kappa: float,
    lambda_b: float,
    folds: int,
    train_fraction: float,
    dates: str | None,
    cuts: str | None,
    window: str,
) -> None:
    """Fit a τ-quantile capability boundary y0 + L·σ(b(z − z*)), z = log10 FLOPs, and save it as JSON.

    Rows whose compute is implausible are corrected or dropped with a warning, and listed in
    the JSON's `data_issues`. Unless --folds 0, the JSON also records random-fold and
    compute-split backtests against a constant-quantile baseline, and with --dates a temporal one.

    Example: assay fit boundary --table ../shared/data/eval_results/obsscaling/base_llm_benchmark_eval.csv
    --y MMLU --dates builtin --out mmlu.json
    """
    from assay.predictors.boundary import BoundaryPredictor
    from assay.predictors.boundary_data import BUILTIN_DATES, month_index

    targets = fit_targets(out, register, root)
    # flag errors before the fit, which takes seconds
    if (dates is not None or cuts is not None) and folds <= 0:
        raise click.UsageError("--dates and --cuts set up a backtest; they cannot go with --folds 0")
    if cuts is not None and dates is None:
        raise click.UsageError("--cuts needs --dates (a release-date column, or 'builtin')")
    cut_list = [c.strip() for c in cuts.split(",") if c.strip()] if cuts else None
    if cut_list is not None and any(math.isnan(month_index(c)) for c in cut_list):
        raise click.BadParameter(
            f"cut dates look like 2023-07 (or 2023-07-01), got {cuts!r}", param_hint="--cuts"
        )
    table = _read_table(table_path)
    if dates is not None and dates != BUILTIN_DATES and dates not in table.columns:
        raise click.BadParameter(
            f"{table_path.name} has no date column {dates!r} (columns: {', '.join(table.columns)}); "
            "'builtin' uses Assay's approximate release months",
            param_hint="--dates",
        )
    model = BoundaryPredictor(y, x, tau=tau, kappa=kappa, lambda_b=lambda_b)
    try:
        model.fit(table, warn=False)
    except ValueError as err:
        raise click.ClickException(f"{table_path}: {err}") from err
    _echo_issues(table_path, model.data_issues_)
    if folds > 0:
        try:
            model.run_backtests(
                table, folds=folds, train_fraction=train_fraction, dates=dates, cuts=cut_list, window=window
            )
        except ValueError as err:
            raise click.ClickException(f"{table_path}: {err}") from err
    doc = model.to_json()
    doc["fitted_on"]["table"] = str(table_path)
    save_fit(doc, targets)

    p, f = doc["params"], doc["fitted_on"]
    click.echo(f"{y}: τ={tau} boundary over {f['n']} models, 10^{f['z_min']:.1f}–10^{f['z_max']:.1f} FLOPs")
    click.echo(
        f"  floor {p['floor']:.3f}  ceiling {p['ceiling']:.3f}  slope b {p['b']:.3f}/decade  z* {p['z_star']:.2f}"
    )
    click.echo(
        f"  in-sample coverage {f['coverage']:.3f} (goal {tau}), pinball {f['pinball']:.4f}, "
        f"binned coverage MAE {f['binned_coverage_mae']:.3f}"
    )
    for name, s in doc["backtest"].items():
        click.echo(
            f"  backtest {name}: coverage {s['coverage']:.3f}, pinball {s['pinball']:.4f} "
            f"vs constant quantile {s['baseline_pinball']:.4f} (reduction {100 * s['pinball_reduction']:.0f}%)"
        )
        for c in s.get("cuts", []):
            click.echo(
                f"    released {c['fold']}..{c['test_to']}: fit on {c['n_train']} earlier models, "
                f"{c['n_test']} tested, coverage {c['coverage']:.3f} ({c['n_above']} above the boundary)"
            )
        if s.get("dates") == "builtin":
            click.echo(
                "    (release months: Assay's approximate months from general knowledge, not from the table)"
            )


@click.command("boundary")
@root_option
@click.option("--fit", "fit", required=True, help="A fit JSON, or a name registered under ROOT/predictors/.")
@click.option(
    "--flops", "flops", required=True, multiple=True, type=float, help="Pretraining FLOPs (repeatable)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def forecast_boundary(root: str, fit: str, flops: tuple[float, ...], as_json: bool) -> None:
    """Print the τ-quantile capability boundary (and its floor and ceiling) at FLOPs budgets."""
    import numpy as np

    from assay.predictors.boundary import BoundaryPredictor

    doc, path = _load_fit(fit, root)
    try:
        model = BoundaryPredictor.from_json(doc)
    except (KeyError, ValueError) as err:
        raise click.ClickException(f"{path}: {err}") from err
    if any(f <= 0 for f in flops):
        raise click.BadParameter("FLOPs must be positive", param_hint="--flops")
    values = model.boundary_at(np.array(flops))
    p = model.params_
    z_min, z_max = model.fitted_on_.get("z_min", -np.inf), model.fitted_on_.get("z_max", np.inf)
    rows = [
        {
            "task": model.y,
            "tau": model.tau,
            "flops": f,
            "boundary": float(v),
            "floor": p.y0,
            "ceiling": p.y0 + p.L,
            "extrapolated": not z_min <= float(np.log10(f)) <= z_max,
            "predictor": path,
            "backtest": model.backtest_,
        }
        for f, v in zip(flops, values)
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'task':<12} {'FLOPs':>10} {'boundary':>9} {'floor':>7} {'ceiling':>8}")
    for r in rows:
        mark = " *" if r["extrapolated"] else ""
        click.echo(
            f"{r['task']:<12} {r['flops']:>10.3g} {r['boundary']:>9.3f} {r['floor']:>7.3f} {r['ceiling']:>8.3f}{mark}"
        )
    if any(r["extrapolated"] for r in rows):
        click.echo(
            f"* outside the fitted compute range 10^{z_min:.1f}–10^{z_max:.1f} FLOPs: an extrapolation"
        )
    click.echo(
        f"τ = {model.tau}: {100 * model.tau:g}% of models at that compute score at or below the boundary"
    )
