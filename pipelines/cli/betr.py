"""`assay train betr NAME`: extend a BETR ranking to every document with a fastText classifier.

BETR (Mizrahi et al. 2025, §3.1 step 4; METHODS.md §3) ranks a sample of the pool against the
benchmark targets, then trains fastText to tell the top 10 % by score from the other 90 % (the
majority class downsampled to balance) and scores the whole pool with it. The hyperparameters
are the paper's (tuned with 1,000 Optuna trials): lr 0.03, dim 128, minCount 5, 5 epochs, word
bigrams. Its "window 10" is not passed: fastText's supervised mode never reads the context window
(only cbow / skipgram do). The paper reports about 75.5 % held-out accuracy.

The classifier is stored as ``models/betr_NAME_<ranking key>.fasttext.bin`` (+ the trainer's JSON
sidecar): it belongs to that ranking. From then on ``--scorer betr:NAME`` (same options) writes
the classifier's P(top) as ``betr_NAME`` for every document; ``betr:NAME:mode=rank`` keeps the
rank score.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click

from assay.pipelines.cli.common import root_option

# BETR's fastText hyperparameters (Mizrahi et al. 2025, App. B; METHODS.md §3.1 step 4)
BETR_FASTTEXT = {"lr": 0.03, "dim": 128, "epoch": 5, "word_ngrams": 2, "min_count": 5}
PAPER_ACCURACY = 0.755


def _texts(root: Path, ids: set[str]) -> Iterator[str | None]:
    """Texts of the documents whose id is in ``ids``, shard by shard (pyarrow, no SQL needed)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    wanted = pa.array(sorted(ids), pa.string())
    for shard in sorted((root / "docs").glob("part-*.parquet")):
        f = pq.ParquetFile(shard)
        for batch in f.iter_batches(batch_size=8192, columns=["id", "text"]):
            keep = pc.is_in(batch.column(0), value_set=wanted)
            yield from batch.column(1).filter(keep).to_pylist()


@click.command("betr")
@root_option
@click.argument("spec", metavar="NAME[:OPTIONS]")
@click.option(
    "--top", default=0.10, show_default=True, type=float, help="Share of the ranked documents labelled top."
)
@click.option("--holdout", default=0.1, show_default=True, type=float, help="Share held out for accuracy.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--thread", default=1, show_default=True, type=int, help="fastText threads (1 = repeatable).")
@click.option("--lr", default=BETR_FASTTEXT["lr"], show_default=True, type=float)
@click.option("--epoch", default=BETR_FASTTEXT["epoch"], show_default=True, type=int)
@click.option("--dim", default=BETR_FASTTEXT["dim"], show_default=True, type=int)
@click.option("--word-ngrams", default=BETR_FASTTEXT["word_ngrams"], show_default=True, type=int)
@click.option("--min-count", default=BETR_FASTTEXT["min_count"], show_default=True, type=int)
@click.option(
    "--device", default="auto", show_default=True, help="Where to rank if no ranking is stored yet."
)
def train_betr(
    root: str,
    spec: str,
    top: float,
    holdout: float,
    seed: int,
    thread: int,
    lr: float,
    epoch: int,
    dim: int,
    word_ngrams: int,
    min_count: int,
    device: str,
) -> None:
    """Train BETR's fastText classifier on the ranking of targets set NAME (top share vs the rest).

    NAME[:OPTIONS] is what follows `betr:` in `assay annotate --scorer betr:NAME[:OPTIONS]`; the
    ranking is computed first if it is not stored yet. Afterwards that scorer writes the
    classifier's P(top) for every document. The defaults are BETR's hyperparameters (tuned on
    millions of documents); a small corpus may need more epochs and a lower --min-count.
    """
    from assay.scorers.betr import BetrScorer, classifier_path, top_split
    from assay.scorers.fasttext_classifier import sidecar_path, train_classifier

    root_p = Path(root)
    name, _, options = spec.partition(":")
    # the rank score, even when a classifier for this ranking exists already
    rank_spec = f"{name}:{options + ',' if options else ''}mode=rank"
    scorer = BetrScorer.from_spec(rank_spec, root_p, device=device)
    positives, negatives, counts = top_split(scorer, root_p, top)
    out = classifier_path(root_p, scorer.target_set, scorer.key)
    meta = scorer.meta()
    train_classifier(
        _texts(root_p, positives),
        _texts(root_p, negatives),
        out_path=out,
        balance=True,  # the majority class (the rest) is downsampled to the top's size
        seed=seed,
        thread=thread,
        holdout=holdout,
        lr=lr,
        epoch=epoch,
        dim=dim,
        word_ngrams=word_ngrams,
        min_count=min_count,
        metadata={
            "method": "BETR (Mizrahi et al. 2025): top share by BETR score vs the rest",
            "spec": f"betr:{spec}",
            "ranking": str(scorer.ranking_path),
            "ranking_key": scorer.key,
            "top": top,
            "population": counts["population"],
            "top_documents": counts["top"],
            "ranked_documents": counts["ranked"],
            "agg": meta["agg"],
            "v": meta["v"],
            "k": meta["k"],
        },
    )
    record = json.loads(sidecar_path(out).read_text())
    c = record["counts"]
    accuracy = record["heldout_accuracy"]
    click.echo(
        f"{out}: top {top:.0%} of {counts['population']:,} ranked documents ({counts['top']:,}) vs the rest; "
        f"trained on {c['positive_train']:,} + {c['negative_train']:,} (balanced), held-out accuracy "
        f"{'n/a' if accuracy is None else f'{accuracy:.3f}'} on {c['positive_heldout'] + c['negative_heldout']:,} "
        f"(BETR reports about {PAPER_ACCURACY:.3f})"
    )
    click.echo(f"now `assay annotate --scorer betr:{spec}` writes {scorer.name} = P(top) for every document")
