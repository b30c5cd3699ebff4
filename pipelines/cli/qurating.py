"""`assay train qurating NAME`: a QuRating Bradley–Terry rater from pairwise judgments (METHODS.md §5).

Judgments come from a file (--judgments: Parquet, JSONL or CSV; columns in ``assay.scorers.qurating``)
or are collected here from a judge LM (--backend SPEC --pairs N --criteria ...): N random pairs of
excerpts per criterion, each judged in both orders. Collected judgments are kept as
``models/qurating_NAME/judgments-<criterion>.parquet``; a rerun with the same settings reuses them.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from assay.pipelines.cli.common import root_option


class Steps:
    """A live bar per step on a terminal; elsewhere one line when a step is done."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.bar = None
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
            )
            self.bar.__enter__()
        return self.show

    def show(self, step: str, done: int, total: int) -> None:
        if self.bar is None:
            if done == total:
                click.echo(f"{step}: {total:,} done", err=True)
            return
        if step not in self.tasks:
            self.tasks[step] = self.bar.add_task(step, total=total)
        self.bar.update(self.tasks[step], completed=done)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False


def _collect(
    root: Path, folder: Path, backend_spec: str, device: str, criteria, n_pairs: int, seed: int, show
):
    """Judgments per criterion from the judge LM; each criterion's table is written once and reused."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from assay.corpora.atomic import atomic_path, write_json_atomic
    from assay.scorers import qurating

    try:
        from assay.scorers.generation import make_backend
    except ModuleNotFoundError:
        raise ValueError("--backend needs assay.scorers.generation, which this installation lacks") from None
    backend = None
    tables = []
    for criterion in criteria:
        path = folder / f"judgments-{criterion}.parquet"
        key = {"backend": backend_spec, "pairs": n_pairs, "seed": seed, "criterion": criterion}
        key_path = path.with_suffix(".json")
        if path.is_file() and key_path.is_file() and json.loads(key_path.read_text()) == key:
            tables.append(pq.read_table(path))
            show(f"judge {criterion} (kept)", n_pairs, n_pairs)
            continue
        if backend is None:
            backend = make_backend(backend_spec, device=device)
        pairs, ids = qurating.sample_pairs(root, n_pairs, seed=seed)
        show(f"judge {criterion}", 0, n_pairs)
        table = qurating.collect_judgments(backend, pairs, criterion, ids)
        show(f"judge {criterion}", n_pairs, n_pairs)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        write_json_atomic(key_path, key)
        tables.append(table)
    return pa.concat_tables(tables), {"backend": backend_spec, "pairs_per_criterion": n_pairs, "seed": seed}


@click.command("qurating")
@root_option
@click.argument("name")
@click.option("--judgments", type=click.Path(dir_okay=False), help="Judgments file (.parquet/.jsonl/.csv).")
@click.option("--backend", "backend_spec", default=None, help="Judge LM spec for assay.scorers.generation.")
@click.option("--pairs", "n_pairs", default=1000, show_default=True, help="Pairs to judge per criterion.")
@click.option(
    "--criteria",
    default=",".join(["writing_style", "required_expertise", "facts_and_trivia", "educational_value"]),
    show_default=True,
    help="Comma-separated criteria to judge (with --backend).",
)
@click.option(
    "--encoder",
    default="all-MiniLM-L6-v2",
    show_default=True,
    help="Sentence encoder (folder or wheel name).",
)
@click.option("--chunk-tokens", default=512, show_default=True, help="Encoder positions per chunk.")
@click.option("--confidence", default=0.25, show_default=True, help="Keep pairs with |p - 0.5| >= this.")
@click.option("--label-temperature", default=1.0, show_default=True, help="p <- sigmoid(logit(p) / T).")
@click.option("--epochs", default=100, show_default=True)
@click.option("--lr", default=0.01, show_default=True)
@click.option("--weight-decay", default=0.1, show_default=True, help="AdamW decoupled weight decay.")
@click.option("--l2", default=0.01, show_default=True, help="Ridge penalty on the head.")
@click.option(
    "--holdout",
    default=0.1,
    show_default=True,
    help="Share of judged documents held out, with every pair involving one, for accuracy on unseen documents.",
)
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda.")
def train_qurating(
    root: str,
    name: str,
    judgments: str | None,
    backend_spec: str | None,
    n_pairs: int,
    criteria: str,
    encoder: str,
    chunk_tokens: int,
    confidence: float,
    label_temperature: float,
    epochs: int,
    lr: float,
    weight_decay: float,
    l2: float,
    holdout: float,
    seed: int,
    device: str,
) -> None:
    """Train QuRating rater NAME (Bradley–Terry head on a frozen encoder) under ROOT/models/qurating_NAME/.

    Afterwards `assay annotate --scorer qurating:NAME` writes qurating_<criterion> per document.
    """
    from assay.corpora.manifest import require_root
    from assay.scorers import qurating

    root_p = require_root(root)
    folder = qurating.rater_dir(root_p, name)
    if (judgments is None) == (backend_spec is None):
        raise click.UsageError("give --judgments FILE, or --backend SPEC (with --pairs and --criteria)")
    if n_pairs < 1:
        raise click.BadParameter(f"{n_pairs}: at least 1", param_hint="--pairs")
    settings = qurating.TrainSettings(
        confidence=confidence,
        label_temperature=label_temperature,
        epochs=epochs,
        lr=lr,
        weight_decay=weight_decay,
        l2=l2,
        holdout=holdout,
        seed=seed,
    ).check()
    chosen = [qurating.check_criterion(c.strip()) for c in criteria.split(",") if c.strip()]
    chunker = qurating.ChunkEncoder(encoder, chunk_tokens, device)
    with Steps() as show:
        if judgments is not None:
            table = qurating.read_judgments(judgments, root_p)
            data = {"judgments": str(Path(judgments).resolve()), "sha256": _sha256(Path(judgments))}
        else:
            table, data = _collect(root_p, folder, backend_spec, device, chosen, n_pairs, seed, show)
        record = qurating.train_rater(
            table, folder, encoder=chunker, settings=settings, data=data, progress=show
        )
    for criterion, r in record["results"].items():
        held = r["heldout_accuracy"]
        click.echo(
            f"{criterion}: {r['kept']:,} of {r['pairs']:,} pairs kept (|p - 0.5| >= {confidence}); "
            f"pairwise accuracy train {r['train_accuracy']:.3f}, held out "
            f"{'n/a' if held is None else f'{held:.3f}'} on {r['heldout_pairs']:,}"
        )
    click.echo(f"wrote {folder}; now `assay annotate --scorer qurating:{name}`")


def _sha256(path: Path) -> str:
    from assay.corpora.shards import sha256_file

    return sha256_file(path)
