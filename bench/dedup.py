"""Deduplication bench: MinHash kernels, Assay's planned pipeline vs datatrove's four stages.

    .venv/bin/python -P bench/dedup.py                       # all parts, defaults below
    .venv/bin/python -P bench/dedup.py --part kernel         # signature throughput per implementation
    .venv/bin/python -P bench/dedup.py --part pipeline --originals 1500 --planted 250 --scale 10

Input: real text (the trafilatura web pages and dolma Common Crawl heads of ../shared/data, the
arXiv sample, and the US speeches in sample/), documents of 50 words or more, with planted
copies of `--planted` of them (tests/fixtures/dedup/planted.py: 1 %, 5 %, 20 % word edits,
reordered paragraphs, boilerplate, case/space-only copies). The 10x corpus adds, for every
original, `scale - 1` copies with their words shuffled (no 5-word shingle survives, so they
are unique documents of real length and vocabulary) to see how memory grows with the corpus.

Parts:

* kernel: signatures (112 MinHash values) of the same documents by Assay's numpy code, by
  Assay's front end (normalisation, words, shingle hashes) feeding rensa's Rust kernel, by
  datatrove's MinhashDedupSignature (its spaCy English tokenizer, as it ships), by datasketch
  (MinHash.bulk) and by rensa on Python-made shingle strings. datasketch and rensa are not
  Assay dependencies: install them anywhere on sys.path (e.g. `pip install --target DIR
  datasketch rensa` and `--extra-path DIR`); a missing one is reported, not fatal.
* pipeline: `annotate(root, ["minhash"])` against datatrove's MinhashDedupSignature ->
  Buckets -> Cluster -> Filter on LocalPipelineExecutor, both reading the same docs shards in
  a fresh process each; datatrove both as shipped (spaCy tokenizer) and with a whitespace
  tokenizer (the same words Assay uses), so the ratio is not only spaCy's cost. Reported:
  wall seconds, docs/s, MB/s, the ratio, peak RSS of the largest single process (the worst
  worker), planted precision/recall per kind for each tool, and agreement of the clusters.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, SHARED, real_documents  # noqa: E402

PLANTED = REPO / "tests" / "fixtures" / "dedup" / "planted.py"


def planted_module():
    spec = importlib.util.spec_from_file_location("planted", PLANTED)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def source_texts() -> list[tuple[str, str]]:
    docs = real_documents()
    for name in ("inaugural", "state_union"):
        with gzip.open(REPO / "sample" / "speeches" / f"{name}.jsonl.gz", "rt") as f:
            docs += [(r["id"], r["text"]) for r in map(json.loads, f)]
    arxiv = SHARED / "corpora" / "misc" / "llm_foundry_arxiv_sample.jsonl"
    if arxiv.exists():
        docs += [(f"arxiv/{i}", json.loads(line)["text"]) for i, line in enumerate(arxiv.open())]
    seen, out = set(), []
    for doc_id, text in docs:
        if len(text.split()) >= 50 and doc_id not in seen:
            seen.add(doc_id)
            out.append((doc_id, text))
    return out


def build_corpus(
    out: Path, originals: int, planted: int, scale: int, seed: int = 0
) -> tuple[Path, list[dict]]:
    """A corpus root of the planted set (plus shuffled fillers at scale > 1) and its records."""
    from assay.corpora.ingest import IngestOptions
    from assay.pipelines.ingest import ingest

    plant = planted_module()
    texts = source_texts()[:originals]
    records = plant.plant(texts, planted, seed=seed)
    rng = random.Random(seed)
    fillers = []
    for copy in range(1, scale):
        for doc_id, text in texts:
            words = text.split()
            rng.shuffle(words)
            fillers.append(
                {"id": f"{doc_id}~shuffled{copy}", "text": " ".join(words), "group": None, "kind": "filler"}
            )
    for r in fillers:
        r["group"] = r["id"]
    all_records = records + fillers
    out.mkdir(parents=True, exist_ok=True)
    src = out / "input.jsonl"
    with src.open("w") as f:
        for r in all_records:
            f.write(json.dumps({"id": r["id"], "text": r["text"]}) + "\n")
    root = out / "root"
    shard_rows = max(200, len(all_records) // 8)  # eight shards: work for several workers
    ingest([str(src)], root, IngestOptions(shard_rows=shard_rows), quiet=True)
    return root, all_records


# --- measuring a child process -------------------------------------------------------------------


def _tree_hwm(pid: int) -> int:
    """Largest VmHWM (kB) among a process and its descendants now alive."""
    best, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmHWM:"):
                    best = max(best, int(line.split()[1]))
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    stack += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return best


def run_measured(code: str) -> dict:
    """Run python code in a fresh process: wall seconds, peak RSS MiB of its largest process."""
    # output to files, not pipes: a chatty child (datatrove logs every task) would fill a pipe and block
    out_f, err_f = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, "-P", "-c", code], cwd=REPO, stdout=out_f, stderr=err_f)
    peak = [0]
    finished = threading.Event()

    def watch():  # not proc.poll(): it would reap the child before wait4 below
        while not finished.is_set():
            peak[0] = max(peak[0], _tree_hwm(proc.pid))
            time.sleep(0.05)

    started = time.perf_counter()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, status, _ = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    finished.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    watcher.join()
    out_f.seek(0)
    err_f.seek(0)
    out, err = out_f.read(), err_f.read()
    if proc.returncode != 0:
        raise RuntimeError(err[-3000:])
    # not usage.ru_maxrss: Linux carries it across exec, so it would be this (large) process's peak
    return {"wall_s": wall, "peak_rss_mib": peak[0] / 1024, "stdout": out}


ASSAY_RUN = """
from assay.pipelines.annotate import annotate
from assay.pipelines.executor import ExecutorConfig
annotate({root!r}, ["minhash"], ExecutorConfig(workers={workers}), quiet=True)
"""

DATATROVE_RUN = """
import re
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
    MinhashDedupFilter, MinhashDedupSignature)
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.word_tokenizers import WordTokenizer

class Whitespace(WordTokenizer):
    def word_tokenize(self, text): return text.split()
    def sent_tokenize(self, text): return [text]
    def span_tokenize(self, text): return [m.span() for m in re.finditer(r"\\S+", text)]

language = Whitespace() if {whitespace} else "en"
docs, work, n, w = {docs!r}, {work!r}, {shards}, {workers}
cfg = MinhashConfig()
read = lambda: ParquetReader(docs, glob_pattern="part-*.parquet", text_key="text", id_key="id")
s1 = LocalPipelineExecutor([read(), MinhashDedupSignature(work + "/sigs", config=cfg, language=language)],
                           tasks=n, workers=w, logging_dir=work + "/logs/s1")
s2 = LocalPipelineExecutor([MinhashDedupBuckets(work + "/sigs", work + "/buckets", config=cfg)],
                           tasks=cfg.num_buckets, workers=w, logging_dir=work + "/logs/s2", depends=s1)
s3 = LocalPipelineExecutor([MinhashDedupCluster(work + "/buckets", work + "/remove", config=cfg, save_cluster_id=True,
                            save_cluster_size=True)], tasks=1, logging_dir=work + "/logs/s3", depends=s2)
s4 = LocalPipelineExecutor([read(), MinhashDedupFilter(work + "/remove", load_cluster_ids=True, load_cluster_sizes=True,
                            exclusion_writer=JsonlWriter(work + "/removed", compression=None)),
                            JsonlWriter(work + "/kept", compression=None)],
                           tasks=n, workers=w, logging_dir=work + "/logs/s4", depends=s3)
s4.run()
"""


def assay_clusters(root: Path) -> dict[str, str]:
    from assay.corpora.catalog import run_query

    return {
        r["id"]: r["dup_cluster"]
        for r in run_query(root, "SELECT id, dup_cluster FROM annotations").to_pylist()
    }


def datatrove_clusters(work: Path) -> dict[str, str]:
    out = {}
    for sub in ("kept", "removed"):
        for f in sorted((work / sub).glob("*.jsonl")):
            for line in f.open():
                r = json.loads(line)
                cid = r["metadata"].get("minhash_cluster_id", -1)
                out[r["id"]] = f"c{cid}" if cid != -1 else r["id"]
    return out


def pairs(clusters: dict[str, str]) -> set[tuple[str, str]]:
    members: dict[str, list[str]] = {}
    for doc, c in clusters.items():
        members.setdefault(c, []).append(doc)
    out = set()
    for ids in members.values():
        ids.sort()
        out |= {(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]}
    return out


def agreement(a: dict[str, str], b: dict[str, str]) -> dict:
    pa_, pb = pairs(a), pairs(b)
    members = lambda c: {d: frozenset(x for x, k in c.items() if k == c[d]) for d in c}  # noqa: E731
    ma, mb = members(a), members(b)
    same = sum(ma[d] == mb.get(d) for d in ma)
    return {
        "pairs_assay": len(pa_),
        "pairs_datatrove": len(pb),
        "pairs_both": len(pa_ & pb),
        "pair_jaccard": round(len(pa_ & pb) / len(pa_ | pb), 4) if pa_ | pb else 1.0,
        "docs_same_membership": round(same / len(ma), 4),
    }


def part_pipeline(args, scale: int, tools: list[str]) -> dict:
    plant = planted_module()
    tmp = Path(tempfile.mkdtemp(prefix="assay-dedup-bench-"))
    try:
        root, records = build_corpus(tmp / "corpus", args.originals, args.planted, scale)
        from assay.corpora.manifest import load_manifest

        manifest = load_manifest(root)
        n_docs = sum(s["rows"] for s in manifest["shards"])
        mb = sum(len(r["text"].encode()) for r in records) / 1e6
        shards = len(manifest["shards"])
        planted_only = {r["id"] for r in records if r["kind"] != "filler"}
        planted_records = [r for r in records if r["kind"] != "filler"]
        out = {
            "scale": scale,
            "docs": n_docs,
            "text_mb": round(mb, 2),
            "shards": shards,
            "workers": args.workers,
        }
        results = {}
        for tool in tools:
            if tool == "assay":
                run_root = tmp / "assay-root"
                shutil.copytree(root, run_root)
                m = run_measured(ASSAY_RUN.format(root=str(run_root), workers=args.workers))
                clusters = assay_clusters(run_root)
            else:
                work = tmp / f"{tool}-work"
                code = DATATROVE_RUN.format(
                    whitespace=tool == "datatrove-whitespace",
                    docs=str(root / "docs"),
                    work=str(work),
                    shards=shards,
                    workers=args.workers,
                )
                m = run_measured(code)
                clusters = datatrove_clusters(work)
            planted_clusters = {d: c for d, c in clusters.items() if d in planted_only}
            score = plant.scores(planted_records, planted_clusters)
            results[tool] = {
                "wall_s": round(m["wall_s"], 2),
                "docs_per_s": round(n_docs / m["wall_s"], 1),
                "mb_per_s": round(mb / m["wall_s"], 3),
                "peak_rss_mib": round(m["peak_rss_mib"], 1),
                "recall": {k: v["recall"] for k, v in score.items()},
                "precision_all": score["all"]["precision"],
                "clusters": planted_clusters,
            }
            print(
                f"  {tool} at {scale}x: {results[tool]['wall_s']} s, {results[tool]['peak_rss_mib']} MiB",
                flush=True,
            )
        for tool in results:
            if tool != "assay" and "assay" in results:
                r = results[tool]
                r["assay_throughput_ratio"] = round(r["wall_s"] / results["assay"]["wall_s"], 2)
                r["assay_rss_ratio"] = round(results["assay"]["peak_rss_mib"] / r["peak_rss_mib"], 2)
                r["agreement_on_planted"] = agreement(results["assay"]["clusters"], r["clusters"])
        for r in results.values():
            del r["clusters"]
        out["tools"] = results
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- kernels ------------------------------------------------------------------------------------


def part_kernel(args) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from assay.scorers import minhash as mh

    texts = [t for _, t in source_texts()[: args.kernel_docs]]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    scorer = mh.MinHashScorer()
    k = scorer.bands * scorer.rows
    results: dict[str, dict] = {}

    def timed(name, fn):
        fn(texts[:20])  # warm up: imports, tokenizer models
        started = time.perf_counter()
        fn(texts)
        s = time.perf_counter() - started
        results[name] = {
            "seconds": round(s, 3),
            "docs_per_s": round(len(texts) / s, 1),
            "mb_per_s": round(mb / s, 2),
        }
        print(f"  {name}: {results[name]}", flush=True)

    def assay_numpy(ts):
        for i in range(0, len(ts), 4096):
            scorer.signatures(pa.array(ts[i : i + 4096]))

    timed("assay numpy (used)", assay_numpy)

    def shingle_strings(ts):
        words = pc.utf8_split_whitespace(mh.normalise(pa.array(ts))).to_pylist()
        out = []
        for ws in words:
            ws = [w for w in ws if w]
            out.append([" ".join(ws[i : i + scorer.ngram]) for i in range(len(ws) - scorer.ngram + 1)])
        return out

    try:
        import rensa

        def assay_rensa(ts):
            for i in range(0, len(ts), 4096):
                w, off = mh.word_hashes(pa.array(ts[i : i + 4096]))
                sh, sh_off = mh.shingle_hashes(w, off, scorer.ngram)
                rensa.RMinHash.digest_matrix_from_flat_token_hashes(sh, sh_off.astype(np.uint64), k, 1)

        timed("assay front end + rensa kernel", assay_rensa)
        timed(
            "rensa (python shingles)",
            lambda ts: rensa.RMinHash.digest_matrix_from_token_sets(shingle_strings(ts), k, 1),
        )
    except ImportError:
        results["rensa"] = {"missing": "pip install rensa (anywhere on sys.path, see --extra-path)"}
    try:
        from datasketch import MinHash

        def datasketch_bulk(ts):
            MinHash.bulk([[s.encode() for s in doc] for doc in shingle_strings(ts)], num_perm=k, seed=1)

        timed("datasketch MinHash.bulk (python shingles)", datasketch_bulk)
    except ImportError:
        results["datasketch"] = {"missing": "pip install datasketch (anywhere on sys.path, see --extra-path)"}

    from datatrove.pipeline.dedup.minhash import MinhashDedupSignature

    step = MinhashDedupSignature(output_folder=tempfile.mkdtemp())

    def datatrove_sig(ts):
        for t in ts:
            sh = step.get_shingles(t)
            if sh.size:
                step.get_signature(sh)

    timed("datatrove MinhashDedupSignature (spaCy en)", datatrove_sig)
    from datatrove.utils.word_tokenizers import WordTokenizer

    class Whitespace(WordTokenizer):  # the same words Assay shingles, without spaCy's cost
        def word_tokenize(self, text):
            return text.split()

        def sent_tokenize(self, text):
            return [text]

        def span_tokenize(self, text):
            return [m.span() for m in re.finditer(r"\S+", text)]

    step = MinhashDedupSignature(output_folder=tempfile.mkdtemp(), language=Whitespace())
    timed("datatrove MinhashDedupSignature (whitespace)", datatrove_sig)
    # where Assay's own time goes
    batch = pa.array(texts)
    started = time.perf_counter()
    w, off = mh.word_hashes(batch)
    t_words = time.perf_counter() - started
    sh, sh_off = mh.shingle_hashes(w, off, scorer.ngram)
    t_shingles = time.perf_counter() - started - t_words
    mh.minhash(sh, sh_off, *scorer._perm)
    t_kernel = time.perf_counter() - started - t_words - t_shingles
    results["assay breakdown"] = {
        "normalise+words_s": round(t_words, 3),
        "shingles_s": round(t_shingles, 3),
        "minhash_kernel_s": round(t_kernel, 3),
    }
    return {"docs": len(texts), "text_mb": round(mb, 2), "permutations": k, "results": results}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=["kernel", "pipeline", "all"], default="all")
    p.add_argument("--originals", type=int, default=1200, help="real documents (50+ words) to start from")
    p.add_argument("--planted", type=int, default=200, help="originals that get one copy of each kind")
    p.add_argument("--scale", type=int, default=10, help="the larger corpus: originals x scale documents")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--kernel-docs", type=int, default=600)
    p.add_argument("--extra-path", action="append", default=[], help="folders with datasketch / rensa")
    p.add_argument("--json", type=Path, help="write the figures here too")
    args = p.parse_args()
    for extra in args.extra_path:
        sys.path.append(extra)  # after the venv: its numpy wins over a copy in the folder
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    report: dict = {"cpus": os.cpu_count()}
    if args.part in ("kernel", "all"):
        print("kernel: signatures of the same documents", flush=True)
        report["kernel"] = part_kernel(args)
    if args.part in ("pipeline", "all"):
        print("pipeline at 1x", flush=True)
        report["pipeline_1x"] = part_pipeline(args, 1, ["assay", "datatrove", "datatrove-whitespace"])
        if args.scale > 1:
            print(f"pipeline at {args.scale}x", flush=True)
            tools = ["assay", "datatrove-whitespace"]  # datatrove with spaCy at 10x takes hours on 2 cores
            report[f"pipeline_{args.scale}x"] = part_pipeline(args, args.scale, tools)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
