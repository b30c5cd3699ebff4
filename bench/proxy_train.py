"""Proxy-LM training: CPU tokens/s and peak RSS per size, and held-out loss by size on real text.

    python bench/proxy_train.py                               # speed 1M,4M,16M; loss ladder 1M,4M,16M at 200K tokens
    python bench/proxy_train.py --speed-sizes 1M --loss-sizes 0.25M,1M --tokens 100K --threads 1

Speed: each size trains in a fresh process (so its peak RSS is its own) on the bundled sample's
speeches, tokenized by a byte-level BPE of --vocab tokens, at --seq-len, with the size's own
learning rate and one warm-up step before timing ``--speed-tokens`` tokens. Batches hold 8
sequences (tokens/s barely depends on it on CPU; the recipe's batch would make a 16M step take
most of a minute). Loss: ``assay proxy train`` itself on a corpus root ingested from
``sample/speeches`` (wall, CPU seconds and peak RSS of the command, then ladder.json's held-out
loss and bits per byte per size).

``cuda_training_speed(texts)`` is the GPU check: 16M-size training tokens/s on CUDA with the
recipe's own batch, importing only torch, transformers and tokenizers (via
``assay.scorers.proxy_lm``), for ``bench/gpu_check.py`` to call.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEECHES = REPO / "sample" / "speeches"


def sample_texts() -> list[str]:
    texts = []
    for path in sorted(SPEECHES.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f]
    return texts


def measure_speed(
    texts: list[str],
    size: str,
    *,
    vocab: int = 8192,
    seq_len: int = 256,
    batch_seqs: int | None = 8,
    tokens: int = 16_384,
    device: str = "cpu",
    warmup_steps: int = 1,
) -> dict:
    """Train ``size`` on ``texts`` for ``tokens`` tokens after ``warmup_steps`` steps; tokens/s.

    ``batch_seqs`` None: the recipe's own batch (and micro-batches) for that size."""
    import numpy as np
    import torch

    from assay.scorers import proxy_lm

    n = proxy_lm.parse_count(size, "size")
    shape = proxy_lm.shape_for(n)
    tok = proxy_lm.train_tokenizer(texts, vocab)
    eos = tok.token_to_id(proxy_lm.EOS)
    stream = np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in tok.encode_batch(texts)])
    full = proxy_lm.recipe_for(n, shape, 10**9, seq_len)
    seqs = batch_seqs or full.batch_seqs
    timed_steps = max(1, tokens // (seqs * seq_len))
    recipe = proxy_lm.Recipe(
        lr=full.lr,
        min_lr=full.min_lr,
        warmup_steps=1,
        steps=warmup_steps + timed_steps,
        batch_seqs=seqs,
        micro_seqs=min(seqs, full.micro_seqs),
        seq_len=seq_len,
    )
    config = proxy_lm.llama_config(shape, tok.get_vocab_size(), seq_len, eos, tok.token_to_id(proxy_lm.PAD))
    model = proxy_lm.build_model(config, seed=0).to(device)
    optimizer, scheduler = proxy_lm.make_optimizer(model, recipe)
    batches = proxy_lm.TokenBlocks(stream, seq_len, seqs, seed=0).batches(0)
    marks: list[float] = []
    losses: list[float] = []

    def on_step(done: int, steps: int, loss: float) -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        marks.append(time.perf_counter())
        losses.append(loss)

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    proxy_lm.train(model, batches, recipe, device, optimizer=optimizer, scheduler=scheduler, on_step=on_step)
    seconds = marks[-1] - marks[warmup_steps - 1]
    _, non_embedding = proxy_lm.count_params(model)
    out = {
        "size": size,
        "non_embedding_params": non_embedding,
        "device": device,
        "precision": "bfloat16-autocast" if proxy_lm.autocast_dtype(device) else "float32",
        "threads": torch.get_num_threads(),
        "seq_len": seq_len,
        "batch_tokens": seqs * seq_len,
        "timed_tokens": timed_steps * seqs * seq_len,
        "tokens_per_s": timed_steps * seqs * seq_len / seconds,
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }
    if device.startswith("cuda"):
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu"] = torch.cuda.get_device_name()
    return out


def cuda_training_speed(texts: list[str], size: str = "16M", steps: int = 10, device: str = "cuda") -> dict:
    """16M-size training tokens/s on CUDA with the recipe's batch (32,768 tokens at seq 256),
    bfloat16 autocast, two warm-up steps; a few hundred real documents are enough text."""
    from assay.scorers import proxy_lm

    n = proxy_lm.parse_count(size, "size")
    batch = proxy_lm.recipe_for(n, proxy_lm.shape_for(n), 10**9, 256).batch_tokens
    result = measure_speed(texts, size, batch_seqs=None, tokens=steps * batch, device=device, warmup_steps=2)
    result["ok"] = bool(result["last_loss"] < result["first_loss"])
    return result


def _speed_in_child(size: str, args) -> dict:
    from common import run_child

    code = (
        "import json, sys, torch\n"
        f"sys.path.insert(0, {str(REPO / 'bench')!r})\n"
        f"torch.set_num_threads({args.threads}) if {args.threads} else None\n"
        "from proxy_train import measure_speed, sample_texts\n"
        f"r = measure_speed(sample_texts(), {size!r}, vocab={args.vocab}, seq_len={args.seq_len}, "
        f"tokens={args.speed_tokens})\n"
        "print(json.dumps(r))\n"
    )
    wall, peak, stdout = run_child(code)
    return {**json.loads(stdout.strip().splitlines()[-1]), "peak_rss_mib": peak, "process_wall_s": wall}


def loss_ladder(args) -> dict:
    from common import run_command

    work = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    assay = str(Path(sys.executable).with_name("assay"))
    run_command([assay, "ingest", str(SPEECHES), "--root", str(work / "root")])
    argv = [
        assay, "proxy", "train", "--root", str(work / "root"), "--sizes", args.loss_sizes,
        "--tokens", args.tokens, "--seq-len", str(args.seq_len), "--vocab", str(args.vocab),
        "--out", str(work / "ladder"), "--quiet",
    ]  # fmt: skip
    if args.threads:
        argv += ["--threads", str(args.threads)]
    run = run_command(argv)
    ladder = json.loads((work / "ladder" / "ladder.json").read_text())
    return {
        "command": " ".join(argv[1:]),
        "wall_s": run["wall_s"],
        "cpu_s": run["cpu_s"],
        "peak_rss_mib": run["peak_rss_mib"],
        "data": ladder["data"],
        "sizes": [
            {
                k: s[k]
                for k in ("name", "non_embedding_params", "tokens", "steps", "heldout_loss", "heldout_bpb")
            }
            | {"batch_tokens": s["config"]["batch_tokens"], "lr": s["config"]["lr"]}
            for s in ladder["sizes"]
        ],
        "out": str(work / "ladder"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed-sizes", default="1M,4M,16M", help="'' to skip the speed runs")
    parser.add_argument("--speed-tokens", type=int, default=16_384)
    parser.add_argument("--loss-sizes", default="1M,4M,16M", help="'' to skip the loss ladder")
    parser.add_argument("--tokens", default="200K", help="training tokens per size of the loss ladder")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "bench"))
    results: dict = {"speed": [], "loss": None}
    for size in filter(None, args.speed_sizes.split(",")):
        r = _speed_in_child(size, args)
        results["speed"].append(r)
        print(
            f"speed {size:>5}: {r['non_embedding_params']:>11,} non-embedding, {r['tokens_per_s']:>8,.0f} tok/s "
            f"({r['threads']} threads, batch {r['batch_tokens']}, seq {r['seq_len']}), peak RSS {r['peak_rss_mib']:,.0f} MiB",
            flush=True,
        )
    if args.loss_sizes:
        r = results["loss"] = loss_ladder(args)
        print(
            f"\nloss ladder: {r['wall_s']:.0f} s wall, {r['cpu_s']:.0f} s CPU, peak RSS {r['peak_rss_mib']:,.0f} MiB; "
            f"held out {r['data']['heldout_documents']} documents / {r['data']['heldout_tokens']:,} tokens"
        )
        for s in r["sizes"]:
            print(
                f"  {s['name']:>5}: {s['non_embedding_params']:>11,} non-embedding, {s['tokens']:,} tokens in "
                f"{s['steps']} steps of {s['batch_tokens']}, lr {s['lr']:.2e}: held-out loss {s['heldout_loss']:.4f} "
                f"nats/token, {s['heldout_bpb']:.4f} bits/byte"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
