"""BETR on real data: is the top 10 % closer to the held-out benchmark test split than a random or a
`fineweb_keep` 10 %, and does the fastText extension keep that gain? Plus the ranking's speed.

    .venv/bin/python bench/betr.py [--work DIR] [--json OUT.json] [--skip-timing] [--timing-only]

Corpus: real text from ../shared/data/corpora, cut at line boundaries into pieces of about 1,500
characters: the 1,027 trafilatura web pages, the dolma Common Crawl heads, arXiv papers, and
NLTK's Brown, ABC (science and rural news), webtext, movie reviews, Penn Treebank WSJ, State of
the Union and inaugural corpora. Targets (one set per benchmark, written as `targets/NAME.parquet`
with the loader's four columns) and the held-out examples the selections are judged against:

    arc    llm-foundry ARC-Easy + ARC-Challenge (both test splits): half of the questions (by hash of
           the question) are targets, the other half held out
    piqa   targets: the validation split (goal + labelled solution); held out: the test split
           (goal + both solutions: its labels are not public)
    gsm8k  targets: train (7,473); held out: test (1,319)
    mmlu   targets: dev + val (1,816); held out: test (14,042; 3,000 sampled for the measure)

Measure: mean over the selected documents of their max cosine (all-MiniLM-L6-v2) to the held-out
examples. Selections of 10 % of the documents: BETR's top by `betr_NAME` (the whole corpus
embedded and ranked), a random 10 % and a random 10 % of the `fineweb_keep` documents (5 seeds
each). Extension: `betr:NAME:sample=0.5` ranks half the corpus, `assay train betr` trains fastText
on it (BETR's hyperparameters, then a small-data setting), and the classifier's top 10 % of the
*other* half is compared with the rank score's top 10 % of that half and a random 10 % of it:
kept gain = (classifier - random) / (rank - random).

Timing: `rank_documents` on 100,000 x 10,000 synthetic float16 unit vectors (random, not text:
the ranking's cost depends only on the shapes), k = 100, in a fresh process: seconds, peak RSS.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import re
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from common import SHARED, run_child  # noqa: E402

CORPORA = SHARED / "corpora"
BENCH = SHARED / "benchmarks"
NLTK = CORPORA / "nltk_data" / "corpora"
PIECE = 1500
SEEDS = 5
TEST_SAMPLE = 3000


# --- the corpus --------------------------------------------------------------------------------


def pieces(text: str, size: int = PIECE) -> list[str]:
    """Consecutive lines joined until about ``size`` characters (the last short piece is kept if long enough)."""
    out, current = [], []
    length = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        current.append(line.strip())
        length += len(line)
        if length >= size:
            out.append("\n".join(current))
            current, length = [], 0
    if length >= size // 3:
        out.append("\n".join(current))
    return out


def _zip_texts(
    name: str, pattern: str, decode=lambda b: b.decode("utf-8", errors="replace")
) -> list[tuple[str, str]]:
    with zipfile.ZipFile(NLTK / f"{name}.zip") as z:
        return [(n, decode(z.read(n))) for n in sorted(z.namelist()) if re.fullmatch(pattern, n)]


def _brown(raw: bytes) -> str:
    words = raw.decode("latin-1").split("\n")
    return "\n".join(" ".join(w.rsplit("/", 1)[0] for w in line.split()) for line in words)


def corpus() -> list[dict]:
    docs: list[dict] = []

    def add(source: str, name: str, texts: list[str], cap: int | None = None) -> None:
        for i, t in enumerate(texts[:cap]):
            docs.append({"id": f"{source}/{name}/{i}", "text": t, "source": source})

    with gzip.open(CORPORA / "web_trafilatura_eval/trafilatura_eval_pages.jsonl.gz", "rt") as f:
        for line in f:
            r = json.loads(line)
            docs.append({"id": f"web/{r['id']}", "text": r["text"], "source": "web"})
    for path in sorted((CORPORA / "misc").glob("dolma_cc_en_head-*.jsonl.gz")):
        with gzip.open(path, "rt") as f:
            add("dolma_cc", path.stem, [json.loads(line)["text"] for line in f])
    with open(CORPORA / "misc/llm_foundry_arxiv_sample.jsonl") as f:
        for i, line in enumerate(f):
            add("arxiv", str(i), pieces(json.loads(line)["text"]), cap=40)
    for name, text in _zip_texts("brown", r"brown/c[a-r]\d\d", decode=_brown):
        add("brown", name.split("/")[-1], pieces(text), cap=4)
    for name, text in _zip_texts("abc", r"abc/(science|rural)\.txt"):
        add("abc", name.split("/")[-1], pieces(text), cap=1000 if "science" in name else 500)
    for name, text in _zip_texts("webtext", r"webtext/.*\.txt", decode=lambda b: b.decode("latin-1")):
        add("webtext", name.split("/")[-1], pieces(text), cap=100)
    for name, text in _zip_texts("movie_reviews", r"movie_reviews/(pos|neg)/cv[0-2]\d\d_\d+\.txt")[:600]:
        add("movie_reviews", name.split("/")[-1], [text])
    for name, text in _zip_texts("treebank", r"treebank/raw/wsj_\d+"):
        add("treebank", name.split("/")[-1], [text.replace(".START", "").strip()])
    for corpus_name, cap in (("state_union", 8), ("inaugural", 4)):
        for name, text in _zip_texts(
            corpus_name, rf"{corpus_name}/.*\.txt", decode=lambda b: b.decode("latin-1")
        ):
            add(corpus_name, name.split("/")[-1], pieces(text), cap=cap)
    return [d for d in docs if d["text"].strip()]


# --- benchmarks: targets and held-out examples ---------------------------------------------------


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def _half(text: str) -> bool:
    return hashlib.blake2b(text.encode(), digest_size=8).digest()[0] % 2 == 0


def benchmarks() -> dict[str, dict[str, list[tuple[str, str]]]]:
    """name -> {"targets": [(split, text)], "heldout": [text]}"""
    out = {}
    arc = []
    for name in ("arc_easy", "arc_challenge"):
        arc += [
            f"{r['query']} {r['choices'][r['gold']]}"
            for r in _jsonl(BENCH / f"llm_foundry_local_data/world_knowledge/{name}.jsonl")
        ]
    out["arc"] = {
        "targets": [("half_a", t) for t in arc if _half(t)],
        "heldout": [t for t in arc if not _half(t)],
    }

    valid = _jsonl(BENCH / "piqa/valid.jsonl")
    labels = [int(x) for x in open(BENCH / "piqa/valid-labels.lst").read().split()]
    out["piqa"] = {
        "targets": [
            ("dev", f"{r['goal']} {r['sol1'] if y == 0 else r['sol2']}") for r, y in zip(valid, labels)
        ],
        "heldout": [f"{r['goal']} {r['sol1']} {r['sol2']}" for r in _jsonl(BENCH / "piqa/tests.jsonl")],
    }
    out["gsm8k"] = {
        "targets": [("train", f"{r['question']} {r['answer']}") for r in _jsonl(BENCH / "gsm8k/train.jsonl")],
        "heldout": [f"{r['question']} {r['answer']}" for r in _jsonl(BENCH / "gsm8k/test.jsonl")],
    }

    def mmlu(split: str) -> list[str]:
        rows = []
        for f in sorted((BENCH / "mmlu" / split).glob("*.csv")):
            rows += [f"{r[0]} {r[1 + 'ABCD'.index(r[5])]}" for r in csv.reader(open(f, encoding="utf-8"))]
        return rows

    out["mmlu"] = {
        "targets": [("dev", t) for t in mmlu("dev")] + [("val", t) for t in mmlu("val")],
        "heldout": mmlu("test"),
    }
    return out


def write_targets(root: Path, name: str, rows: list[tuple[str, str]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "benchmark": [name] * len(rows),
            "split": [s for s, _ in rows],
            "example_id": [f"{name}:{i}" for i in range(len(rows))],
            "text": [t for _, t in rows],
        }
    )
    (root / "targets").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / "targets" / f"{name}.parquet")


# --- measures ----------------------------------------------------------------------------------


def closeness(doc_vectors, heldout_vectors) -> float:
    """Mean over documents of the max cosine to any held-out example."""
    import numpy as np

    best = np.full(len(doc_vectors), -1.0, dtype=np.float32)
    for i in range(0, len(heldout_vectors), 1024):
        sims = doc_vectors @ heldout_vectors[i : i + 1024].T
        best = np.maximum(best, sims.max(axis=1))
    return float(best.mean())


def top_share(ids: list[str], scores, share: float) -> list[str]:
    """The ``share`` of ids with the highest scores (ties: id order)."""
    import numpy as np

    n = max(1, round(share * len(ids)))
    order = np.lexsort((np.arange(len(ids)), -np.asarray(scores, dtype=np.float64)))
    return [ids[i] for i in order[:n]]


def timing(docs: int = 100_000, targets: int = 10_000, k: int = 100) -> dict:
    code = f"""
import time, numpy as np, json
from assay.scorers.betr import rank_documents, doc_scores
rng = np.random.default_rng(0)
def unit(n):
    x = rng.standard_normal((n, 384), dtype=np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
t, d = unit({targets}), unit({docs})
started = time.perf_counter()
sims, index = rank_documents(t, (d[i : i + 8192] for i in range(0, len(d), 8192)), {k})
rank_s = time.perf_counter() - started
s = doc_scores(sims, index, len(d))
print(json.dumps({{"rank_seconds": rank_s, "total_seconds": time.perf_counter() - started, "ranked": int(len(s["doc"]))}}))
"""
    wall, peak, out = run_child(code)
    result = json.loads(out.strip().splitlines()[-1])
    return {
        "docs": docs,
        "targets": targets,
        "k": k,
        **result,
        "peak_rss_mib": round(peak),
        "wall_seconds": round(wall, 1),
    }


# --- the run -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--timing-only", action="store_true")
    args = parser.parse_args()
    results: dict = {}
    if not args.skip_timing:
        print("timing rank_documents on 100k x 10k synthetic vectors ...", file=sys.stderr)
        results["timing_cpu"] = timing()
        print(json.dumps(results["timing_cpu"]), file=sys.stderr)
    if args.timing_only:
        print(json.dumps(results, indent=2))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="assay-betr-bench-"))
    results.update(validate(work))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    report(results)


def validate(work: Path) -> dict:
    import numpy as np
    from click.testing import CliRunner

    from assay.corpora.catalog import run_query
    from assay.pipelines.annotate import annotate
    from assay.pipelines.cli import main as cli
    from assay.pipelines.ingest import ingest
    from assay.scorers.embed import EmbeddingScorer, in_sample, sample_threshold, vectors_of

    work.mkdir(parents=True, exist_ok=True)
    root = work / "root"
    docs = corpus()
    with open(work / "corpus.jsonl", "w") as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")
    stamps = {}
    if not (root / "manifest.json").exists():
        ingest([str(work / "corpus.jsonl")], root, quiet=True)
    started = time.time()
    annotate(root, ["stats", "heuristics", "embed"], quiet=True)
    stamps["annotate_seconds"] = round(time.time() - started, 1)
    table = run_query(root, "SELECT id, source, fineweb_keep, embedding FROM annotations ORDER BY id")
    ids = table.column("id").to_pylist()
    vectors, valid = vectors_of(table.column("embedding"))
    assert valid.all()
    vectors = vectors.astype(np.float32)
    at = {doc_id: i for i, doc_id in enumerate(ids)}
    keep = np.asarray(table.column("fineweb_keep").to_pylist(), dtype=bool)
    results = {
        "corpus": {
            "documents": len(ids),
            "by_source": {
                s: table.column("source").to_pylist().count(s)
                for s in sorted(set(table.column("source").to_pylist()))
            },
            "fineweb_keep": int(keep.sum()),
            **stamps,
        },
        "benchmarks": {},
    }
    embedder = EmbeddingScorer()
    rng = np.random.default_rng(0)
    half_b = ~in_sample(ids, sample_threshold("0.5", root))  # the documents betr:NAME:sample=0.5 leaves out
    for name, bench in benchmarks().items():
        print(f"{name}: {len(bench['targets'])} targets, {len(bench['heldout'])} held out", file=sys.stderr)
        write_targets(root, name, bench["targets"])
        heldout = bench["heldout"]
        if len(heldout) > TEST_SAMPLE:
            heldout = [heldout[i] for i in sorted(rng.choice(len(heldout), TEST_SAMPLE, replace=False))]
        held = embedder.embed_texts(heldout).astype(np.float32)
        col = f"betr_{name}"

        started = time.time()
        annotate(root, [f"betr:{name}"], quiet=True)
        rank_seconds = time.time() - started
        scores = {r["id"]: r[col] for r in run_query(root, f"SELECT id, {col} FROM annotations").to_pylist()}
        s = np.array([scores[i] for i in ids])
        sel = [at[i] for i in top_share(ids, s, 0.10)]
        n = len(sel)
        r = {
            "targets": len(bench["targets"]),
            "heldout_measured": len(heldout),
            "betr_top10": closeness(vectors[sel], held),
            "random10": float(
                np.mean(
                    [closeness(vectors[rng.choice(len(ids), n, replace=False)], held) for _ in range(SEEDS)]
                )
            ),
            "fineweb_keep10": float(
                np.mean(
                    [
                        closeness(vectors[rng.choice(np.flatnonzero(keep), n, replace=False)], held)
                        for _ in range(SEEDS)
                    ]
                )
            ),
            "all": closeness(vectors, held),
            "annotate_betr_seconds": round(rank_seconds, 1),
        }
        # the extension: rank half A, train on it, pick the top 10 % of half B by the classifier
        b_ids = [i for i, b in zip(ids, half_b) if b]
        b_rank = [scores[i] for i in b_ids]
        n_b = round(0.10 * len(b_ids))
        b_rows = np.array([at[i] for i in b_ids])
        r["half_b_rank_top10"] = closeness(vectors[[at[i] for i in top_share(b_ids, b_rank, 0.10)]], held)
        r["half_b_random10"] = float(
            np.mean([closeness(vectors[rng.choice(b_rows, n_b, replace=False)], held) for _ in range(SEEDS)])
        )
        spec = f"{name}:sample=0.5"
        for setting, extra in (
            ("paper", []),
            ("small_data", ["--epoch", "25", "--lr", "0.2", "--min-count", "2"]),
        ):
            out = CliRunner().invoke(cli, ["train", "betr", spec, "--root", str(root), *extra])
            if out.exit_code != 0:
                import traceback

                detail = "".join(traceback.format_exception(*out.exc_info)) if out.exc_info else ""
                raise RuntimeError(f"assay train betr {spec} {' '.join(extra)}: {out.output}\n{detail}")
            accuracy = float(re.search(r"held-out accuracy ([0-9.]+)", out.output).group(1))
            r["ranked_sample"] = int(
                re.search(r"of ([0-9,]+) ranked documents", out.output).group(1).replace(",", "")
            )
            annotate(root, [f"betr:{spec}"], quiet=True)
            p = {
                row["id"]: row[col]
                for row in run_query(root, f"SELECT id, {col} FROM annotations").to_pylist()
            }
            ft = closeness(vectors[[at[i] for i in top_share(b_ids, [p[i] for i in b_ids], 0.10)]], held)
            gain = r["half_b_rank_top10"] - r["half_b_random10"]
            r[f"fasttext_{setting}"] = {
                "heldout_accuracy": accuracy,
                "half_b_top10": ft,
                "kept_gain": (ft - r["half_b_random10"]) / gain if gain else None,
            }
            # the next setting retrains: remove this classifier so `train` starts afresh
            for f in (root / "models").glob(f"betr_{name}_*.fasttext.bin*"):
                f.unlink()
        results["benchmarks"][name] = r
        print(json.dumps(r), file=sys.stderr)
    return results


def report(results: dict) -> None:
    c = results.get("corpus")
    if c:
        print(
            f"corpus: {c['documents']:,} documents ({', '.join(f'{k} {v}' for k, v in c['by_source'].items())}); "
            f"fineweb_keep {c['fineweb_keep']:,}"
        )
        print(
            "\n| benchmark | targets | held out | BETR top 10 % | random 10 % | fineweb_keep 10 % | whole corpus |"
        )
        print("|---|---|---|---|---|---|---|")
        for name, r in results["benchmarks"].items():
            print(
                f"| {name} | {r['targets']:,} | {r['heldout_measured']:,} | {r['betr_top10']:.4f} | {r['random10']:.4f} | "
                f"{r['fineweb_keep10']:.4f} | {r['all']:.4f} |"
            )
        print("\nfastText extension (rank half A, classify half B; mean max-cosine of half B's top 10 %)\n")
        print(
            "| benchmark | rank top 10 % | random 10 % | fastText (paper hp) | acc | kept | fastText (small-data hp) | acc | kept |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for name, r in results["benchmarks"].items():
            a, b = r["fasttext_paper"], r["fasttext_small_data"]
            print(
                f"| {name} | {r['half_b_rank_top10']:.4f} | {r['half_b_random10']:.4f} | {a['half_b_top10']:.4f} | "
                f"{a['heldout_accuracy']:.3f} | {a['kept_gain']:.0%} | {b['half_b_top10']:.4f} | "
                f"{b['heldout_accuracy']:.3f} | {b['kept_gain']:.0%} |"
            )
    t = results.get("timing_cpu")
    if t:
        print(
            f"\nranking {t['docs']:,} docs x {t['targets']:,} targets (synthetic), k={t['k']}: "
            f"{t['rank_seconds']:.1f} s ranking, {t['total_seconds']:.1f} s with scores, peak RSS {t['peak_rss_mib']} MiB"
        )


if __name__ == "__main__":
    main()
