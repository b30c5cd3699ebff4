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

``lm_loss`` (``--lm-model PATH``, default a tiny Llama built from its config with seeded random
weights and a BPE trained on the texts; windows of 255 tokens, stride 64, so they slide):

* CPU: the scorer's summed loss per document vs Hugging Face's one-window-per-forward perplexity
  loop (relative difference <= 1e-5); values bit-identical alone or batched.
* CUDA: float32 on the GPU vs the CPU (relative bpb difference <= 1e-4) and bfloat16, the GPU
  default, vs the CPU's float32 (bf16 tolerance: relative bpb difference <= 2e-2 for every document,
  median <= 5e-3: bfloat16 logits carry 8 bits of mantissa, and a document's loss averages their
  rounding over its tokens); share of documents identical alone and batched on the GPU; loss-scoring
  tokens/s (bfloat16, PreSelect windows 1,900 / 512) for Llama-style models built from config
  with random weights on the GPU (``--lm-sizes``: 125m = 134M parameters, 1b = TinyLlama's 1.1B
  shape), against a raw one-window-per-forward loop on part of the same texts.

Ratings (``generation`` + ``dataman``; ``--rating-texts``, default 16): DataMan prompts (template
``dataman``, documents cut to 128 tokens, 32 new tokens) through the transformers generation backend
on a small Llama built from config with random weights (no chat template): ratings/s batched vs one
prompt at a time, and answers identical alone and batched (required on CPU; on CUDA the share is
reported).

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
    names = ("assay.scorers.runtime", "assay.scorers.embed", "assay.scorers.betr", "assay.scorers.lm_loss")
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


# lm_loss: Llama shapes built from config with random weights (throughput does not depend on them)
LLAMA_SIZES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
    "125m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12),
    "1b": dict(
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
    ),
}
LM_TOKENS = {"tiny": 20_000, "125m": 1_000_000, "1b": 250_000}  # tokens scored per throughput run
BF16_MAX, BF16_MEDIAN, FP32_MAX, RAW_MAX = 2e-2, 5e-3, 1e-4, 1e-5


def build_llama(folder: Path, texts: list[str], size: str, device: str = "cpu", **config) -> Path:
    """A Llama of ``size`` with seeded random weights and a byte-level BPE trained on the texts."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=4096, special_tokens=["<s>", "</s>"], initial_alphabet=alphabet, show_progress=False
    )
    bpe.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>")
    tok.save_pretrained(folder)
    shape = {"vocab_size": len(tok), "max_position_embeddings": 2048, **LLAMA_SIZES[size], **config}
    cfg = LlamaConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **shape)
    torch.manual_seed(0)
    with torch.device(device):  # a 1B model is built on the GPU, not in CPU memory
        model = LlamaForCausalLM(cfg)
    if device != "cpu":
        model = model.to(torch.bfloat16)
    model.save_pretrained(folder)
    return folder


def raw_window_losses(
    model, tokenizer, texts: list[str], block: int, stride: int, device: str
) -> list[float]:
    """Hugging Face's sliding-window perplexity recipe: one window per forward, nats per document."""
    import torch

    out = []
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    for text in texts:
        ids = bos + tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        total, prev_end = 0.0, 0
        for begin in range(0, len(ids), stride):
            end = min(begin + block + 1, len(ids))
            new = end - max(prev_end, 1)
            x = torch.tensor([ids[begin:end]], device=device)
            with torch.inference_mode():
                logp = torch.log_softmax(model(x).logits[0, -new - 1 : -1].float(), dim=-1)
                total -= float(logp.gather(1, x[0, -new:, None]).double().sum())
            prev_end = end
            if end == len(ids):
                break
        out.append(total)
    return out


def lm_values(scorer, texts: list[str]):
    """bpb and tokens per text from ``score`` on one Arrow batch, as ``assay annotate`` calls it."""
    import numpy as np
    import pyarrow as pa

    out = scorer.score(pa.record_batch({"id": [str(i) for i in range(len(texts))], "text": texts}))
    bpb = np.array(out.column(f"{scorer.name}_bpb").to_pylist(), dtype=np.float64)
    return bpb, np.array(out.column(f"{scorer.name}_tokens").to_pylist(), dtype=np.int64)


def lm_throughput(size: str, texts: list[str], work: Path, device: str) -> dict:
    """Scored tokens/s of the scorer (PreSelect windows) on a random Llama of ``size``, and of a raw loop."""
    import math

    import torch

    from assay.scorers.lm_loss import LMLossScorer

    started = time.perf_counter()
    folder = build_llama(work / f"llama-{size}", texts, size, device=device, vocab_size=32_000)
    scorer = LMLossScorer(str(folder), device=device)
    model, tokenizer = scorer.load_backend().load(), scorer.tokenizer()
    params = sum(p.numel() for p in model.parameters())
    build_s = time.perf_counter() - started
    per_text = [max(1, len(ids) - 1) for ids in scorer.token_ids(texts)]
    reps = max(1, math.ceil(LM_TOKENS[size] / sum(per_text)))
    corpus = texts * reps
    lm_values(scorer, texts[:16])  # warm up
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    started = time.perf_counter()
    tokens = 0
    for i in range(0, len(corpus), 2048):
        tokens += int(lm_values(scorer, corpus[i : i + 2048])[1].sum())
    sync()
    seconds = time.perf_counter() - started
    few, budget = [], max(1, tokens // 10)  # the raw loop on about a tenth of the tokens
    for text, n in zip(corpus, per_text * reps):
        few.append(text)
        budget -= n
        if budget <= 0:
            break
    sync()
    started = time.perf_counter()
    raw_window_losses(model, tokenizer, few, scorer.block, scorer.stride, device)
    sync()
    raw_s = time.perf_counter() - started
    raw_tokens = sum(per_text[i % len(texts)] for i in range(len(few)))
    return {
        "parameters": params,
        "dtype": scorer.dtype,
        "block": scorer.block,
        "stride": scorer.stride,
        "batch_tokens": scorer.batch_tokens,
        "tokens_scored": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds),
        "raw_loop_tokens_per_s": round(raw_tokens / raw_s),
        "build_and_load_seconds": round(build_s, 1),
    }


def lm_loss_checks(args, texts: list[str], failures: list[str]) -> dict:
    """The lm_loss part: CPU vs a raw loop and purity; on CUDA, precision vs CPU and tokens/s."""
    import tempfile

    import numpy as np
    import torch

    from assay.scorers.lm_loss import LMLossScorer

    long_texts, texts = texts, [t[:4000] for t in texts[: args.lm_texts]]
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = args.lm_model or build_llama(work / "llama-tiny", texts, "tiny", max_position_embeddings=256)
        log("cpu: lm_loss")
        cpu = LMLossScorer(str(folder), device="cpu", block=255, stride=64)
        cpu_bpb, cpu_tokens = lm_values(cpu, texts)
        bits = np.array([len(t.encode()) for t in texts]) * np.log(2)  # bpb x this = nats
        raw = np.array(
            raw_window_losses(cpu.load_backend().load(), cpu.tokenizer(), texts, cpu.block, cpu.stride, "cpu")
        )
        ok = cpu_tokens > 0
        raw_diff = float(np.max(np.abs(cpu_bpb[ok] * bits[ok] - raw[ok]) / np.abs(raw[ok])))
        few = min(len(texts), 16)
        alone = np.array([lm_values(cpu, [t])[0][0] for t in texts[:few]])
        out["model"] = {"path": str(folder), "sha256": cpu.identity.sha256, "version": cpu.version}
        out["cpu"] = {
            "texts": len(texts),
            "tokens_scored": int(cpu_tokens.sum()),
            "max_rel_diff_vs_raw_loop": raw_diff,
            "purity_exact": bool(np.array_equal(alone, cpu_bpb[:few], equal_nan=True)),
        }
        if raw_diff > RAW_MAX:
            failures.append(f"lm_loss cpu vs raw loop {raw_diff:.2e} > {RAW_MAX}")
        if not out["cpu"]["purity_exact"]:
            failures.append("lm_loss cpu purity")
        if not torch.cuda.is_available():
            out["cuda"] = {"available": False, "reason": "torch.cuda.is_available() is False"}
            return out
        log("cuda: lm_loss precision")
        gpu: dict = {"available": True}
        for dtype, limit in (("float32", FP32_MAX), ("bfloat16", BF16_MAX)):
            scorer = LMLossScorer(str(folder), device="cuda", dtype=dtype, block=255, stride=64)
            bpb, tokens = lm_values(scorer, texts)
            rel = np.abs(bpb[ok] - cpu_bpb[ok]) / cpu_bpb[ok]
            alone = np.array([lm_values(scorer, [t])[0][0] for t in texts[:few]])
            gpu[dtype] = {
                "tokens_equal_cpu": bool(np.array_equal(tokens, cpu_tokens)),
                "max_rel_bpb_diff_vs_cpu": float(rel.max()),
                "median_rel_bpb_diff_vs_cpu": float(np.median(rel)),
                "purity_rows_equal": round(float((alone == bpb[:few]).mean()), 4),
            }
            if rel.max() > limit or (dtype == "bfloat16" and np.median(rel) > BF16_MEDIAN):
                failures.append(
                    f"lm_loss cuda {dtype} vs cpu: max {rel.max():.2e}, median {np.median(rel):.2e}"
                )
        gpu["tolerance"] = (
            f"relative bpb vs CPU float32: float32 <= {FP32_MAX}; bfloat16 <= {BF16_MAX} each, "
            f"median <= {BF16_MEDIAN}"
        )
        for size in [s for s in args.lm_sizes.split(",") if s]:
            log(f"cuda: lm_loss throughput, {size}")
            gpu[f"throughput_{size}"] = lm_throughput(size, long_texts, work, "cuda")
        out["cuda"] = gpu
    return out


def rating_checks(args, texts: list[str], failures: list[str]) -> dict:
    """Generation backend: DataMan ratings/s batched vs one at a time; answers alone == batched."""
    import tempfile

    from assay.scorers.dataman import DataManScorer
    from assay.scorers.generation import TransformersBackend

    texts = texts[: args.rating_texts]
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_llama(Path(tmp) / "rater", texts, "tiny", max_position_embeddings=1024)
        devices = ["cpu"] + (["cuda"] if importlib.import_module("torch").cuda.is_available() else [])
        for device in devices:
            log(f"{device}: ratings")
            backend = TransformersBackend(folder, device=device)
            scorer = DataManScorer(model=str(folder), template="dataman", max_length=128, device=device)
            prompts = scorer.prompts(texts)
            backend.generate(prompts[:2], 4)  # warm-up
            batched_s, batched = timed(lambda b=backend, ps=prompts: b.generate(ps, 32), 1)
            alone_s, alone = timed(lambda b=backend, ps=prompts: [b.generate([p], 32)[0] for p in ps], 1)
            same = sum(a == b for a, b in zip(alone, batched)) / len(prompts)
            out[device] = {
                "prompts": len(prompts),
                "ratings_per_s_batched": round(len(prompts) / batched_s, 2),
                "ratings_per_s_one_at_a_time": round(len(prompts) / alone_s, 2),
                "speedup": round(alone_s / batched_s, 2),
                "answers_equal_alone_and_batched": round(same, 4),
            }
            if device == "cpu" and same < 1:
                failures.append(f"ratings cpu: {same:.2%} of answers equal alone and batched")
        if "cuda" not in out:
            out["cuda"] = {"available": False, "reason": "torch.cuda.is_available() is False"}
    return out


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
    parser.add_argument("--lm-model", type=Path, help="lm_loss: a causal-LM folder (default: a tiny Llama)")
    parser.add_argument("--lm-texts", type=int, default=64, help="lm_loss: texts for the precision checks")
    parser.add_argument("--rating-texts", type=int, default=16, help="ratings: prompts per check")
    parser.add_argument("--lm-sizes", default="125m,1b", help=f"lm_loss on CUDA: of {', '.join(LLAMA_SIZES)}")
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
    summary["lm_loss"] = lm_loss_checks(args, texts, failures)
    summary["ratings"] = rating_checks(args, texts, failures)
    summary["failures"] = failures
    summary["ok"] = not failures
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
