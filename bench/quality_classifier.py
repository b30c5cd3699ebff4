"""fastText scorers vs a raw per-document ``model.predict`` loop over the same documents.

    .venv/bin/python bench/quality_classifier.py [--rounds 5] [--json OUT.json]

Two real workloads from ../shared/data: the 1,027 trafilatura web pages (long, multilingual) and
short paragraphs (arXiv paragraphs + 600-character tinyshakespeare pieces). The raw loop gets its
texts as a ready Python list; the scorers pay for Arrow in and out, as they do in a pipeline.
Both run in alternation, round by round; reported: median docs/s of each and the median per-round
ratio scorer speed / raw speed (the target is >= 0.8).
The classifier is trained here on the committed fixtures (a few seconds) and timed the same way.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]

from assay.scorers.fasttext_classifier import (  # noqa: E402
    POSITIVE,
    FastTextClassifierScorer,
    classifier_line,
    train_classifier,
)
from assay.scorers.fasttext_text import binding_version, one_line  # noqa: E402
from assay.scorers.language import LanguageScorer  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "corpora"
FIXTURES = REPO / "tests" / "fixtures" / "fasttext"
ARROW_BATCH = 2048  # what `assay annotate` hands a scorer


def web_pages() -> list[str]:
    path = DATA / "web_trafilatura_eval" / "trafilatura_eval_pages.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def short_paragraphs() -> list[str]:
    with open(DATA / "misc" / "llm_foundry_arxiv_sample.jsonl", encoding="utf-8") as f:
        papers = [json.loads(line)["text"] for line in f]
    arxiv = [p for paper in papers for p in paper.split("\n\n") if len(p) >= 100]
    play = (DATA / "misc" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    return arxiv + [play[i : i + 600] for i in range(0, len(play), 600)]


def batches(texts: list[str]) -> list[pa.RecordBatch]:
    table = pa.table({"id": [str(i) for i in range(len(texts))], "text": texts})
    return table.to_batches(max_chunksize=ARROW_BATCH)


def compare(raw: Callable[[], object], scored: Callable[[], object], n_docs: int, rounds: int) -> dict:
    """Alternate the two (order swapped each round) so a busy shared machine slows both alike;
    ratio = median over rounds of raw seconds / scorer seconds."""
    raw(), scored()  # warm: model loaded, caches filled
    t_raw, t_scored = [], []
    for r in range(rounds):
        for name in ("raw", "scored") if r % 2 == 0 else ("scored", "raw"):
            t = time.perf_counter()
            (raw if name == "raw" else scored)()
            (t_raw if name == "raw" else t_scored).append(time.perf_counter() - t)
    return {
        "raw_docs_per_s": round(n_docs / statistics.median(t_raw), 1),
        "scorer_docs_per_s": round(n_docs / statistics.median(t_scored), 1),
        "ratio": round(statistics.median(a / b for a, b in zip(t_raw, t_scored)), 3),
    }


def bench_language(texts: list[str], rounds: int) -> dict:
    scorer = LanguageScorer()
    model = scorer.model  # the same loaded model for both sides

    def raw() -> None:
        for t in texts:
            model.predict(one_line(t), k=2)

    data = batches(texts)

    def scored() -> None:
        for b in data:
            scorer.score(b)

    return _result("language", texts, compare(raw, scored, len(texts), rounds))


def bench_classifier(texts: list[str], rounds: int, model_path: Path) -> dict:
    scorer = FastTextClassifierScorer(model_path)
    model = scorer.model

    def raw() -> None:
        for t in texts:
            labels, probs = model.predict(classifier_line(t), k=2)
            min(float(probs[labels.index(POSITIVE)]), 1.0)

    data = batches(texts)

    def scored() -> None:
        for b in data:
            scorer.score(b)

    return _result("fasttext classifier", texts, compare(raw, scored, len(texts), rounds))


def _result(what: str, texts: list[str], timing: dict) -> dict:
    return {
        "scorer": what,
        "docs": len(texts),
        "mean_chars": round(sum(map(len, texts)) / len(texts)),
        **timing,
    }


def train_fixture_model(out: Path) -> dict:
    def texts(name: str) -> list[str]:
        with open(FIXTURES / name, encoding="utf-8") as f:
            return [json.loads(line)["text"] for line in f]

    positive, negative = texts("shakespeare.jsonl"), texts("state_union.jsonl")
    t = time.perf_counter()
    train_classifier(positive, negative, out_path=out, lr=0.5, epoch=10, dim=32, bucket=20_000)
    seconds = time.perf_counter() - t
    return {"train_docs": len(positive) + len(negative), "train_seconds": round(seconds, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"needs the shared data folder {DATA}")

    workloads = {"web pages": web_pages(), "short paragraphs": short_paragraphs()}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "style.bin"
        training = train_fixture_model(model_path)
        for name, texts in workloads.items():
            for r in (bench_language(texts, args.rounds), bench_classifier(texts, args.rounds, model_path)):
                results.append({"workload": name, **r})

    print(f"binding: {binding_version()}; median of {args.rounds} rounds; Arrow batches of {ARROW_BATCH}")
    print(f"classifier training: {training['train_docs']} docs in {training['train_seconds']} s")
    header = f"{'workload':<17} {'scorer':<20} {'docs':>6} {'chars':>6} {'raw docs/s':>11} {'scorer docs/s':>14} {'ratio':>6}"
    print(header)
    for r in results:
        print(
            f"{r['workload']:<17} {r['scorer']:<20} {r['docs']:>6} {r['mean_chars']:>6} "
            f"{r['raw_docs_per_s']:>11,.0f} {r['scorer_docs_per_s']:>14,.0f} {r['ratio']:>6.2f}"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"binding": binding_version(), **training, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
