"""PreSelect on real text: what do its selected documents look like to the largest proxy?

    .venv/bin/python bench/preselect.py [--work DIR] [--sizes 0.1M,0.3M,1M] [--tokens 1M] [--json OUT]

The corpus is the real text of `bench/betr.py` (7,055 pieces of about 1,500 characters: web pages,
dolma Common Crawl heads, arXiv, NLTK corpora), split by a hash of the document id into three
disjoint thirds, each ingested into its own corpus root:

    proxy  trains the proxy ladder (`assay proxy train`, three sizes, the same tokens for each);
    label  gets `lm_loss` of every proxy, then `assay train preselect` (S, labels, fastText);
    eval   gets `lm_loss` of every proxy and the classifier's `preselect_NAME` (the model file is
           copied in, as a user reuses a classifier on a new corpus); no document of it played a
           part in training the proxies or the classifier.

Capability: proxies this small score benchmarks at chance, so their order is their held-out loss
from ladder.json (the largest is the strongest), given to `train preselect` as `--capability`.

Selections of 10 % of the eval third's characters: the top by `preselect_NAME` (PreSelect's
recipe), a random 10 % (5 seeds), and two references that read the losses directly: the top by S
itself and the lowest bits per byte under the largest proxy (a perplexity filter). For each: the
mean bits per byte under the largest proxy, the mean improvement from the smallest to the largest
proxy (bpb small - bpb large: how much more a stronger model learns of the document), and the
sources the selection draws from.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from betr import corpus  # noqa: E402
from common import run_command  # noqa: E402

SEEDS = 5
SHARE = 0.10
NAME = "bench"


def third(doc_id: str) -> str:
    return ("proxy", "label", "eval")[int(hashlib.sha1(doc_id.encode()).hexdigest(), 16) % 3]


def set_name(size: str) -> str:
    return "lm_" + size.lower().replace(".", "_")


def assay(*args: str) -> dict:
    return run_command([str(REPO / ".venv" / "bin" / "assay"), *args])


def build(work: Path, sizes: list[str], tokens: str, threads: int) -> dict:
    """Run the user-facing chain; returns timings and the ladder's held-out losses."""
    timings: dict[str, float] = {}
    parts: dict[str, list[dict]] = {"proxy": [], "label": [], "eval": []}
    for doc in corpus():
        parts[third(doc["id"])].append(doc)
    for part, docs in parts.items():
        path = work / f"{part}.jsonl"
        path.write_text("".join(json.dumps(d) + "\n" for d in docs))
        assay("ingest", str(path), "--root", str(work / part))
        assay("annotate", "--root", str(work / part), "--scorer", "stats")
    print("documents: " + ", ".join(f"{p} {len(d):,}" for p, d in parts.items()), flush=True)

    ladder = work / "ladder"
    started = time.time()
    assay(
        "proxy", "train", "--root", str(work / "proxy"), "--sizes", ",".join(sizes), "--tokens", tokens,
        "--seq-len", "128", "--vocab", "2048", "--out", str(ladder), "--threads", str(threads), "--quiet",
    )  # fmt: skip
    timings["proxy train"] = time.time() - started
    heldout = {
        s["name"]: s["heldout_loss"] for s in json.loads((ladder / "ladder.json").read_text())["sizes"]
    }
    print("held-out loss per size: " + ", ".join(f"{k} {v:.3f}" for k, v in heldout.items()), flush=True)

    specs = [a for size in sizes for a in ("--scorer", f"lm_loss:{ladder / size}")]
    for part in ("label", "eval"):
        started = time.time()
        assay("annotate", "--root", str(work / part), *specs)
        timings[f"lm_loss x{len(sizes)} on {part}"] = time.time() - started

    started = time.time()
    trained = assay(
        "train", "preselect", NAME, "--root", str(work / "label"),
        "--models", ",".join(set_name(s) for s in sizes),
        "--capability", ",".join(str(-heldout[s]) for s in sizes),
    )["stdout"]  # fmt: skip
    timings["train preselect"] = time.time() - started
    print(trained, flush=True)
    models = work / "eval" / "models"
    models.mkdir(exist_ok=True)
    for suffix in (".bin", ".bin.json", ".strength.json"):
        shutil.copy(work / "label" / "models" / f"preselect_{NAME}{suffix}", models)
    assay("annotate", "--root", str(work / "eval"), "--scorer", f"preselect:{NAME}:strength")
    assay("annotate", "--root", str(work / "eval"), "--scorer", f"preselect:{NAME}")
    return {"timings": timings, "heldout_loss": heldout, "train_preselect": trained}


def top_by(frame, column: str, descending: bool, share: float = SHARE):
    """Documents in score order until `share` of the characters is reached (the recipe's budget)."""
    import polars as pl

    ordered = frame.sort([column, "id"], descending=[descending, False])
    budget = share * frame["chars"].sum()
    return ordered.filter(pl.col("chars").cum_sum().shift(1, fill_value=0) < budget)


def describe(selection, large: str, small: str) -> dict:
    import polars as pl

    by_source = selection.group_by("source").agg(pl.col("chars").sum()).sort("chars", descending=True)
    total = selection["chars"].sum()
    return {
        "docs": selection.height,
        "chars": int(total),
        "bpb_largest": float(selection[f"{large}_bpb"].mean()),
        "gain_small_to_large": float((selection[f"{small}_bpb"] - selection[f"{large}_bpb"]).mean()),
        "sources": {r["source"]: round(r["chars"] / total, 3) for r in by_source.head(4).to_dicts()},
    }


def measure(work: Path, sizes: list[str]) -> dict:
    import numpy as np
    import polars as pl

    large, small = set_name(sizes[-1]), set_name(sizes[0])
    assay(
        "sql",
        f"SELECT id, source, chars, preselect_{NAME} AS p, preselect_{NAME}_s AS s, "
        f"{large}_bpb, {small}_bpb FROM annotations",
        "--root", str(work / "eval"), "--format", "csv", "--out", str(work / "eval.csv"),
    )  # fmt: skip
    frame = pl.read_csv(work / "eval.csv").drop_nulls()
    rows = {
        "preselect (classifier)": describe(top_by(frame, "p", True), large, small),
        "top S (the losses themselves)": describe(top_by(frame, "s", True), large, small),
        "lowest bpb, largest proxy": describe(top_by(frame, f"{large}_bpb", False), large, small),
        "whole eval third": describe(frame, large, small),
    }
    randoms = []
    for seed in range(SEEDS):
        shuffled = frame.with_columns(r=pl.Series(np.random.default_rng(seed).random(frame.height)))
        randoms.append(describe(top_by(shuffled, "r", True), large, small))
    rows["random (5 seeds)"] = {
        "docs": int(np.mean([r["docs"] for r in randoms])),
        "chars": int(np.mean([r["chars"] for r in randoms])),
        "bpb_largest": float(np.mean([r["bpb_largest"] for r in randoms])),
        "bpb_largest_sd": float(np.std([r["bpb_largest"] for r in randoms], ddof=1)),
        "gain_small_to_large": float(np.mean([r["gain_small_to_large"] for r in randoms])),
        "gain_sd": float(np.std([r["gain_small_to_large"] for r in randoms], ddof=1)),
        "sources": randoms[0]["sources"],
    }
    corr = float(np.corrcoef(frame["p"].to_numpy(), frame["s"].to_numpy())[0, 1])
    return {"selections": rows, "eval_docs": frame.height, "corr_classifier_vs_s": corr}


def report(results: dict, sizes: list[str]) -> None:
    print(f"\nPreSelect on {results['eval_docs']:,} held-out documents, 10 % of characters per selection;")
    print(f"bits per byte under the largest proxy ({sizes[-1]}); gain = bpb({sizes[0]}) - bpb({sizes[-1]})\n")
    print("| selection | docs | bpb largest | gain small->large | top sources (share of chars) |")
    print("|---|---|---|---|---|")
    for name, r in results["selections"].items():
        bpb = f"{r['bpb_largest']:.3f}" + (f" ± {r['bpb_largest_sd']:.3f}" if "bpb_largest_sd" in r else "")
        gain = f"{r['gain_small_to_large']:.3f}" + (f" ± {r['gain_sd']:.3f}" if "gain_sd" in r else "")
        sources = ", ".join(f"{k} {v:.2f}" for k, v in r["sources"].items())
        print(f"| {name} | {r['docs']:,} | {bpb} | {gain} | {sources} |")
    print(
        f"\ncorrelation of the classifier's P(positive) with S on the eval third: {results['corr_classifier_vs_s']:.3f}"
    )
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in results["timings"].items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=None, help="keep the roots here (default: a temp dir)")
    ap.add_argument("--sizes", default="0.1M,0.3M,1M")
    ap.add_argument("--tokens", default="1M", help="training tokens per proxy")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for proxy training")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    sizes = args.sizes.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = build(work, sizes, args.tokens, args.threads)
        results.update(measure(work, sizes))
    report(results, sizes)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
