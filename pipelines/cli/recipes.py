"""`assay fit recipes`, `assay predict recipes` and `assay decide`: the recipe predictor from the shell."""

from __future__ import annotations

import json
from pathlib import Path

import click

from assay.pipelines.cli.common import expand_paths, fit_targets, load_fit, root_option, save_fit


def _read_runs(patterns: tuple[str, ...]):
    from assay.predictors.recipes_data import read_long

    try:
        return read_long(expand_paths(patterns))
    except (ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from err


def _load_fit(fit: str, root):
    from assay.predictors.recipes import RecipePredictor

    return load_fit(fit, root, "recipes", RecipePredictor)


def _points(value: float, low: bool) -> str:
    return f"{value:.4f}" if low else f"{100 * value:.1f}"


@click.command("recipes")
@click.option(
    "--runs", "runs", multiple=True, required=True, help="Result files (or globs) in the long format."
)
@click.option(
    "--out", default=None, type=click.Path(dir_okay=False), help="Where to write the fitted predictor."
)
@click.option("--register", default=None, help="Also save as ROOT/predictors/NAME.json.")
@click.option(
    "--tasks", default=None, help="Comma-separated TASK or TASK/METRIC to fit (default: every one)."
)
@click.option(
    "--loss",
    type=click.Choice(["auto", "reference", "direct"]),
    default="auto",
    show_default=True,
    help="The loss accuracy is mapped from: the task's own (else the reference), the reference, or none.",
)
@click.option(
    "--offset-window",
    type=float,
    default=1.0,
    show_default=True,
    help="Recipe offset from its runs within this compute ratio of its largest (1: that level; 0: none).",
)
@click.option(
    "--repeats",
    type=click.Choice(["mean", "best"]),
    default="mean",
    show_default=True,
    help="Runs of one recipe at one (N, D): their mean, or the best one.",
)
@click.option("--level", type=float, default=0.9, show_default=True, help="Interval coverage.")
@click.option(
    "--hold-out",
    type=click.Choice(["flops", "params", "tokens", "none"]),
    default="flops",
    show_default=True,
    help="Backtest: refit without the runs at the largest value of this axis and predict them.",
)
@root_option
def fit_recipes(runs, out, register, tasks, loss, offset_window, repeats, level, hold_out, root):
    """Fit how each recipe's scores grow with model size N and tokens D, and save it as JSON.

    Per task: a loss law in (N, D) per recipe with exponents shared across recipes, a map from
    loss to the score shared across recipes, and a per-recipe offset at its largest runs.

    Example: assay fit recipes --runs ../shared/data/eval_results/recipes/gadre_long.csv --out gadre.json
    """
    from assay.predictors.recipes import RecipeOptions, RecipePredictor

    targets = fit_targets(out, register, root)
    if not 0 < level < 1:
        raise click.BadParameter("--level must be between 0 and 1", param_hint="--level")
    if offset_window < 0:
        raise click.BadParameter("--offset-window must be >= 0", param_hint="--offset-window")
    table = _read_runs(runs)
    names = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    options = RecipeOptions(loss=loss, offset_window=offset_window, repeats=repeats, level=level, tasks=names)
    predictor = RecipePredictor(options)
    try:
        predictor.fit(table)
        if hold_out != "none" and table[hold_out].n_unique() >= 3:
            _backtest(predictor, table, hold_out)
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    modes: dict[str, int] = {}
    for fit in predictor.targets_.values():
        mode = predictor.curves_[fit.x].mode
        modes[mode] = modes.get(mode, 0) + 1
    f = predictor.fitted_on_
    click.echo(
        f"fitted {len(predictor.targets_)} targets for {len(f['recipes'])} recipes on {f['runs']} runs "
        f"({', '.join(f'{k} {v}' for k, v in sorted(modes.items()))}); interval factor kappa {predictor.kappa_:.2f}"
    )
    if predictor.skipped_:
        click.echo(
            f"  skipped {len(predictor.skipped_)} targets that cannot be fitted (listed in the JSON's fitted_on)"
        )
    if modes.get("fixed"):
        click.echo("  'fixed' targets have runs at a single scale: they predict at that scale only")
    save_fit(predictor.to_json(), targets)


def _backtest(predictor, table, axis: str) -> None:
    from assay.predictors.recipes import RecipePredictor

    probe = RecipePredictor(predictor.options)
    try:
        probe.backtest(table, axis)
    except ValueError as err:  # e.g. the runs below the largest size have a single scale
        click.echo(f"backtest at the largest {axis} skipped: {err}")
        return
    b = probe.backtest_
    predictor.backtest_ = b
    click.echo(
        f"backtest: fit below {axis} {b['held_out_from']:.3g}, predict the {b['n']} held-out points: "
        f"MAE {b['mae_points']:.2f} points, Spearman {b['spearman']:.3f}, "
        f"pairwise {b['pairwise']:.3f} ({b['pairs']} pairs), coverage {b['coverage']:.2f}"
    )


@click.command("recipes")
@click.option("--fit", "fit", required=True, help="A fitted recipes JSON, or the name of a registered one.")
@click.option(
    "--targets",
    "targets_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV with columns recipe, params, tokens, task, metric.",
)
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@root_option
def predict_recipes(fit, targets_path, fmt, root):
    """Predict each target row's score, with the interval: columns predicted, lower, upper added."""
    import polars as pl

    predictor, _ = _load_fit(fit, root)
    try:
        rows = pl.read_csv(targets_path, infer_schema_length=None)
    except pl.exceptions.NoDataError as err:
        raise click.ClickException(f"{targets_path}: the file is empty") from err
    except pl.exceptions.PolarsError as err:
        raise click.ClickException(f"{targets_path}: not a readable CSV ({type(err).__name__})") from err
    if rows.is_empty():
        raise click.ClickException(f"{targets_path}: no target rows")
    try:
        out = predictor.predict(rows).drop("sd")
    except ValueError as err:
        raise click.ClickException(f"{targets_path}: {err}") from err
    if fmt == "json":
        click.echo(json.dumps(out.to_dicts(), indent=1))
    else:
        click.echo(out.write_csv().rstrip("\n"))


@click.command("decide")
@click.option("--fit", "fit", required=True, help="A fitted recipes JSON, or the name of a registered one.")
@click.option("--n", "n", type=float, required=True, help="Target model parameters, e.g. 1.4e9.")
@click.option("--d", "d", type=float, required=True, help="Target training tokens, e.g. 2.9e10.")
@click.option("--task", required=True, help="TASK, or TASK/METRIC when the task has several.")
@click.option("--recipes", default=None, help="Comma-separated recipes to compare (default: all fitted).")
@click.option(
    "--pairs", "n_pairs", type=int, default=10, show_default=True, help="Least certain pairs shown."
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True
)
@root_option
def decide(fit, n, d, task, recipes, n_pairs, fmt, root):
    """Rank recipes at a target scale, with the probability that each pair keeps its predicted order.

    The probability is P(the first beats the second) under independent normal errors with the
    predictive standard deviations: 0.5 is a coin flip, 1 a sure order.
    """
    import numpy as np

    if n <= 0 or d <= 0:
        raise click.BadParameter("--n and --d must be positive")
    predictor, _ = _load_fit(fit, root)
    chosen = [r.strip() for r in recipes.split(",") if r.strip()] if recipes else None
    try:
        fitted = predictor.target(task)
        ranking, pairs = predictor.decide(n, d, task, chosen)
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    if fmt == "json":
        doc = {"task": fitted.task, "metric": fitted.metric, "n": n, "d": d,
               "ranking": ranking.to_dicts(), "pairs": pairs.to_dicts()}  # fmt: skip
        click.echo(json.dumps(doc, indent=1))
        return
    if fmt == "csv":
        click.echo(ranking.write_csv().rstrip("\n"))
        return
    level = int(round(100 * predictor.options.level))
    unit = "" if fitted.low else " (points)"
    click.echo(f"{fitted.task}/{fitted.metric}{unit} at N = {n:.4g}, D = {d:.4g} (C = {6 * n * d:.3g} FLOPs)")
    note = predictor.range_note(n, d)
    if note:
        click.echo(f"  beyond the fitted runs: {note}")
    width = min(max(len(r) for r in ranking["recipe"]), 48)
    click.echo(
        f"  {'rank':>4}  {'recipe':<{width}} {'predicted':>9} {f'{level}% interval':>17} {'P(> next)':>9}"
    )
    for r in ranking.iter_rows(named=True):
        interval = f"[{_points(r['lower'], fitted.low)}, {_points(r['upper'], fitted.low)}]"
        p = (
            ""
            if r["p_above_next"] is None
            else ("-" if np.isnan(r["p_above_next"]) else f"{r['p_above_next']:.2f}")
        )
        click.echo(
            f"  {r['rank']:>4}  {r['recipe'][:width]:<{width}} {_points(r['predicted'], fitted.low):>9} {interval:>17} {p:>9}"
        )
    if ranking["sd"].max() == 0:
        click.echo(
            "  no noise estimate (one run per recipe at one scale, no repeats): order probabilities unknown"
        )
    elif pairs.height:
        shown = pairs.sort("probability").head(n_pairs)
        click.echo(f"  least certain pairs (of {pairs.height}): P(better beats worse)")
        for r in shown.iter_rows(named=True):
            click.echo(f"    {r['probability']:.2f}  {r['better'][:40]} > {r['worse'][:40]}")
