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


def _metrics(s: dict) -> str:
    return f"Spearman ρ {s['spearman']:.4f}, Pearson r {s['pearson']:.4f}, MAE {s['mae']:.4f}"


def _load_fit(fit: str, root):
    from assay.predictors.mixture import MixturePredictor

    return load_fit(fit, root, "mixture", MixturePredictor)


@click.command("mixture")
@root_option
@click.option("--mixtures", required=True, type=_FILE, help="Mixture weights: index + one column per domain.")
@click.option("--losses", required=True, type=_FILE, help="Losses of the same mixtures, joined on index.")
@click.option(
    "--target",
    default="pile_cc",
    show_default=True,
    help="A loss column, its short name (pile_cc), or 'mean' for the mean over all loss columns.",
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
@click.option("--test-losses", type=_FILE, help="Losses of the held-out mixtures.")
@click.option("--folds", default=5, show_default=True, help="Folds: LightGBM early stopping and bagging.")
@click.option("--repeats", default=1, show_default=True, help="Repeated k-fold: more bagged models.")
@click.option("--seed", default=42, show_default=True)
def fit_mixture(
    root: str,
    mixtures: Path,
    losses: Path,
    target: str,
    method: str,
    out: Path | None,
    register: str | None,
    test_mixtures: Path | None,
    test_losses: Path | None,
    folds: int,
    repeats: int,
    seed: int,
) -> None:
    """Fit a regressor from mixture weights to a validation loss (RegMix) and save it as JSON.

    LightGBM models stop early on held-out folds of the training mixtures and are averaged; the
    JSON records the out-of-fold backtest and, with --test-mixtures/--test-losses, the held-out one.
    """
    from assay.predictors.mixture import MixturePredictor

    targets = fit_targets(out, register, root)
    if (test_mixtures is None) != (test_losses is None):
        raise click.UsageError("give both --test-mixtures and --test-losses, or neither")
    table = _table(mixtures, losses)
    try:
        model = MixturePredictor(method=method, target=target, n_folds=folds, n_repeats=repeats, seed=seed)
        model.fit(table)
    except ValueError as err:
        raise click.ClickException(f"{mixtures.name} + {losses.name}: {err}") from err
    doc = model.to_json()
    doc["fitted_on"].update({"mixtures": str(mixtures), "losses": str(losses)})
    if test_mixtures is not None:
        try:
            held = model.backtest(_table(test_mixtures, test_losses)).row(0, named=True)
        except ValueError as err:
            raise click.ClickException(f"{test_mixtures.name} + {test_losses.name}: {err}") from err
        doc["backtest"]["held_out"] = {"mixtures": str(test_mixtures), "losses": str(test_losses), **held}
    save_fit(doc, targets)

    f = doc["fitted_on"]
    click.echo(
        f"{method} on {f['n_mixtures']} mixtures × {len(f['domains'])} domains "
        f"({len(f['target_columns'])} loss column{'s' if len(f['target_columns']) > 1 else ''})"
    )
    click.echo(f"  out-of-fold ({folds} folds): {_metrics(doc['backtest']['out_of_fold'])}")
    if "held_out" in doc["backtest"]:
        h = doc["backtest"]["held_out"]
        click.echo(f"  held out ({h['n']} mixtures): {_metrics(h)}, interval coverage {h['coverage']:.2f}")
    low, high = doc["interval"]["residual_quantiles"]
    click.echo(f"  {100 * model.interval:.0f}% interval: prediction {low:+.4f} / {high:+.4f}")


@click.command("mixture")
@root_option
@click.option("--fit", "fit", required=True, help="A fit JSON, or a name registered under ROOT/predictors/.")
@click.option("--mixtures", required=True, type=_FILE, help="Mixture weights in the training file's layout.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
def predict_mixture(root: str, fit: str, mixtures: Path, fmt: str) -> None:
    """Print the predicted target loss of every mixture row, keyed by the file's index column."""
    from assay.predictors.mixture_data import read_mixtures

    model, _ = _load_fit(fit, root)
    try:
        predicted = model.predict(read_mixtures(mixtures)).drop("spread")
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
    """Propose the mixture with the lowest predicted loss (mean of the top-k Dirichlet draws).

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
    click.echo(
        f"predicted {model.target} loss {result.predicted:.4f} "
        f"({100 * model.interval:.0f}% interval {result.lower:.4f}–{result.upper:.4f}); "
        f"mean of the top {result.top_k} of {result.n_accepted} draws ({result.n_drawn} drawn)"
    )
    if out is not None:
        click.echo(f"wrote {out}")
