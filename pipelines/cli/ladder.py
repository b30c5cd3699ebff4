"""`assay fit ladder` and `assay forecast ladder`: the task-ladder predictor from the command line."""

from __future__ import annotations

import json

import click

from assay.pipelines.cli.common import expand_paths, fit_targets, load_fit, root_option, save_fit


def _read_runs(patterns: tuple[str, ...], lm_eval: tuple[str, ...]):
    """OLMo ladder CSVs, long tables (.parquet, or .csv with the long columns) and lm-eval manifests."""
    import polars as pl

    from assay.predictors.ladder_data import LONG_SCHEMA, check_long_table, read_olmo_ladder
    from assay.predictors.lm_eval import read_lm_eval_runs

    olmo, frames = [], []
    for p in expand_paths(patterns):
        if p.endswith(".parquet"):
            frames.append(check_long_table(pl.read_parquet(p), p))
        elif set(LONG_SCHEMA) <= set(pl.read_csv(p, n_rows=0).columns):
            frames.append(check_long_table(pl.read_csv(p), p))
        else:
            olmo.append(p)
    if olmo:
        frames.append(read_olmo_ladder(olmo))
    frames += [read_lm_eval_runs(m) for m in lm_eval]
    if not frames:
        raise click.UsageError("give ladder runs with --runs 'DIR/*.csv' (or --lm-eval MANIFEST.csv)")
    return pl.concat(frames, how="diagonal_relaxed")


def _backtest_lines(summary: dict) -> list[str]:
    lines = [f"backtest: fit without {summary['hold_out']}, predict its runs' final accuracy (points)"]
    lines.append(
        f"  {'task':<14} {'runs':>4} {'mean |err|':>10} {'max':>6} {'coverage':>8} {'uncalibrated':>12}"
    )
    for task, s in summary["per_task"].items():
        lines.append(
            f"  {task:<14} {s['runs']:>4} {s['abs_error_points']:>10.2f} {s['max_error_points']:>6.2f} "
            f"{s['coverage']:>8.2f} {s['coverage_uncalibrated']:>12.2f}"
        )
    lines.append(
        f"  {'mean':<14} {'':>4} {summary['mean_abs_error_points']:>10.2f} {'':>6} {summary['coverage']:>8.2f} "
        f"{summary['coverage_uncalibrated']:>12.2f}"
    )
    if summary.get("calibration"):
        lines.append("  (the copy's interval factor: " + _calibration_text(summary["calibration"]) + ")")
    return lines


def _calibration_text(cal: dict) -> str:
    """'x1.74 from 760M (fit on 190M-370M), 1B (fit on 190M-760M): coverage there 0.83 before, 0.97 after'."""
    if not cal.get("steps"):
        return f"x{cal.get('factor', 1.0):.2f} ({cal.get('note', 'no calibration step')})"
    steps = ", ".join(
        f"{s['hold_out']} (fit on {s['fitted_on'][0]}-{s['fitted_on'][-1]})" for s in cal["steps"]
    )
    return (
        f"x{cal['factor']:.2f} from {steps}: {int(round(100 * cal['level']))}% coverage there "
        f"{cal['coverage_uncalibrated']:.2f} before, {cal['coverage_calibrated']:.2f} after"
    )


def _load_fit(fit: str, root):
    from assay.predictors.ladder import LadderPredictor

    return load_fit(fit, root, "ladder", LadderPredictor)


@click.command("ladder")
@click.option("--runs", "runs", multiple=True, help="Glob of ladder runs: OLMo ladder CSVs or long tables.")
@click.option(
    "--lm-eval", "lm_eval", multiple=True, help="CSV manifest (run,n,d,step,results) of lm-eval outputs."
)
@click.option(
    "--out", default=None, type=click.Path(dir_okay=False), help="Where to write the fitted predictor."
)
@click.option("--hold-out", default=None, help="Size left out by the backtest (default: the largest).")
@click.option("--no-backtest", is_flag=True, help="Skip the backtest.")
@click.option("--per-task-exponents", is_flag=True, help="Step 1 as published: one independent fit per task.")
@click.option(
    "--no-calibration",
    is_flag=True,
    help="Keep the plain delta-method interval (default: widen it by a factor measured on forward steps "
    "inside the ladder: each size from the third up predicted from the sizes below it).",
)
@click.option(
    "--min-tokens-per-param",
    type=float,
    default=15.0,
    show_default=True,
    help="Leave out runs trained on fewer tokens per parameter (0.5xC = 10); 0 keeps all.",
)
@click.option("--register", default=None, help="Save as ROOT/predictors/NAME.json for `assay forecast`.")
@root_option
def fit_ladder(
    runs,
    lm_eval,
    out,
    hold_out,
    no_backtest,
    per_task_exponents,
    no_calibration,
    min_tokens_per_param,
    register,
    root,
):
    """Fit task-ladder scaling laws (Bhagia et al. 2024) on ladder runs and save them as JSON.

    Step 1 maps (N, D) to task bits-per-byte, step 2 maps that to accuracy; the backtest refits
    without the largest size and reports the error on its runs. The interval is calibrated on the
    ladder's own sizes (--no-calibration: the plain delta method); the factor is saved in the JSON.

    Example: assay fit ladder --runs '../shared/data/eval_results/olmo_ladder/ladder-runs/*.csv' --out ladder.json
    """
    from assay.predictors.ladder import LadderOptions, LadderPredictor

    targets = fit_targets(out, register, root)
    table = _read_runs(runs, lm_eval)
    options = LadderOptions(
        shared_exponents=not per_task_exponents,
        min_tokens_per_param=min_tokens_per_param,
        calibrate=not no_calibration,
    )
    predictor = LadderPredictor(options)
    try:
        if not no_backtest and table["n"].n_unique() >= 4:
            predictor.backtest(table, hold_out)
            click.echo("\n".join(_backtest_lines(predictor.backtest_)))
        predictor.fit(table)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    fitted = predictor.fitted_on_
    click.echo(
        f"fitted {len(predictor.fits_)} tasks on {fitted['runs']} runs ({fitted['checkpoints']} checkpoints, "
        f"{len(fitted['sizes'])} sizes)"
    )
    if predictor.options.calibrate:
        click.echo("interval factor " + _calibration_text(predictor.calibration_))
    save_fit(predictor.to_json(), targets)


@click.command("ladder")
@click.option("--fit", "fit", required=True, help="A fitted ladder JSON, or the name of a registered one.")
@click.option("--n", "n", type=float, required=True, help="Target non-embedding parameters, e.g. 6.9e9.")
@click.option("--d", "d", type=float, required=True, help="Target training tokens, e.g. 4e12.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--plot", "plot", default=None, help="Also draw accuracy vs compute to this image file.")
@root_option
def forecast_ladder(fit, n, d, fmt, plot, root):
    """Chained ladder forecast of each task's accuracy for a model of N parameters trained on D tokens.

    JSON output: a list of {"task", "predicted", "lower", "upper"} with accuracies in [0, 1]; the
    interval is the delta method on both fits plus checkpoint noise, times the fit's calibration
    factor (see the fit's backtest coverage).
    """
    import polars as pl

    if n <= 0 or d <= 0:
        raise click.BadParameter("--n and --d must be positive")
    predictor, _ = _load_fit(fit, root)
    rows = predictor.predict(pl.DataFrame({"n": [n], "d": [d]}))
    if fmt == "json":
        out = [
            {"task": r["task"], "predicted": r["predicted"], "lower": r["lower"], "upper": r["upper"]}
            for r in rows.iter_rows(named=True)
        ]
        click.echo(json.dumps(out, indent=2))
    else:
        per_task = (predictor.backtest_ or {}).get("per_task", {})
        level = int(round(predictor.options.level * 100))
        click.echo(f"ladder forecast for N = {n:.4g}, D = {d:.4g} (C = 6ND = {6 * n * d:.3g} FLOPs)")
        click.echo(
            f"  {'task':<14} {'accuracy':>8} {f'{level}% interval':>16} {'task bpb':>8} {'backtest |err|':>14}"
        )
        for r in rows.iter_rows(named=True):
            bt = per_task.get(r["task"], {}).get("abs_error_points")
            bt_text = f"{bt:.2f} pts" if bt is not None else "-"
            interval = f"[{r['lower']:.3f}, {r['upper']:.3f}]"
            click.echo(
                f"  {r['task']:<14} {r['predicted']:>8.3f} {interval:>16} {r['bpb_predicted']:>8.3f} {bt_text:>14}"
            )
        click.echo(
            f"  interval: delta method x{predictor.factor:.2f} (calibrated on the ladder's own sizes)"
            if predictor.factor != 1.0
            else "  interval: delta method, not calibrated"
        )
        if predictor.backtest_:
            b = predictor.backtest_
            cov = f", {level}% coverage {b['coverage']:.2f}" if "coverage" in b else ""
            click.echo(
                f"  backtest (held out {b['hold_out']}): mean |err| {b['mean_abs_error_points']:.2f} points{cov}"
            )
    if plot:
        from assay.predictors.ladder_plot import plot_forecast

        plot_forecast(predictor, n, d, plot)
        if fmt == "table":
            click.echo(f"plot -> {plot}")
