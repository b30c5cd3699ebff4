"""Distilled raters vs the raters they imitate: throughput and agreement on the same real documents.

    .venv/bin/python bench/raters.py --rater ROOT/models/qurating_NAME [--docs 2000] [--judge MODEL] [--json OUT]
    .venv/bin/python bench/raters.py --train-from fineweb_line_punct_ratio [--docs 2000] [--sample 1000]

The documents are the real web pages of ../shared/data (``common.real_documents``), ingested
into a fresh root. The expensive rater is a trained QuRating rater (``assay train qurating``);
its first criterion is the target. Both distilled kinds (fastText, embedding ridge) learn it from
``--sample`` documents and then score every document; reported per rater: docs/s of
``assay annotate`` (one worker, this machine's CPU or GPU) and the distilled raters' held-out
Spearman and accuracy per score level. With ``--judge`` (a model folder for
``assay.scorers.generation``) the LLM judge is timed too, as pairwise judgments per second over
``--judge-pairs`` pairs.

``--train-from COLUMN`` trains the QuRating rater here, inside the temporary root, instead of
taking one: the documents are annotated with ``--train-scorer`` (``heuristics`` by default) and
``--train-pairs`` random pairs of documents are judged by that real column, p = P(b better than a)
= σ((s_b − s_a) / sd(s)), written as a judgments file (doc_a, doc_b, p) and passed to
``qurating.train_rater`` under the criterion ``--criterion`` (a label only: the judge is the
column, not an LLM). The judged documents are kept out of the distilled raters' sample (they
come from the tail of the same keyed-hash order ``assay train rater`` samples from), so every
rater is also compared with the column itself on documents none of them was trained on.
The shared data holds 1,047 documents, so ``--docs`` above that takes them all, and with
``--train-from`` it must exceed ``--sample`` to leave documents to judge.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import real_documents  # noqa: E402

TRAIN_RATER = "signal"


def _annotate(root: Path, spec: str, device: str) -> dict:
    from assay.pipelines.annotate import annotate

    started = time.perf_counter()
    summary = annotate(root, [spec], device=device, quiet=True)
    seconds = time.perf_counter() - started
    (name, s), *_ = summary["scorers"].items()
    return {
        "scorer": name,
        "docs": s["docs"],
        "seconds": round(seconds, 2),
        "docs_per_s": round(s["docs"] / seconds, 1),
    }


def _spearman(x, y) -> float | None:
    from scipy.stats import spearmanr

    if len(x) < 3:
        return None
    rho = spearmanr(x, y).statistic
    return None if rho != rho else round(float(rho), 4)


def _train_from_signal(root: Path, tmp: Path, args: argparse.Namespace) -> tuple[Path, dict, set[str]]:
    """Judge pairs by a real score column and train a QuRating rater on them (see the docstring)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from assay.scorers import qurating
    from assay.scorers import rater as distilled

    timing = _annotate(root, args.train_scorer, args.device)
    ids, s, _ = distilled.read_target(root, args.train_from)
    # the distilled raters sample the head of this order: judge only documents from its tail
    order = distilled.hash_order(ids, args.seed)
    pool = order[args.sample :]
    if len(pool) < 2:
        raise SystemExit(
            f"--train-from: --docs must exceed --sample to leave documents to judge (got {len(ids)})"
        )
    rng = np.random.default_rng(args.seed)
    a = rng.choice(pool, args.train_pairs)
    b = rng.choice(pool, args.train_pairs)
    a, b = a[a != b], b[a != b]
    scale = float(np.std(s[pool])) or 1.0
    p = 0.5 * (1.0 + np.tanh(0.5 * (s[b] - s[a]) / scale))  # logistic of the score difference
    judgments = tmp / "judgments.parquet"
    pq.write_table(
        pa.table(
            {
                "doc_a": [ids[i] for i in a],
                "doc_b": [ids[i] for i in b],
                "criterion": [args.criterion] * len(a),
                "p": p,
                "judge": [f"column:{args.train_from}"] * len(a),
            }
        ),
        judgments,
    )
    table = qurating.read_judgments(judgments, root)
    folder = qurating.rater_dir(root, TRAIN_RATER)
    started = time.perf_counter()
    record = qurating.train_rater(
        table,
        folder,
        encoder=qurating.ChunkEncoder(qurating.DEFAULT_ENCODER, qurating.CHUNK_TOKENS, args.device),
        settings=qurating.TrainSettings(seed=args.seed),
        data={"judgments": f"column:{args.train_from}", "scale": scale},
    )
    r = record["results"][args.criterion]
    judged = {ids[i] for i in (*a, *b)}
    info = {
        "signal": {"column": args.train_from, **timing},
        "judgments": {
            "pairs": int(len(a)),
            "documents": len(judged),
            "p": "sigmoid((s_b - s_a) / sd(s))",
            "sd": round(scale, 4),
            "kept": r["kept"],
            "train_pairs": r["train_pairs"],
            "heldout_pairs": r["heldout_pairs"],
        },
        "train_seconds": round(time.perf_counter() - started, 2),
        "pairwise_accuracy": {
            "train": round(r["train_accuracy"], 4),
            "heldout": None if r["heldout_accuracy"] is None else round(r["heldout_accuracy"], 4),
        },
    }
    return folder, info, judged


def _versus_signal(root: Path, args: argparse.Namespace, target: str, judged: set[str]) -> dict:
    """Spearman of each rater with the judging column, on documents no rater was trained on."""
    import numpy as np

    from assay.scorers import rater as distilled

    ids, y, _ = distilled.read_target(root, target)
    order = distilled.hash_order(ids, args.seed)[: args.sample]
    n_test = max(1, int(round(len(order) * 0.1)))  # assay train rater's default holdout share
    heldout = {ids[i] for i in order[:n_test]} - judged
    sample = {ids[i] for i in order} - judged
    signal = dict(zip(*distilled.read_target(root, args.train_from)[:2]))
    out: dict = {"heldout_documents": 0, "sample_documents": 0}
    for column in (target, *(f"rater_{k}" for k in distilled.KINDS)):
        got = dict(zip(*distilled.read_target(root, column)[:2]))
        for label, docs in (("heldout", heldout), ("sample", sample)):
            if label == "sample" and column != target:
                continue  # the distilled raters trained on the sample
            keep = sorted(d for d in docs if d in got and d in signal)
            out[f"{label}_documents"] = max(out[f"{label}_documents"], len(keep))
            out[f"{column}:{label}"] = _spearman(
                np.array([got[d] for d in keep]), np.array([signal[d] for d in keep])
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--rater", help="a QuRating rater folder (models/qurating_NAME)")
    source.add_argument(
        "--train-from",
        metavar="COLUMN",
        help="train the QuRating rater here from pairs judged by this real score column",
    )
    parser.add_argument("--train-scorer", default="heuristics", help="scorer that writes --train-from")
    parser.add_argument("--train-pairs", type=int, default=4000, help="pairs judged by --train-from")
    parser.add_argument("--criterion", default="writing_style", help="criterion label of those judgments")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--sample", type=int, default=1000, help="documents the distilled raters learn from")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--judge", default=None, help="judge LM folder (assay.scorers.generation)")
    parser.add_argument("--judge-pairs", type=int, default=32)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from assay.pipelines.ingest import ingest
    from assay.scorers import rater as distilled
    from assay.scorers.qurating import QuRatingScorer, check_criterion, column_name

    if args.train_from:
        check_criterion(args.criterion)
    docs = real_documents()[: args.docs]
    results: dict = {"documents": len(docs), "device": args.device}
    with tempfile.TemporaryDirectory(prefix="assay-bench-raters-") as tmp:
        root = Path(tmp) / "root"
        corpus = Path(tmp) / "docs.jsonl"
        corpus.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in docs))
        ingest([str(corpus)], root)
        (root / "models").mkdir(parents=True, exist_ok=True)
        judged: set[str] = set()
        if args.train_from:
            link, results["trained_qurating"], judged = _train_from_signal(root, Path(tmp), args)
        else:
            link = root / "models" / Path(args.rater).name
            link.symlink_to(Path(args.rater).resolve())
        name = link.name.removeprefix("qurating_")
        criterion = QuRatingScorer(link, device="cpu").criteria[0]
        results["qurating"] = _annotate(root, f"qurating:{name}", args.device)
        for kind in distilled.KINDS:
            record = distilled.train(
                root,
                kind,
                column_name(criterion),
                kind=kind,
                sample=args.sample,
                seed=args.seed,
                device=args.device,
            )
            timing = _annotate(root, f"rater:{kind}", args.device)
            held = record["heldout"]
            results[kind] = {
                **timing,
                "heldout_documents": held["documents"],
                "spearman": held["spearman"],
                "level_accuracy": held["level_accuracy"],
                "per_level": [
                    {
                        "level": v["level"],
                        "value": round(v["value"], 4),
                        "docs": v["documents"],
                        "accuracy": v["accuracy"],
                    }
                    for v in held["levels"]
                ],
            }
            results[kind]["speedup"] = round(timing["docs_per_s"] / results["qurating"]["docs_per_s"], 1)
        if args.train_from:
            results["spearman_vs_signal"] = _versus_signal(root, args, column_name(criterion), judged)
        if args.judge:
            from assay.scorers.generation import make_backend
            from assay.scorers.qurating import collect_judgments

            backend = make_backend(args.judge, device=args.device)
            texts = [t[:2000] for _, t in docs[: 2 * args.judge_pairs]]
            pairs = list(zip(texts[0::2], texts[1::2]))
            started = time.perf_counter()
            collect_judgments(backend, pairs, criterion)
            seconds = time.perf_counter() - started
            results["llm_judge"] = {
                "pairs": len(pairs),
                "seconds": round(seconds, 2),
                "pairs_per_s": round(len(pairs) / seconds, 2),
            }
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
