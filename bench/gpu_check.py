"""The one prepared check for a GPU machine: embed and BETR top-k on CUDA vs CPU, as one JSON summary.

    python bench/gpu_check.py TEXTS.parquet [--model PATH] [--forbid-cpu-only]

TEXTS.parquet: a ``text`` column of real documents (a few hundred are enough). The GPU machine's
image has Python 3.12, torch (CUDA), transformers, sentence-transformers and pyarrow, but not
duckdb, polars, datatrove or fastText, and Assay is not installed there: the script imports
``assay.scorers.*`` straight from this working tree (it builds the ``assay`` namespace from the
repository folders, as the installed package maps them). ``--forbid-cpu-only`` hides those four
packages here too, to prove the code path needs none of them. Nothing downloads: ``--model`` is
a local sentence-transformers folder (default: all-MiniLM-L6-v2 from its wheel; on the GPU
machine, pass a folder that travelled with the working tree, e.g. an fp16 copy).

It checks, on the same texts:

* CPU: a document's float16 vector is the same bits alone or in a batch (purity);
  Assay's embedding vs a plain ``SentenceTransformer.encode`` loop (seconds, ratio);
  BETR's chunked top-k equals a brute-force ranking.
* CUDA (when torch sees a GPU): fp16 vectors vs the CPU's fp32 ones (cosine >= 0.999), purity on
  the GPU (share of vectors identical alone and batched), fp16 embedding vs the raw encode loop
  in the same precision, and BETR's top-k on CUDA identical to the CPU's (real vectors and
  ``--synthetic-docs`` x ``--synthetic-targets`` random unit vectors).

Prints one JSON object on stdout (progress goes to stderr); exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CPU_ONLY = ("duckdb", "polars", "datatrove", "fasttext", "fasttext_pybind")
MIN_COSINE = 0.999


def import_assay(repo: Path = REPO) -> dict[str, str]:
    """Make ``assay.corpora`` and ``assay.scorers`` importable from the repository's folders."""
    for name, folder in (("assay", "assay"), ("assay.corpora", "corpora"), ("assay.scorers", "scorers")):
        spec = importlib.util.spec_from_file_location(
            name, repo / folder / "__init__.py", submodule_search_locations=[str(repo / folder)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        if "." in name:
            setattr(sys.modules["assay"], name.partition(".")[2], module)
    names = ("assay.scorers.runtime", "assay.scorers.embed", "assay.scorers.betr")
    return {name: importlib.import_module(name).__file__ for name in names}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
    return best, out


def brute_force_topk(targets, docs, k: int):
    import numpy as np

    sims = targets.astype(np.float64) @ docs.astype(np.float64).T
    return np.stack([np.lexsort((np.arange(len(row)), -row))[:k] for row in sims])


def embedding_checks(scorer, texts: list[str], repeat: int, batch_size: int) -> dict:
    """Purity and speed of Assay's embedding vs the raw encode loop, on the scorer's device."""
    import numpy as np

    model = scorer._load()
    scorer.embed_texts(texts[:8])  # warm up both paths
    model.encode(texts[:8], batch_size=batch_size, normalize_embeddings=True)
    assay_s, vectors = timed(lambda: scorer.embed_texts(texts), repeat)
    raw_s, _ = timed(lambda: model.encode(texts, batch_size=batch_size, normalize_embeddings=True), repeat)
    few = texts[: min(len(texts), 32)]
    alone = np.stack([scorer.embed_texts([t])[0] for t in few])
    equal = (alone == vectors[: len(few)]).all(axis=1)
    diff = np.abs(alone.astype(np.float32) - vectors[: len(few)].astype(np.float32)).max()
    return {
        "device": scorer.device,
        "dtype": scorer.dtype,
        "texts": len(texts),
        "assay_seconds": round(assay_s, 4),
        "raw_encode_seconds": round(raw_s, 4),
        "ratio_raw_over_assay": round(raw_s / assay_s, 3),
        "purity_exact": bool(equal.all()),
        "purity_rows_equal": round(float(equal.mean()), 4),
        "purity_max_abs_diff": float(diff),
        "vectors": vectors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("texts", type=Path, help="Parquet file with a text column")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="local model folder or wheel model name")
    parser.add_argument("--max-texts", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="the raw encode loop's batch size")
    parser.add_argument("--synthetic-docs", type=int, default=100_000)
    parser.add_argument("--synthetic-targets", type=int, default=1_000)
    parser.add_argument("--forbid-cpu-only", action="store_true", help=f"hide {', '.join(CPU_ONLY)}")
    args = parser.parse_args()

    if args.forbid_cpu_only:
        for name in CPU_ONLY:
            sys.modules[name] = None  # `import duckdb` now fails as if it were not installed
    files = import_assay()
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    from assay.scorers.betr import rank_documents
    from assay.scorers.embed import EmbeddingScorer

    texts = [t for t in pq.read_table(args.texts, columns=["text"]).column("text").to_pylist() if t]
    texts = texts[: args.max_texts]
    summary: dict = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "imports": files,
        "blocked": list(CPU_ONLY) if args.forbid_cpu_only else [],
        "texts": len(texts),
    }
    for pkg in ("transformers", "sentence_transformers", "pyarrow"):
        summary[pkg] = getattr(importlib.import_module(pkg), "__version__", "?")
    failures = []

    log("cpu: embedding")
    cpu = EmbeddingScorer(model=args.model, device="cpu")
    summary["model"] = {
        "path": str(cpu.model_path),
        "sha256": cpu.identity.sha256,
        "max_tokens": cpu.max_tokens,
    }
    cpu_checks = embedding_checks(cpu, texts, args.repeat, args.batch_size)
    cpu_vectors = cpu_checks.pop("vectors")
    if not cpu_checks["purity_exact"]:
        failures.append("cpu purity")
    log("cpu: BETR top-k vs brute force")
    targets, docs = cpu_vectors[::3], cpu_vectors
    k = min(50, len(docs))
    started = time.perf_counter()
    _, cpu_index = rank_documents(
        targets, (docs[i : i + 37] for i in range(0, len(docs), 37)), k, device="cpu"
    )
    cpu_checks["topk_seconds"] = round(time.perf_counter() - started, 4)
    cpu_checks["topk_equals_brute_force"] = bool(
        np.array_equal(cpu_index, brute_force_topk(targets, docs, k))
    )
    if not cpu_checks["topk_equals_brute_force"]:
        failures.append("cpu top-k")
    summary["cpu"] = cpu_checks

    if not torch.cuda.is_available():
        summary["cuda"] = {
            "available": False,
            "reason": f"torch.cuda.is_available() is False (torch {torch.__version__}, CUDA build {torch.version.cuda})",
        }
    else:
        log("cuda: embedding")
        gpu = EmbeddingScorer(model=args.model, device="cuda")
        gpu_checks = embedding_checks(gpu, texts, args.repeat, args.batch_size)
        gpu_vectors = gpu_checks.pop("vectors").astype(np.float32)
        reference = cpu.embed_texts(texts, as_float16=False)
        cos = (gpu_vectors * reference).sum(axis=1) / np.linalg.norm(gpu_vectors, axis=1)
        gpu_checks.update(
            available=True,
            device_name=torch.cuda.get_device_name(0),
            min_cosine_vs_cpu=float(cos.min()),
            mean_cosine_vs_cpu=float(cos.mean()),
        )
        if cos.min() < MIN_COSINE:
            failures.append(f"cuda vs cpu cosine {cos.min():.5f} < {MIN_COSINE}")
        log("cuda: BETR top-k vs cpu")
        _, gpu_index = rank_documents(
            targets, (docs[i : i + 37] for i in range(0, len(docs), 37)), k, device="cuda"
        )
        gpu_checks["topk_identical_to_cpu"] = bool(np.array_equal(gpu_index, cpu_index))
        rng = np.random.default_rng(0)

        def unit(n: int) -> np.ndarray:
            x = rng.standard_normal((n, cpu_vectors.shape[1]), dtype=np.float32)
            return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)

        syn_t, syn_d = unit(args.synthetic_targets), unit(args.synthetic_docs)
        chunks = [syn_d[i : i + 8192] for i in range(0, len(syn_d), 8192)]
        torch.cuda.synchronize()
        started = time.perf_counter()
        _, syn_gpu = rank_documents(syn_t, chunks, 100, device="cuda")
        torch.cuda.synchronize()
        gpu_checks["topk_synthetic_seconds_cuda"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        _, syn_cpu = rank_documents(syn_t, chunks, 100, device="cpu")
        gpu_checks["topk_synthetic_seconds_cpu"] = round(time.perf_counter() - started, 3)
        gpu_checks["topk_synthetic"] = (
            f"{len(syn_d)} docs x {len(syn_t)} targets, k=100 (random unit vectors)"
        )
        gpu_checks["topk_synthetic_identical_to_cpu"] = bool(np.array_equal(syn_gpu, syn_cpu))
        for key in ("topk_identical_to_cpu", "topk_synthetic_identical_to_cpu"):
            if not gpu_checks[key]:
                failures.append(key)
        summary["cuda"] = gpu_checks
    summary["failures"] = failures
    summary["ok"] = not failures
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
