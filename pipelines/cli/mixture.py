"""`assay fit mixture`, `assay predict mixture` and `assay mix search`: mixture regression from the shell."""

from __future__ import annotations

import json
from pathlib import Path

import click

from assay.corpora.atomic import write_json_atomic
from assay.pipelines.cli.common import fit_targets, load_fit, root_option, save_fit

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _table(mixtures: Path, losses: Path):
    from assay.predictors.mixture_data import load_table

    try:
        return load_table(mixtures, losses)
    except ValueError as err:
        raise click.ClickException(f"{mixtures.name} + {losses.name}: {err}") from err


def _recipe_table(mixtures: Path, results: Path, task: str, metric: str, skip_missing: bool = False):
    from assay.predictors.mixture_data import load_recipe_table

    try:
        return load_recipe_table(mixtures, results, task, metric, skip_missing)
    except (ValueError, pl_errors()) as err:
        raise click.ClickException(_one_line(err)) from err  # the message names the file


def pl_errors() -> type[Exception]:
    import polars as pl

    return pl.exceptions.PolarsError


def _one_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _read_any_mixtures(path: Path, domains: list[str]):
    """A mixture file of either layout, with the predictor's domains."""
    from assay.predictors.mixture_data import (
        align_domains,
        is_recipe_file,
        read_mixtures,
        read_recipe_mixtures,
    )

    try:
        if is_recipe_file(path):
            return align_domains(read_recipe_mixtures(path), domains)
        return read_mixtures(path)
    except (ValueError, pl_errors()) as err:
        raise click.ClickException(f"{path}: {_one_line(err)}") from err


def _note_recipes(note: dict, what: str) -> None:
    from assay.predictors.mixture_data import few

    if note["mixtures_without_result"]:
        click.echo(
            f"  {len(note['mixtures_without_result'])} {what} recipes have no result, left out: "
            f"{few(note['mixtures_without_result'])}"
        )
    if note["runs_averaged"] > note["n_recipes"]:
        click.echo(f"  {note['runs_averaged']} result rows averaged into {note['n_recipes']} recipes")


def _metrics(s: dict) -> str:
    return f"Spearman ρ {s['spearman']:.4f}, Pearson r {s['pearson']:.4f}, MAE {s['mae']:.4f}"


def _load_fit(fit: str, root):
    from assay.predictors.mixture import MixturePredictor

    return load_fit(fit, root, "mixture", MixturePredictor)


@click.command("mixture")
@root_option
@click.option(
    "--mixtures",
    required=True,
    type=_FILE,
    help="Mixture weights: index + one column per domain (with --losses), or rows recipe,domain,weight "
    "(with --results; a domain a recipe does not list weighs 0).",
)
@click.option("--losses", type=_FILE, help="Losses of the same mixtures, joined on index (wide layout).")
@click.option(
    "--results",
    type=_FILE,
    help="Or results in the long format (recipe,task,metric,value), joined on recipe; needs --task, --metric.",
)
@click.option("--task", help="With --results: the task to regress on.")
@click.option("--metric", help="With --results: the metric of --task (bpb, avg_score, …).")
@click.option(
    "--target",
    default=None,
    help="With --losses: a loss column, its short name, or 'mean' for the mean over all loss "
    "columns [default: pile_cc].",
)
@click.option(
    "--method",
    type=click.Choice(["lightgbm", "linear", "mixing_law"]),
    default="lightgbm",
    show_default=True,
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Where to write the fit JSON.")
@click.option("--register", help="Also save as ROOT/predictors/NAME.json for `assay forecast`.")
@click.option("--test-mixtures", type=_FILE, help="Held-out mixtures to backtest on (never used to fit).")
@click.option("--test-losses", type=_FILE, help="Losses of the held-out mixtures (wide layout).")
@click.option(
    "--test-results", type=_FILE, help="Long-format results of the held-out recipes [default: --results]."
)
@click.option(
    "--skip-missing",
    is_flag=True,
    help="With --results: leave out (and list) recipes that have weights but no result, instead of refusing.",
)
@click.option("--folds", default=5, show_default=True, help="Folds: LightGBM early stopping and bagging.")
@click.option("--repeats", default=1, show_default=True, help="Repeated k-fold: more bagged models.")
@click.option("--seed", default=42, show_default=True)
def fit_mixture(
    root: str,
    mixtures: Path,
    losses: Path | None,
    results: Path | None,
    task: str | None,
    metric: str | None,
    target: str | None,
    method: str,
    out: Path | None,
    register: str | None,
    test_mixtures: Path | None,
    test_losses: Path | None,
    test_results: Path | None,
    skip_missing: bool,
    folds: int,
    repeats: int,
    seed: int,
) -> None:
    """Fit a regressor from mixture weights to a validation loss or task score (RegMix) and save it.

    Two layouts: --mixtures (index + one column per domain) with --losses (wide); or --mixtures
    with rows recipe,domain,weight and --results in the long format with --task and --metric
    (several runs of one recipe are averaged; each recipe's weights must sum to 1 ± 0.05 and are
    rescaled to exactly 1, other sums are refused; a recipe without a result is refused unless
    --skip-missing). LightGBM models stop early on held-out folds of the training mixtures
    and are averaged; the JSON records the out-of-fold backtest and, with --test-mixtures, the
    held-out one. A fit of a metric that is not a loss (acc, avg_score, …) is marked so: `assay
    forecast` does not take it for the reference loss, and `assay mix search` maximises it.
    """
    from assay.predictors.mixture import MixturePredictor
    from assay.predictors.mixture_data import RECIPE, is_loss_metric, is_recipe_file, results_column

    targets = fit_targets(out, register, root)
    if (losses is None) == (results is None):
        raise click.UsageError("give --losses (wide layout) or --results (long format), one of the two")
    if results is not None:
        if not task or not metric:
            raise click.UsageError("--results needs --task and --metric (the result to regress on)")
        if target is not None:
            raise click.UsageError("--target is for --losses; with --results the target is --task/--metric")
        if test_losses is not None:
            raise click.UsageError(
                "with --results, held-out results come from --test-results, not --test-losses"
            )
        if test_results is not None and test_mixtures is None:
            raise click.UsageError("--test-results needs --test-mixtures")
        table, note = _recipe_table(mixtures, results, task, metric, skip_missing)
        target, source = results_column(task, metric), results
    else:
        if task or metric or test_results is not None or skip_missing:
            raise click.UsageError(
                "--task, --metric, --test-results and --skip-missing go with --results, not --losses"
            )
        if (test_mixtures is None) != (test_losses is None):
            raise click.UsageError("give both --test-mixtures and --test-losses, or neither")
        if is_recipe_file(mixtures):
            raise click.UsageError(
                f"{mixtures.name} has rows recipe,domain,weight: give its results with --results, --task, --metric"
            )
        table, note, target, source = _table(mixtures, losses), None, target or "pile_cc", losses
    try:
        model = MixturePredictor(method=method, target=target, n_folds=folds, n_repeats=repeats, seed=seed)
        model.fit(table)
    except ValueError as err:
        raise click.ClickException(f"{mixtures.name} + {source.name}: {err}") from err
    doc = model.to_json()
    if note is None:
        doc["fitted_on"].update({"mixtures": str(mixtures), "losses": str(losses)})
    else:
        doc["fitted_on"].update(
            {"layout": "recipes", "mixtures": str(mixtures), "results": str(results), "task": task,
             "metric": metric, "target_is_loss": is_loss_metric(metric), "recipes": note}
        )  # fmt: skip
    if test_mixtures is not None and note is not None:
        held_results = test_results or results
        test, _ = _recipe_table(test_mixtures, held_results, task, metric, skip_missing)
        shared = sorted(set(test[RECIPE]) & set(table[RECIPE]))
        if shared:
            raise click.ClickException(
                f"{test_mixtures.name}: {len(shared)} held-out recipes are also training recipes "
                f"({', '.join(shared[:3])}); held-out mixtures must not be fitted on"
            )
        try:
            held = model.backtest(test).row(0, named=True)
        except ValueError as err:
            raise click.ClickException(f"{test_mixtures.name} + {held_results.name}: {err}") from err
        doc["backtest"]["held_out"] = {"mixtures": str(test_mixtures), "results": str(held_results), **held}
    elif test_mixtures is not None:
        try:
            held = model.backtest(_table(test_mixtures, test_losses)).row(0, named=True)
        except ValueError as err:
            raise click.ClickException(f"{test_mixtures.name} + {test_losses.name}: {err}") from err
        doc["backtest"]["held_out"] = {"mixtures": str(test_mixtures), "losses": str(test_losses), **held}
    save_fit(doc, targets)
    if note is not None:
        _note_recipes(note, "training")

    f = doc["fitted_on"]
    what = (
        f"{task}/{metric}"
        if note is not None
        else f"{len(f['target_columns'])} loss column{'s' if len(f['target_columns']) > 1 else ''}"
    )
    click.echo(f"{method} on {f['n_mixtures']} mixtures × {len(f['domains'])} domains ({what})")
    click.echo(f"  out-of-fold ({folds} folds): {_metrics(doc['backtest']['out_of_fold'])}")
    if "held_out" in doc["backtest"]:
        h = doc["backtest"]["held_out"]
        click.echo(f"  held out ({h['n']} mixtures): {_metrics(h)}, interval coverage {h['coverage']:.2f}")
    low, high = doc["interval"]["residual_quantiles"]
    click.echo(f"  {100 * model.interval:.0f}% interval: prediction {low:+.4f} / {high:+.4f}")


@click.command("mixture")
@root_option
@click.option("--fit", "fit", required=True, help="A fit JSON, or a name registered under ROOT/predictors/.")
@click.option(
    "--mixtures",
    required=True,
    type=_FILE,
    help="Mixture weights: index + one column per domain, or rows recipe,domain,weight.",
)
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
def predict_mixture(root: str, fit: str, mixtures: Path, fmt: str) -> None:
    """Print the predicted target of every mixture, keyed by the file's index column, or by
    recipe for a recipe,domain,weight file (either layout works with either kind of fit)."""
    model, _ = _load_fit(fit, root)
    try:
        predicted = model.predict(_read_any_mixtures(mixtures, model.domains_)).drop("spread")
    except ValueError as err:
        raise click.ClickException(f"{mixtures}: {err}") from err
    if fmt == "json":
        click.echo(json.dumps(predicted.to_dicts(), indent=1))
    else:
        click.echo(predicted.write_csv().rstrip("\n"))


@click.command("search")
@root_option
@click.option("--fit", "fit", required=True, help="A fit JSON, or a name registered under ROOT/predictors/.")
@click.option(
    "--domain-tokens",
    type=_FILE,
    help="Tokens available per domain (JSON {domain: tokens} or CSV domain,tokens): prior and caps.",
)
@click.option("--tokens", type=float, help="Planned training tokens (default: all available tokens).")
@click.option("--max-epochs", default=15.0, show_default=True, help="Most repeats of a domain (RegMix: 15).")
@click.option("--samples", default=100_000, show_default=True, help="Dirichlet draws to score.")
@click.option("--top-k", default=128, show_default=True, help="Best draws averaged into the proposal.")
@click.option("--concentration", default=1.0, show_default=True, help="Dirichlet(prior × concentration).")
@click.option("--seed", default=42, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the result as JSON.")
@click.option(
    "--absent-as-zero",
    is_flag=True,
    help="Domains the --domain-tokens file does not list have no tokens (else that is an error).",
)
def mix_search(
    root: str,
    fit: str,
    domain_tokens: Path | None,
    tokens: float | None,
    max_epochs: float,
    samples: int,
    top_k: int,
    concentration: float,
    seed: int,
    fmt: str,
    out: Path | None,
    absent_as_zero: bool,
) -> None:
    """Propose the mixture with the lowest predicted loss (mean of the top-k Dirichlet draws); for a
    fit of a score that is not a loss (accuracy, avg_score) the highest.

    The prior is the token distribution of --domain-tokens, else the mean training mixture. With
    --domain-tokens no domain may exceed --max-epochs × its tokens / --tokens; draws that do are
    rejected.
    """
    from assay.predictors.mixture_data import domain_name, read_domain_tokens
    from assay.predictors.mixture_search import domain_caps, search_mixture, token_prior

    model, path = _load_fit(fit, root)
    if tokens is not None and domain_tokens is None:
        raise click.UsageError("--tokens needs --domain-tokens (the tokens available per domain)")
    prior = caps = None
    try:
        if domain_tokens is not None:
            available = read_domain_tokens(domain_tokens)
            if absent_as_zero:
                listed = {domain_name(k) for k in available}
                available |= {domain_name(d): 0.0 for d in model.domains_ if domain_name(d) not in listed}
            prior = token_prior(model.domains_, available)
            caps = domain_caps(model.domains_, available, tokens, max_epochs)
        result = search_mixture(
            model,
            n_samples=samples,
            top_k=top_k,
            prior=prior,
            concentration=concentration,
            caps=caps,
            seed=seed,
        )
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    doc = {"predictor": str(path), "target": model.target, **result.to_json()}
    if out is not None:
        write_json_atomic(out, doc)
    if fmt == "json":
        click.echo(json.dumps(doc, indent=1))
        return
    click.echo(f"{'domain':<22} {'weight':>8} {'prior':>8}" + (f" {'cap':>8}" if caps is not None else ""))
    for d, w in sorted(result.weights.items(), key=lambda kv: -kv[1]):
        cap = f" {result.caps[d]:>8.4f}" if result.caps is not None else ""
        click.echo(f"{domain_name(d):<22} {w:>8.4f} {result.prior[d]:>8.4f}{cap}")
    what = "" if model.fitted_on_.get("target_is_loss") is False else " loss"
    click.echo(
        f"predicted {model.target}{what} {result.predicted:.4f} "
        f"({100 * model.interval:.0f}% interval {result.lower:.4f}–{result.upper:.4f}); "
        f"mean of the top {result.top_k} of {result.n_accepted} draws ({result.n_drawn} drawn)"
    )
    if out is not None:
        click.echo(f"wrote {out}")
