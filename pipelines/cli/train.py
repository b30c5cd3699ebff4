"""`assay train fasttext`: train a positive-vs-negative fastText classifier from SQL-selected documents.

Each of --positive and --negative is either a predicate, e.g. ``lang = 'en' AND source = 'arxiv'``,
over the columns of the catalog's ``annotations`` view and ``docs`` view (unqualified names), or a
whole query (it starts with SELECT, WITH or FROM) that returns a ``text`` column. Texts stream from
DuckDB in Arrow batches into the trainer; the model's sidecar JSON records both selections.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from assay.pipelines.cli.common import root_option

_FULL_QUERY = re.compile(r"^\s*(select|with|from)\b", re.IGNORECASE)
_ROWS_PER_BATCH = 2048


def selection_sql(con: Any, selection: str, *, max_docs: int | None = None, seed: int = 0) -> str:
    """The SQL returning the ``text`` of the documents a --positive/--negative selection names."""
    from assay.corpora.catalog import ident

    if _FULL_QUERY.match(selection):
        query = f"SELECT text FROM ({selection}) AS selection"
    else:
        # annotations has one row per document (id, source, url + every annotation column);
        # docs adds the text and whatever else it has, so every column reads unqualified
        have = {r[0] for r in con.execute("DESCRIBE annotations").fetchall()}
        extra = [r[0] for r in con.execute("DESCRIBE docs").fetchall() if r[0] not in have]
        columns = ", ".join(["a.*", *(f"d.{ident(c)}" for c in extra)])
        joined = f"SELECT {columns} FROM annotations a JOIN docs d USING (id)"
        query = f"SELECT text FROM ({joined}) AS selection WHERE ({selection})"
    if max_docs is not None:
        # a seeded hash order picks the same documents whatever order DuckDB's threads return them
        query = f"SELECT text FROM ({query}) AS chosen ORDER BY hash(text, {int(seed)}) LIMIT {int(max_docs)}"
    return query


def stream_texts(con: Any, sql: str, what: str) -> Iterator[str | None]:
    """Texts from a query, one Arrow batch at a time; the error names the option that failed."""
    import duckdb

    cursor = con.cursor()  # its own cursor: the other class's query runs on the same connection
    try:
        try:
            relation = cursor.sql(sql)
            # DuckDB 2 calls it to_arrow_reader, 1.x fetch_arrow_reader
            reader = getattr(relation, "to_arrow_reader", None) or relation.fetch_arrow_reader
            batches = reader(_ROWS_PER_BATCH)
        except duckdb.Error as e:
            raise click.UsageError(f"--{what}: {str(e).splitlines()[0]}\n  SQL: {sql}") from None
        for batch in batches:
            yield from batch.column(0).to_pylist()
    finally:
        cursor.close()


@click.command("fasttext")
@root_option
@click.option("--positive", required=True, help="SQL predicate or SELECT (with a text column): label 1.")
@click.option("--negative", required=True, help="SQL predicate or SELECT (with a text column): label 0.")
@click.option("--balance", is_flag=True, help="Downsample the larger class to the smaller one's size.")
@click.option("--lr", default=0.1, show_default=True, type=float)
@click.option("--epoch", default=5, show_default=True, type=int)
@click.option("--dim", default=100, show_default=True, type=int)
@click.option("--word-ngrams", default=2, show_default=True, type=int)
@click.option("--min-count", default=1, show_default=True, type=int)
@click.option(
    "--bucket",
    default=None,
    type=int,
    help="Hash buckets for word n-grams (default: sized from the training data, at most fastText's 2M).",
)
@click.option("--max-docs", default=None, type=int, help="At most this many documents per class.")
@click.option("--holdout", default=0.1, show_default=True, type=float, help="Share held out for accuracy.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--thread", default=1, show_default=True, type=int, help="fastText threads (1 = repeatable).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Model file to write.")
def train_fasttext(
    root: str,
    positive: str,
    negative: str,
    balance: bool,
    lr: float,
    epoch: int,
    dim: int,
    word_ngrams: int,
    min_count: int,
    bucket: int,
    max_docs: int | None,
    holdout: float,
    seed: int,
    thread: int,
    out: str,
) -> None:
    """Train a fastText classifier (positive = __label__1) from SQL-selected documents.

    Score a corpus with it afterwards: assay annotate --scorer fasttext:OUT
    """
    from assay.corpora.catalog import open_catalog
    from assay.scorers.fasttext_classifier import train_classifier

    con = open_catalog(root, read_only=True)
    try:
        sql = {
            what: selection_sql(con, selection, max_docs=max_docs, seed=seed)
            for what, selection in (("positive", positive), ("negative", negative))
        }
        try:
            path = train_classifier(
                stream_texts(con, sql["positive"], "positive"),
                stream_texts(con, sql["negative"], "negative"),
                out_path=out,
                lr=lr,
                epoch=epoch,
                dim=dim,
                word_ngrams=word_ngrams,
                min_count=min_count,
                bucket=bucket,
                balance=balance,
                seed=seed,
                thread=thread,
                holdout=holdout,
                metadata={
                    "root": str(Path(root).resolve()),
                    "positive": positive,
                    "negative": negative,
                    "positive_sql": sql["positive"],
                    "negative_sql": sql["negative"],
                    "max_docs": max_docs,
                },
            )
        except ValueError as e:
            raise click.ClickException(str(e)) from None
    finally:
        con.close()

    from assay.scorers.fasttext_classifier import FastTextClassifierScorer

    scorer = FastTextClassifierScorer(path)
    record = scorer.training_record() or {}
    counts = record.get("counts", {})
    accuracy = record.get("heldout_accuracy")
    click.echo(
        f"{path}: trained on {counts.get('positive_train', 0):,} positive + "
        f"{counts.get('negative_train', 0):,} negative documents; held-out accuracy "
        f"{'n/a' if accuracy is None else f'{accuracy:.3f}'} on "
        f"{counts.get('positive_heldout', 0) + counts.get('negative_heldout', 0):,}"
    )
    click.echo(f"annotation set {scorer.name} (version {scorer.version}), column {scorer.column}")
    n_pos, n_neg = counts.get("positive_heldout", 0), counts.get("negative_heldout", 0)
    chance = max(n_pos, n_neg) / (n_pos + n_neg) if n_pos + n_neg else None
    if accuracy is not None and chance is not None and accuracy <= chance + 0.02:
        click.echo(
            f"warning: held-out accuracy {accuracy:.3f} is at chance (always guessing the larger class gives "
            f"{chance:.3f}): the classifier has learned nothing usable from these selections",
            err=True,
        )
    click.echo(f"score a corpus: assay annotate --root {root} --scorer fasttext:{path}")
