"""`assay fit meta-rater NAME`: the command over `assay.pipelines.meta_rater` (METHODS.md §6.3)."""

from __future__ import annotations

from typing import Any

import click

from assay.pipelines.cli.common import root_option
from assay.pipelines.meta_rater import fit_meta_rater
from assay.scorers.meta_rater import NORMS


@click.command("meta-rater")
@click.argument("name")
@root_option
@click.option(
    "--columns",
    required=True,
    help="Score columns to weight, comma-separated (or `published`: every published score's column present).",
)
@click.option(
    "--candidates", default=32, show_default=True, type=int, help="Proxy runs (random weight vectors)."
)
@click.option(
    "--select-fraction",
    default=0.1,
    show_default=True,
    type=float,
    help="Share of the pool's tokens each run selects.",
)
@click.option("--proxy-size", default="1M", show_default=True, help="Non-embedding parameters of each proxy.")
@click.option("--proxy-tokens", default=None, help="Training tokens per proxy [20 x --proxy-size].")
@click.option(
    "--norm", type=click.Choice(NORMS), default="z", show_default=True, help="Per-column normalisation."
)
@click.option("--seq-len", default=256, show_default=True, type=int, help="Tokens per training sequence.")
@click.option("--vocab", default=8192, show_default=True, type=int, help="Vocabulary of the proxies' BPE.")
@click.option(
    "--search-samples", default=100_000, show_default=True, type=int, help="Weight vectors predicted."
)
@click.option("--top-k", default=128, show_default=True, type=int, help="Best predicted vectors averaged.")
@click.option(
    "--seed", default=0, show_default=True, type=int, help="Weights, selection, initialisation, folds."
)
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu or cuda.")
@click.option(
    "--threads", default=1, show_default=True, type=int, help="CPU threads for torch (1: repeatable)."
)
@click.option("--quiet", is_flag=True, help="No progress output.")
def fit_meta_rater_command(name: str, root: str, **options: Any) -> None:
    """Learn Meta-rater weights: proxies on top-k selections, LightGBM, search (METHODS.md §6.3).

    Writes ROOT/models/meta_rater_NAME.json; score with `assay annotate --scorer meta_rater:weights=NAME`.
    """
    doc = fit_meta_rater(root, name, **options)
    reg, losses = doc["regressor"], [c["heldout_loss"] for c in doc["candidates"]]
    click.echo(
        f"{len(losses)} proxies ({doc['proxy']['size']}, {doc['proxy']['tokens']:,} tokens each): held-out loss "
        f"{min(losses):.4f}-{max(losses):.4f}; regressor cross-validated MAE {reg['mae']:.4f} "
        f"(constant baseline {reg['baseline_mae']:.4f})"
    )
    click.echo(f"learned weights (predicted loss {doc['search']['predicted']:.4f}):")
    for column, w in sorted(doc["weights"].items(), key=lambda kv: -kv[1]):
        click.echo(f"  {column:40s} {w:.4f}")
    click.echo(f"wrote {doc['path']}")
