"""CLI: `assay forecast` (the user's question) and `assay fit transfer` (the loss link it needs)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from assay.pipelines.cli.common import expand_paths, fit_targets, root_option, save_fit


@click.command()
@root_option
@click.option(
    "--mixture", default=None, help="A mixture selected with `assay select` (its token shares by source)."
)
@click.option(
    "--weights",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Or a JSON file {domain: weight}.",
)
@click.option("--n", "n", type=float, required=True, help="Model parameters (non-embedding), e.g. 7e9.")
@click.option("--d", "d", type=float, required=True, help="Training tokens, e.g. 2e12.")
@click.option(
    "--baseline",
    default=None,
    help="`pool` (the whole corpus, i.e. what a uniform sample of it gives) or another mixture: adds the expected gain over it.",
)
@click.option(
    "--facts", default=None, help="A registered fact set: adds expected closed-book QA accuracy (SMI)."
)
@click.option(
    "--map",
    "domain_map",
    multiple=True,
    metavar="SOURCE=DOMAIN",
    help="Map a mixture source to the mixture regressor's domain name.",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    default=None,
    help="Draw accuracy vs compute to a PNG: the ladder curve and the composed forecast of the table.",
)
def forecast(root, mixture, weights, n, d, baseline, facts, domain_map, fmt, plot):
    """Expected accuracy per task of a model with N parameters trained on D tokens of a mixture.

    Uses every predictor registered under ROOT/predictors/ (fit commands with --register NAME):
    one row per task with the expected accuracy, its interval, the predictors that produced it
    and their backtest error. See the README for how predictors are composed.
    """
    from assay.pipelines.forecast import forecast as run_forecast
    from assay.pipelines.forecast import mixture_weights

    root = Path(root)
    if mixture and weights:
        raise click.UsageError("give --mixture or --weights, not both")
    bad = [item for item in domain_map if "=" not in item]
    if bad:
        raise click.BadParameter(f"{bad[0]!r} is not SOURCE=DOMAIN", param_hint="--map")
    mapping = dict(item.split("=", 1) for item in domain_map)

    def weights_of(name: str | None, path: str | None) -> dict | None:
        if path:
            return json.loads(Path(path).read_text())
        return mixture_weights(root, name, mapping) if name else None

    rows = run_forecast(root, weights_of(mixture, weights), n, d, mixture=mixture, facts=facts)
    if baseline:
        base_rows = run_forecast(root, weights_of(baseline, None), n, d, baseline, facts)
        base = {r["task"]: r for r in base_rows}
        for r in rows:
            if r["task"] in base:
                r["gain_vs_baseline"] = r["predicted"] - base[r["task"]]["predicted"]
    if plot:
        from assay.pipelines.forecast import registered
        from assay.predictors.ladder import LadderPredictor
        from assay.predictors.ladder_plot import plot_forecast

        ladders = registered(root).get("ladder")
        if not ladders:
            raise click.ClickException("--plot needs a registered ladder predictor")
        composed = {r["task"]: r for r in rows}
        label = f"forecast for {mixture or 'these weights'}" if (mixture or weights) else "forecast"
        plot_forecast(LadderPredictor.from_json(ladders[0][1]), n, d, plot, composed, label)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"forecast: N={n:.3g}, D={d:.3g}" + (f", mixture {mixture}" if mixture else ""))
    cols = ["task", "predicted", "lower", "upper", "backtest_abs_error"]
    if len({r["predictor"] for r in rows}) > 1:
        cols.append("predictor")
    else:
        table.caption = f"predictors: {rows[0]['predictor']}"
    if any("loss_ratio" in r for r in rows):
        cols.insert(4, "loss_ratio")
    if baseline:
        cols.insert(4, "gain_vs_baseline")
    if any(r.get("warning") for r in rows):
        cols.append("warning")
    headers = {
        "backtest_abs_error": "backtest err",
        "gain_vs_baseline": "gain",
        "loss_ratio": "loss ratio",
        "warning": "extrapolates",
    }
    for c in cols:
        table.add_column(headers.get(c, c), overflow="fold")

    def cell(r: dict, c: str) -> str:
        if c == "warning":
            return "yes (below)" if r.get(c) else ""
        v = r.get(c)
        return "" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    for r in rows:
        table.add_row(*[cell(r, c) for c in cols])
    console = Console()
    console.print(table)
    for note in sorted({r["warning"] for r in rows if r.get("warning")}):
        console.print(f"[yellow]warning: extrapolating: {note}[/yellow]", highlight=False)


@click.command()
@root_option
@click.option("--runs", required=True, help="Glob of OLMo ladder CSVs (quote it).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Fit JSON to write.")
@click.option("--register", default=None, help="Save as ROOT/predictors/NAME.json for `assay forecast`.")
def fit_transfer(root, runs, out, register):
    """Fit the link from a reference validation loss to each task's bits-per-byte on ladder runs.

    `assay forecast` uses it to carry a mixture regressor's predicted loss change over to task
    accuracy; prints its held-out-size backtest (fit without 3B, predict 3B).
    """
    from assay.predictors.ladder_data import read_olmo_ladder
    from assay.predictors.transfer import LossTransfer, read_reference_loss

    targets = fit_targets(out, register, root)
    paths = expand_paths(runs)
    table, ref = read_olmo_ladder(paths), read_reference_loss(paths)
    link = LossTransfer().fit(table, ref)
    saved = link.to_json()
    sizes = sorted({p.split("/")[-1].split("-")[0] for p in paths})
    if len(sizes) > 1:
        bt = link.backtest(table, ref, sizes[-1] if "3B" not in sizes else "3B")
        per_task = {t: float(bt.filter(bt["task"] == t)["rel_error"].mean()) for t in sorted(set(bt["task"]))}
        saved["backtest"] = {
            "held_out_size": "3B" if "3B" in sizes else sizes[-1],
            "rel_error_by_task": per_task,
        }
        for task, err in per_task.items():
            click.echo(
                f"{task:14s} elasticity {link.params[task]['elasticity']:.3f}  held-out bpb error {err:.2%}"
            )
    save_fit(saved, targets)
