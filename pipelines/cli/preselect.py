"""`assay train preselect NAME`: PreSelect's predictive strength, labels and fastText classifier.

PreSelect (Shum et al. 2025; METHODS.md §2) ranks N models by a downstream benchmark average and
keeps the documents whose losses rank the models the same way. The steps:

1. order the models (lm_loss annotation sets) by ``--capability`` (one value per model), or by
   the mean ``acc`` per run of an ``assay proxy eval`` CSV (``--ladder-eval``; run ``1M`` is the
   set ``lm_1m``), and write ``models/preselect_NAME.strength.json``;
2. annotate S for every document (``--scorer preselect:NAME:strength``: the set
   ``preselect_NAME_s``, resumable like any annotation run);
3. label S = 1 positive and as many lowest-S documents negative, read their texts through the
   catalog, and train fastText with PreSelect's hyperparameters into ``models/preselect_NAME.bin``.

Then ``assay annotate --scorer preselect:NAME`` writes P(positive) as ``preselect_NAME`` for every
document, and a recipe with ``rank: preselect_NAME`` and ``budget: {fraction_of_chars: 0.10}``
keeps PreSelect's top 10 % of characters (§2.5).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from assay.pipelines.cli.common import root_option
from assay.scorers.preselect import MIN_PER_CLASS, PRESELECT_FASTTEXT


def _numbers(text: str, option: str) -> list[float]:
    values = []
    for part in (p.strip() for p in text.split(",")):
        try:
            values.append(float(part))
        except ValueError:
            raise click.BadParameter(f"{part!r} is not a number", param_hint=option) from None
    return values


def capability_from_eval(path: str | Path, sets: list[str]) -> list[float]:
    """One benchmark average per annotation set, matching runs to sets by `set_for_run`."""
    from assay.pipelines.proxy_eval import benchmark_average
    from assay.scorers.preselect import set_for_run

    by_set: dict[str, tuple[str, float]] = {}  # set -> (run, mean acc)
    for run, value in benchmark_average(path).items():
        target = set_for_run(run)
        if target in by_set:
            raise ValueError(
                f"{path}: runs {by_set[target][0]!r} and {run!r} both map to annotation set {target}"
            )
        by_set[target] = (run, value)
    mapping = ", ".join(f"{r} -> {s}" for s, (r, _) in sorted(by_set.items()))
    out = []
    for set_name in sets:
        if set_name not in by_set:
            raise ValueError(f"{path}: no run maps to annotation set {set_name} (runs: {mapping})")
        out.append(float(by_set[set_name][1]))
    return out


@click.command("preselect")
@root_option
@click.argument("name")
@click.option("--models", required=True, help="lm_loss annotation sets, comma-separated (lm_a,lm_b,lm_c).")
@click.option(
    "--capability", default=None, help="Benchmark average per model, same order (higher = stronger)."
)
@click.option(
    "--ladder-eval",
    default=None,
    type=click.Path(dir_okay=False, exists=True),
    help="`assay proxy eval` CSV: the mean acc per run orders the models; run 1M is set lm_1m.",
)
@click.option(
    "--min-per-class", default=MIN_PER_CLASS, show_default=True, type=int, help="Fewest documents per class."
)
@click.option("--holdout", default=0.1, show_default=True, type=float, help="Share held out for accuracy.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--thread", default=1, show_default=True, type=int, help="fastText threads (1 = repeatable).")
@click.option("--lr", default=PRESELECT_FASTTEXT["lr"], show_default=True, type=float)
@click.option("--epoch", default=PRESELECT_FASTTEXT["epoch"], show_default=True, type=int)
@click.option("--dim", default=PRESELECT_FASTTEXT["dim"], show_default=True, type=int)
@click.option("--word-ngrams", default=PRESELECT_FASTTEXT["word_ngrams"], show_default=True, type=int)
@click.option("--min-count", default=PRESELECT_FASTTEXT["min_count"], show_default=True, type=int)
@click.option(
    "--bucket", default=None, type=int, help="Hash buckets for word n-grams (default: sized from the data)."
)
def train_preselect(
    root: str,
    name: str,
    models: str,
    capability: str | None,
    ladder_eval: str | None,
    min_per_class: int,
    holdout: float,
    seed: int,
    thread: int,
    lr: float,
    epoch: int,
    dim: int,
    word_ngrams: int,
    min_count: int,
    bucket: int | None,
) -> None:
    """Train PreSelect's classifier NAME: S = 1 documents vs as many lowest-S ones.

    S(d) is the share of model pairs whose bits per character on d keep their capability order.
    Give the capability as --capability (one value per model) or --ladder-eval. The defaults are
    PreSelect's hyperparameters (lr 0.1, 3 epochs, word bigrams); a small corpus may need more
    epochs. Afterwards `assay annotate --scorer preselect:NAME` writes preselect_NAME.
    """
    from assay.corpora.manifest import load_manifest, require_root
    from assay.pipelines.annotate import annotate
    from assay.scorers.fasttext_classifier import sidecar_path
    from assay.scorers.preselect import (
        choose_labels,
        label_of,
        read_strength,
        strength_set,
        train_preselect_classifier,
        write_strength_config,
    )

    root_p = require_root(root)
    label = label_of(name)
    sets = [s.strip() for s in models.split(",") if s.strip()]
    if (capability is None) == (ladder_eval is None):
        raise click.UsageError(
            "give the models' capability as --capability V1,V2,... or --ladder-eval FILE.csv"
        )
    if capability is not None:
        values, source = _numbers(capability, "--capability"), {"capability": capability}
    else:
        values = capability_from_eval(ladder_eval, sets)
        source = {"ladder_eval": str(Path(ladder_eval).resolve()), "mean_acc": dict(zip(sets, values))}
    config = write_strength_config(root_p, label, sets, values, source)
    order = " < ".join(f"{m} ({c:g})" for m, c in zip(config["models"], config["capability"]))
    click.echo(f"capability order, weakest first: {order}")

    annotate(root_p, [f"preselect:{label}:strength"])
    ids, s, without = read_strength(root_p, label)
    pairs = len(sets) * (len(sets) - 1) // 2
    counts = np.bincount(np.rint(s * pairs).astype(np.int64), minlength=pairs + 1)
    histogram = {f"{k}/{pairs}": int(n) for k, n in enumerate(counts)}
    click.echo(
        f"S over {len(s):,} documents ({without:,} without every loss): "
        + ", ".join(f"{k} {n:,}" for k, n in histogram.items())
    )
    labels = choose_labels(ids, s, name=label, min_per_class=min_per_class)
    metadata = {
        "method": "PreSelect (Shum et al. 2025): S = 1 vs as many lowest-S documents",
        "name": label,
        "models": config["models"],
        "capability": config["capability"],
        "capability_source": source,
        "loss_columns": config["columns"],
        "strength_set": strength_set(label),
        "strength_version": load_manifest(root_p)["annotations"][strength_set(label)]["version"],
        "scored_documents": len(s),
        "documents_without_s": without,
        "strength_histogram": histogram,
        "positives": labels.positives,
        "negatives": labels.negatives,
        "negative_max_s": labels.negative_max_s,
    }
    click.echo(
        f"training fastText on {labels.positives:,} positives (S = 1) and {labels.negatives:,} negatives "
        f"(S <= {labels.negative_max_s:.3f})"
    )
    out = train_preselect_classifier(
        root_p,
        label,
        labels,
        metadata,
        lr=lr,
        epoch=epoch,
        dim=dim,
        word_ngrams=word_ngrams,
        min_count=min_count,
        bucket=bucket,
        seed=seed,
        thread=thread,
        holdout=holdout,
    )
    record = json.loads(sidecar_path(out).read_text())
    c, accuracy = record["counts"], record["heldout_accuracy"]
    click.echo(
        f"{out}: trained on {c['positive_train']:,} + {c['negative_train']:,} documents, held-out accuracy {'n/a' if accuracy is None else f'{accuracy:.3f}'} on "
        f"{c['positive_heldout'] + c['negative_heldout']:,}"
    )
    click.echo(
        f"now `assay annotate --scorer preselect:{label}` writes preselect_{label} = P(positive) for every document"
    )
