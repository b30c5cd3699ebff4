"""`assay train rater NAME --target COLUMN`: distil an expensive rating column into a cheap rater.

The rater (fastText on quantised levels, or ridge regression on ``embed`` vectors; see
``assay.scorers.rater``) learns from a sample of the rated documents and reports its agreement
with the target on held-out ones; then ``assay annotate --scorer rater:NAME`` applies it to every
document as ``rater_NAME``.
"""

from __future__ import annotations

import click

from assay.pipelines.cli.common import root_option


@click.command("rater")
@root_option
@click.argument("name")
@click.option(
    "--target", required=True, help="Annotation column to imitate (e.g. qurating_educational_value)."
)
@click.option("--sample", default=None, type=int, help="Rated documents to learn from [all].")
@click.option("--kind", type=click.Choice(["fasttext", "embedding"]), default="fasttext", show_default=True)
@click.option(
    "--levels", default=5, show_default=True, help="Score levels (fastText labels; accuracy per level)."
)
@click.option("--holdout", default=0.1, show_default=True, help="Share of the sample held out for agreement.")
@click.option("--seed", default=0, show_default=True)
@click.option("--epoch", default=25, show_default=True, help="fastText epochs.")
@click.option("--lr", default=0.5, show_default=True, help="fastText learning rate.")
@click.option("--dim", default=64, show_default=True, help="fastText dimension.")
@click.option("--word-ngrams", default=2, show_default=True, help="fastText word n-grams.")
@click.option("--alpha", default=1.0, show_default=True, help="Ridge penalty (embedding kind).")
@click.option(
    "--encoder", default="all-MiniLM-L6-v2", show_default=True, help="Embedding model (embedding kind)."
)
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda (embedding kind).")
def train_rater(
    root,
    name,
    target,
    sample,
    kind,
    levels,
    holdout,
    seed,
    epoch,
    lr,
    dim,
    word_ngrams,
    alpha,
    encoder,
    device,
):
    """Train distilled rater NAME on the documents rated by --target (saved under ROOT/models/rater_NAME/)."""
    from assay.corpora.manifest import require_root
    from assay.scorers import rater

    root_p = require_root(root)
    click.echo(f"training a {kind} rater of {target}...", err=True)
    record = rater.train(
        root_p,
        name,
        target,
        kind=kind,
        sample=sample,
        levels=levels,
        holdout=holdout,
        seed=seed,
        fasttext_settings={"epoch": epoch, "lr": lr, "dim": dim, "word_ngrams": word_ngrams},
        alpha=alpha,
        encoder=encoder,
        device=device,
    )
    held, s = record["heldout"], record["sample"]
    rho = "n/a" if held["spearman"] is None else f"{held['spearman']:.3f}"
    click.echo(
        f"rater_{name} ({kind}) learnt {target} from {s['train']:,} of {s['rated']:,} rated documents; "
        f"on {s['heldout']:,} held out: Spearman {rho}, level accuracy {held['level_accuracy']:.3f}"
    )
    for level in held["levels"]:
        acc = "n/a" if level["accuracy"] is None else f"{level['accuracy']:.3f}"
        click.echo(
            f"  level {level['level']} (value {level['value']:.4g}): {level['documents']:,} documents, accuracy {acc}"
        )
    click.echo(f"now `assay annotate --scorer rater:{name}` writes rater_{name} for every document")
