"""`assay fit smi`, `assay predict smi` and `assay forecast cbqa`: the SMI closed-book QA predictor.

`fit smi` reads per-fact counts with observed accuracy (the SMI repository's merge_outputs layout,
or any table with its columns) for one or more model sizes, prints the paper's CO-OCCUR / MI / SMI
table per model and saves the fit as JSON. `predict smi` applies a fit to a counts file;
`forecast cbqa` to the fact counts of a corpus, a SQL selection of it or a mixture, read from the
catalog's `fact_counts` view and its `fact_counts_where` / `fact_counts_mixture` table macros.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from assay.corpora.facts import read_fact_counts
from assay.pipelines.cli.common import fit_targets, load_fit, root_option, save_fit
from assay.predictors.smi_cross import DEFAULT_RULES, RULES, TREND_SIZES, rule_label

_DEFAULTS = "; ".join(f"{w}: {rule_label(r)}" for w, r in DEFAULT_RULES.items())


def _size(text: str) -> float:
    from assay.predictors.smi_data import parse_model_size

    try:
        return parse_model_size(text)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _model_spec(spec: str) -> tuple[Path, float | None]:
    """FILE:SIZE, or FILE alone when its name carries the size (pythia-1.4b.json.gz)."""
    path, _, size = spec.rpartition(":")
    if path and not Path(spec).exists():
        return Path(path), _size(size)
    return Path(spec), None


def _fmt(v: float) -> str:
    return f"{v:.4f}"


def print_paper_table(predictor) -> None:
    for m in predictor.models_:
        click.echo(
            f"{m['model']}  (N = {m['model_size']:.4g}; {m['n_kept']:,} of {m['n_facts']:,} facts with MI > 0)"
        )
        click.echo(f"  {'method':<9} {'R2':>7} {'slope':>8} {'intercept':>10} {'MSE':>7} {'upper bound':>12}")
        for method, row in m["paper"].items():
            click.echo(
                f"  {method:<9} {_fmt(row['r2']):>7} {_fmt(row['slope']):>8} {_fmt(row['intercept']):>10}"
                f" {_fmt(row['mse']):>7} {_fmt(row['upper_bound']):>12}"
            )


def describe_backtest(summary: dict | None) -> str:
    if not summary:
        return "backtest: not run"
    if summary["hold_out"] == "size":
        last = summary["largest"]
        return (
            f"backtest (forward over sizes; {last['model']} predicted from sizes <= "
            f"{last['fit_on_max_size']:.3g}): per-bin MAE {last['bin_mae']:.4f} (its own fit "
            f"{last['floor_bin_mae']:.4f}), per-fact MAE {last['fact_mae']:.4f}, mean-accuracy error "
            f"{last['mean_error']:+.4f}; over all {len(summary['rows'])} steps per-bin MAE "
            f"{summary['bin_mae']:.4f}, worst mean-accuracy error {summary['mean_error_max']:.4f}"
        )
    return (
        f"backtest ({summary['folds']}-fold held-out facts): per-bin MAE {summary['bin_mae']:.4f}, "
        f"per-fact MAE {summary['fact_mae']:.4f}, worst mean-accuracy error {summary['mean_error_max']:.4f}"
    )


def _load_fit(fit: str, root):
    from assay.predictors.smi import SMIPredictor

    return load_fit(fit, root, "smi", SMIPredictor)


@click.command("smi")
@root_option
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    help="FILE:SIZE, e.g. pythia-12b.json.gz:12e9 (per-fact counts + acc); repeat for more sizes. "
    "SIZE may be left out when the file name carries it.",
)
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Fit JSON to write.")
@click.option("--register", default=None, help="Save as ROOT/predictors/NAME.json for `assay forecast`.")
@click.option(
    "--weighting",
    type=click.Choice(["bins", "facts"]),
    default="bins",
    show_default=True,
    help="bins: the paper's fit over bin means; facts: bins weighted by their facts.",
)
@click.option(
    "--rule",
    type=click.Choice(RULES),
    default=None,
    help="How the line continues past the fitted sizes: trend (damped ln N trend), pool (one line "
    "over all fitted models' facts), shrink (pooled + weight·(trend − pooled)), power (each "
    f"coefficient c + b·N^-alpha). Default: chosen leaving one family out ({_DEFAULTS}).",
)
@click.option(
    "--damping", type=float, default=None, help="trend/shrink: share of the ln N trend past the fit."
)
@click.option("--trend-sizes", default=TREND_SIZES, show_default=True, help="Sizes whose trend is used.")
@click.option("--shrink-weight", type=float, default=None, help="shrink: weight of the trend, 0–1 (0.5).")
@click.option("--alpha", type=float, default=None, help="power: size exponent (0: c + b·ln N; default 0).")
@click.option("--no-backtest", is_flag=True, help="Skip the backtest (faster; no interval for the mean).")
def fit_smi(
    root, models, out, register, weighting, rule, damping, trend_sizes, shrink_weight, alpha, no_backtest
) -> None:
    """Fit the SMI predictor on per-fact counts and observed accuracy of one or more models.

    Prints, per model, R², slope, intercept, MSE and upper bound of CO-OCCUR, MI and SMI as the
    paper defines them, then the cross-size rule and the backtest, and writes the fit as JSON.
    """
    from assay.predictors.smi import SMIPredictor
    from assay.predictors.smi_data import load_model_table

    targets = fit_targets(out, register, root)
    specs = [_model_spec(s) for s in models]
    for path, _ in specs:
        if not path.exists():
            raise click.UsageError(f"--model {path}: no such file")
    try:
        table = load_model_table(specs)
        predictor = SMIPredictor(
            weighting=weighting,
            rule=rule,
            damping=damping,
            trend_sizes=trend_sizes,
            weight=shrink_weight,
            alpha=alpha,
        )
        predictor.fit(table, backtest=not no_backtest)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    print_paper_table(predictor)
    sizes = [m["model_size"] for m in predictor.models_]
    click.echo(
        f"cross-size rule: {predictor.trend_.describe()} past the fitted sizes "
        f"{min(sizes):.3g}–{max(sizes):.3g} (interpolated in ln N between them)"
    )
    click.echo(describe_backtest(predictor.backtest_))
    save_fit(predictor.to_json(), targets)


@click.command("smi")
@root_option
@click.option("--fit", "fit", required=True, help="Fit JSON from `assay fit smi` (or a registered name).")
@click.option("--counts", required=True, type=click.Path(dir_okay=False, exists=True), help="Counts file.")
@click.option("--model-size", required=True, help="Parameters of the model to forecast: 7e9, 7b, 410m.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--interval", is_flag=True, help="Add the lower and upper ends of each fact's interval.")
def predict_smi(root, fit, counts, model_size, fmt, interval) -> None:
    """Print the expected closed-book QA accuracy of every fact in a counts file.

    COUNTS is a merge_outputs file, a table with its columns, or a `fact_counts` export; the
    mean over facts and its interval go to stderr.
    """
    from assay.predictors.smi_data import read_counts

    predictor, _ = _load_fit(fit, Path(root))
    size = _size(model_size)
    try:
        pred = predictor.predict(read_counts(counts), size)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    cols = ["fact_id", "predicted"] + (["lower", "upper"] if interval else [])
    if fmt == "csv":
        click.echo(pred.select(cols).write_csv(), nl=False)
    else:
        click.echo(json.dumps(pred.select(cols).to_dicts()))
    s = predictor.expected_accuracy(pred, size)
    click.echo(
        f"mean expected accuracy {s['expected']:.4f} [{s['lower']:.4f}, {s['upper']:.4f}] "
        f"over {s['n_facts']:,} facts ({s['n_unseen']:,} never co-occur)",
        err=True,
    )


@click.command("cbqa")
@root_option
@click.option("--facts", required=True, help="Fact set name (as registered with `assay facts add`).")
@click.option("--where", default=None, help="SQL predicate over the annotations view: count only those docs.")
@click.option("--mixture", default=None, help="Count facts in this mixture instead of the whole corpus.")
@click.option("--model-size", required=True, help="Parameters of the model to forecast: 7e9, 7b, 410m.")
@click.option(
    "--fit", "fit", required=True, help="SMI fit JSON (or a name registered under ROOT/predictors)."
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def forecast_cbqa(root, facts, where, mixture, model_size, fit, fmt) -> None:
    """Expected closed-book QA accuracy on a fact set for a model trained on this corpus.

    Reads per-fact document counts from ROOT/catalog.duckdb, applies an SMI fit at the given
    model size and prints the mean expected accuracy, its interval and the fit's backtest error.
    """
    if where is not None and mixture is not None:
        raise click.UsageError("give --where or --mixture, not both")
    root = Path(root)
    predictor, fit_path = _load_fit(fit, root)
    size = _size(model_size)
    counts = read_fact_counts(root, facts, where, mixture)
    try:
        pred = predictor.predict_from_counts(counts, size)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    s = predictor.expected_accuracy(pred, size)
    coef = predictor.coefficients(size)
    scope = f"mixture {mixture}" if mixture else (f"docs where {where}" if where else "whole corpus")
    if fmt == "json":
        out = {"facts": facts, "scope": scope, "model_size": size, "fit": str(fit_path)} | s
        click.echo(json.dumps(out | {"coefficients": coef, "backtest": predictor.backtest_}, default=str))
        return
    click.echo(
        f"closed-book QA, fact set {facts} ({s['n_facts']:,} facts, {s['n_unseen']:,} never co-occur), "
        f"{scope}, model of {size:.3g} parameters"
    )
    click.echo(
        f"expected accuracy {s['expected']:.4f}   {s['coverage']:.0%} interval "
        f"[{s['lower']:.4f}, {s['upper']:.4f}]"
    )
    models = predictor.models_
    click.echo(
        f"predictor: SMI ({predictor.weighting} weighting, cross-size rule "
        f"{predictor.trend_.describe()}), {fit_path}, fitted on "
        f"{', '.join(m['model'] for m in models)}; at this size acc = {coef['slope']:.3f}·SMI "
        f"{coef['intercept']:+.3f}, upper bound {coef['slope'] + coef['intercept']:.3f}"
    )
    click.echo(describe_backtest(predictor.backtest_))
