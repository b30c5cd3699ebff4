"""Distilled raters vs the raters they imitate: throughput and agreement on the same real documents.

    .venv/bin/python bench/raters.py --rater ROOT/models/qurating_NAME [--docs 2000] [--judge MODEL] [--json OUT]

The documents are the real web pages of ../shared/data (``common.real_documents``), ingested
into a fresh root. The expensive rater is a trained QuRating rater (``assay train qurating``);
its first criterion is the target. Both distilled kinds (fastText, embedding ridge) learn it from
``--sample`` documents and then score every document; reported per rater: docs/s of
``assay annotate`` (one worker, this machine's CPU or GPU) and the distilled raters' held-out
Spearman and level accuracy. With ``--judge`` (a model folder for ``assay.scorers.generation``)
the LLM judge is timed too, as pairwise judgments per second over ``--judge-pairs`` pairs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import real_documents  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rater", required=True, help="a QuRating rater folder (models/qurating_NAME)")
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--sample", type=int, default=1000, help="documents the distilled raters learn from")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--judge", default=None, help="judge LM folder (assay.scorers.generation)")
    parser.add_argument("--judge-pairs", type=int, default=32)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from assay.pipelines.ingest import ingest
    from assay.scorers import rater as distilled
    from assay.scorers.qurating import QuRatingScorer, column_name

    docs = real_documents()[: args.docs]
    results: dict = {"documents": len(docs), "device": args.device}
    with tempfile.TemporaryDirectory(prefix="assay-bench-raters-") as tmp:
        root = Path(tmp) / "root"
        corpus = Path(tmp) / "docs.jsonl"
        corpus.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in docs))
        ingest([str(corpus)], root)
        (root / "models").mkdir(parents=True, exist_ok=True)
        link = root / "models" / Path(args.rater).name
        link.symlink_to(Path(args.rater).resolve())
        name = link.name.removeprefix("qurating_")
        criterion = QuRatingScorer(link, device="cpu").criteria[0]
        results["qurating"] = _annotate(root, f"qurating:{name}", args.device)
        for kind in distilled.KINDS:
            record = distilled.train(
                root, kind, column_name(criterion), kind=kind, sample=args.sample, device=args.device
            )
            timing = _annotate(root, f"rater:{kind}", args.device)
            held = record["heldout"]
            results[kind] = {**timing, "spearman": held["spearman"], "level_accuracy": held["level_accuracy"]}
            results[kind]["speedup"] = round(timing["docs_per_s"] / results["qurating"]["docs_per_s"], 1)
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
