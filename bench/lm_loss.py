"""The `lm_loss` scorer vs a raw transformers forward loop over the same windows of the same texts.

    .venv/bin/python bench/lm_loss.py [--model PATH] [--docs 40] [--rounds 3] [--json OUT.json]

Texts: ``real_documents()`` (the 1,027 trafilatura web pages and the dolma Common Crawl heads of
../shared/data), every k-th one so that ``--docs`` of them span the whole length range. Model:
``--model`` (a local causal-LM folder), by default a Llama built from its config in a temporary
folder with seeded random weights (throughput does not depend on the weights): a byte-level BPE of
8,192 tokens trained on the texts, hidden 256, 4 layers, 4 heads, MLP 688, 2,048 positions:
7.4M parameters, the size of the proxies the project trains. Windows are PreSelect's (block
1,900, stride 512; METHODS.md §2.1) unless ``--block`` / ``--stride`` say otherwise.

Both sides start from the same Python list of texts and end with one loss in nats per document.
Assay: ``LMLossScorer.score`` on an Arrow batch (Arrow in and out, bits per byte, Min-K%), as
``assay annotate`` calls it. Raw: Hugging Face's perplexity recipe, one window per forward
(``model(ids).logits``, a float32 log-softmax, the targets no earlier window scored), with the
same tokenizer and the tokenizer's BOS first. Both use one loaded model and take turns every 4
documents (the texts are in length order), so that a shared machine's load hits both alike.
Reported: median scored tokens/s, the median per-round ratio assay / raw (goal >= 0.9), the
largest relative difference of a document's summed loss (goal <= 1e-5; the run fails above it),
and the peak RSS of one fresh process per side. ``--threads 1`` steadies the figures on a busy
machine.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from common import real_documents, run_child  # noqa: E402

BATCH = 2048
CHUNK = 4  # documents per turn: the two sides alternate every few documents


def bench_texts(n: int) -> list[str]:
    """``n`` real documents, every k-th in length order, so that short and long ones are both in."""
    texts = sorted((t for _, t in real_documents() if t.strip()), key=lambda t: (len(t), t))
    step = max(1, len(texts) // n)
    return texts[::step][:n]


def build_model(folder: Path, texts: list[str], vocab: int = 8192) -> Path:
    """A random-init Llama (7.4M parameters) with a byte-level BPE trained on the texts."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>")
    tok.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def assay_losses(scorer, texts: list[str]) -> tuple[list[float], int]:
    """Summed loss in nats per document, from the scorer's own bpb column, and tokens scored."""
    import pyarrow as pa

    nats, tokens = [], 0
    for start in range(0, len(texts), BATCH):
        part = texts[start : start + BATCH]
        out = scorer.score(pa.record_batch({"id": [str(i) for i in range(len(part))], "text": part}))
        bpb = out.column(f"{scorer.name}_bpb").to_pylist()
        tokens += sum(out.column(f"{scorer.name}_tokens").to_pylist())
        nats += [b * len(t.encode()) * math.log(2) for b, t in zip(bpb, part)]
    return nats, tokens


def raw_losses(model, tokenizer, texts: list[str], block: int, stride: int) -> tuple[list[float], int]:
    """Hugging Face's sliding-window perplexity recipe, document by document, window by window."""
    import torch

    nats, tokens = [], 0
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    for text in texts:
        ids = bos + tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        if len(ids) < 2:  # nothing to score (the scorer gives null)
            nats.append(math.nan)
            continue
        total, prev_end = 0.0, 0
        for begin in range(0, len(ids), stride):
            end = min(begin + block + 1, len(ids))
            new = end - max(prev_end, 1)  # targets no earlier window scored; token 0 never is
            x = torch.tensor([ids[begin:end]])
            with torch.inference_mode():
                logp = torch.log_softmax(model(x).logits[0, -new - 1 : -1].float(), dim=-1)
                total -= float(logp.gather(1, x[0, -new:, None]).double().sum())
            tokens += new
            prev_end = end
            if end == len(ids):
                break
        nats.append(total)
    return nats, tokens


def peak_rss(which: str, model: Path, texts_file: Path, block: int, stride: int) -> float:
    code = f"""
import json, sys
sys.path.insert(0, {str(REPO / "bench")!r})
texts = json.load(open({str(texts_file)!r}))
if {which!r} == "assay":
    from assay.scorers.lm_loss import LMLossScorer
    from lm_loss import assay_losses
    assay_losses(LMLossScorer({str(model)!r}, block={block}, stride={stride}, device="cpu"), texts)
else:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from lm_loss import raw_losses
    m = AutoModelForCausalLM.from_pretrained({str(model)!r}, dtype="float32").eval()
    raw_losses(m, AutoTokenizer.from_pretrained({str(model)!r}), texts, {block}, {stride})
print("HWM", [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0])
"""
    # VmHWM, not ru_maxrss: on Linux a child's ru_maxrss starts at its parent's RSS when it forked
    return int(run_child(code, env={"HF_HUB_OFFLINE": "1"})[2].rsplit("HWM", 1)[1].split()[0]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a local causal-LM folder (default: a random-init Llama)")
    parser.add_argument("--docs", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--block", type=int, default=1900)
    parser.add_argument("--stride", type=int, default=512)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS child runs")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from assay.scorers.lm_loss import LMLossScorer

    texts = bench_texts(args.docs)
    with tempfile.TemporaryDirectory() as tmp:
        model_path = args.model or build_model(Path(tmp) / "llama-7m", texts)
        scorer = LMLossScorer(str(model_path), block=args.block, stride=args.stride, device="cpu")
        model, tokenizer = scorer.load_backend().load(), scorer.tokenizer()
        block, stride = scorer.block, scorer.stride
        assay_losses(scorer, texts[-4:])  # warm up both paths
        raw_losses(model, tokenizer, texts[-4:], block, stride)
        rates: dict[str, list[float]] = {"assay": [], "raw": []}
        ratios, diffs = [], []
        for _ in range(args.rounds):
            seconds = {"assay": 0.0, "raw": 0.0}
            ours, ref, n_ours, n_ref = [], [], 0, 0
            for i in range(0, len(texts), CHUNK):  # fine-grained alternation: a busy machine hits both
                part = texts[i : i + CHUNK]
                started = time.perf_counter()
                nats, n = assay_losses(scorer, part)
                seconds["assay"] += time.perf_counter() - started
                ours, n_ours = ours + nats, n_ours + n
                started = time.perf_counter()
                nats, n = raw_losses(model, tokenizer, part, block, stride)
                seconds["raw"] += time.perf_counter() - started
                ref, n_ref = ref + nats, n_ref + n
            assert n_ours == n_ref, (n_ours, n_ref)
            a, r = n_ours / seconds["assay"], n_ref / seconds["raw"]
            rates["assay"].append(a)
            rates["raw"].append(r)
            ratios.append(a / r)
            diffs.append(max(abs(x - y) / abs(y) for x, y in zip(ours, ref)))
            print(f"assay {a:,.0f} tokens/s, raw {r:,.0f} tokens/s, ratio {a / r:.3f}", file=sys.stderr)
        params = sum(p.numel() for p in model.parameters())
        results = {
            "threads": torch.get_num_threads(),
            "model": str(args.model) if args.model else f"random-init Llama, {params / 1e6:.1f}M parameters",
            "block": block,
            "stride": stride,
            "docs": len(texts),
            "chars": sum(map(len, texts)),
            "tokens_scored": n_ours,
            "assay_tokens_s": round(statistics.median(rates["assay"])),
            "raw_tokens_s": round(statistics.median(rates["raw"])),
            "ratio": round(statistics.median(ratios), 3),
            "max_rel_loss_diff": max(diffs),
        }
        if not args.no_rss:
            texts_file = Path(tmp) / "texts.json"
            texts_file.write_text(json.dumps(texts))
            results["peak_rss_mib"] = {
                side: round(peak_rss(side, Path(model_path), texts_file, block, stride))
                for side in ("assay", "raw")
            }

    print(
        "| docs | chars | tokens scored | assay tokens/s | raw loop tokens/s | ratio | max rel. loss diff |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {results['docs']} | {results['chars']:,} | {results['tokens_scored']:,} | {results['assay_tokens_s']:,} "
        f"| {results['raw_tokens_s']:,} | {results['ratio']} | {results['max_rel_loss_diff']:.1e} |"
    )
    print(f"\nmodel: {results['model']}; block {block}, stride {stride}; {results['threads']} threads")
    if "peak_rss_mib" in results:
        rss = results["peak_rss_mib"]
        print(f"peak RSS: assay {rss['assay']} MiB, raw loop {rss['raw']} MiB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if results["max_rel_loss_diff"] > 1e-5:
        sys.exit(f"losses differ by {results['max_rel_loss_diff']:.2e} (> 1e-5)")


if __name__ == "__main__":
    main()
