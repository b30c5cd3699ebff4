"""`assay proxy train`: a ladder of proxy LMs trained on the text of a corpus root or a mixture.

The text is read in Arrow batches (``id, text``) from the root's docs shards, or from
``mixtures/<name>/`` (repeated documents included). Every document gets a keyed 64-bit hash of
its id, u in [0, 1), so each choice below is a function of the document alone:

* held out: u < 2 % (at least the lowest-hash document); no model trains on them. Held-out loss
  is measured on those documents in corpus order, whole ones up to 131,072 tokens (longer ones
  are left out of the measure), each copy counted once;
* trained on: the others, or, when they hold far more text than ``--tokens`` needs, those in a
  hash range sized to about 1.1 x the tokens needed (a uniform sample, not a prefix of the corpus);
* tokenizer text: the first 64 MB (by hash) of the training documents.

Everything lands under ``--out``: ``tokenizer/``, one Hugging Face model folder per size
(``config.json``, ``model.safetensors``, tokenizer files) and ``ladder.json``, all written under
temporary names. Work in progress lives in ``OUT/.work/`` (the request, the token streams,
checkpoints); the same command run again resumes from it, and a finished ladder is left as is.
The compute is in ``assay.scorers.proxy_lm``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from assay.scorers import proxy_lm, runtime

FORMAT = "assay-proxy-ladder/1"
HELDOUT_FRACTION = 0.02
HELDOUT_MAX_TOKENS = 131_072
TOKENIZER_SAMPLE_BYTES = 64_000_000
SAMPLE_MARGIN = 1.1  # train-sample slack over the tokens needed (bytes per token is estimated)
READ_ROWS = 2048
_HASH_KEY = b"assay-proxy/1"


def id_units(ids: list[str]) -> np.ndarray:
    """u in [0, 1) per document id: a keyed blake2b hash, the same on every machine."""
    out = np.empty(len(ids), dtype=np.float64)
    for i, doc_id in enumerate(ids):
        digest = hashlib.blake2b(str(doc_id).encode("utf-8"), digest_size=8, key=_HASH_KEY).digest()
        out[i] = int.from_bytes(digest, "little") / 2.0**64
    return out


def source_info(root: str | Path, mixture: str | None) -> dict:
    """Where the text comes from: root, mixture, documents (rows) and a fingerprint of its shards."""
    from assay.corpora.manifest import load_manifest, require_root
    from assay.corpora.mixture import load_mixture

    root = require_root(root)
    shards = load_mixture(root, mixture)["shards"] if mixture else load_manifest(root)["shards"]
    rows = sum(int(s["rows"]) for s in shards)
    where = f"mixture {mixture!r} of {root}" if mixture else str(root)
    if rows == 0:
        raise ValueError(f"{where} has no documents to train on")
    key = json.dumps([[s["name"], s["rows"], s.get("sha256")] for s in shards])
    return {
        "root": str(root.resolve()),
        "mixture": mixture,
        "documents": rows,
        "fingerprint": hashlib.sha256(key.encode()).hexdigest(),
    }


def read_batches(root: str | Path, mixture: str | None, columns: list[str]) -> Iterator:
    """The corpus (or mixture) rows as Arrow record batches, shard by shard."""
    import pyarrow.parquet as pq

    from assay.corpora.manifest import load_manifest
    from assay.corpora.mixture import mixture_batches

    if mixture:
        yield from mixture_batches(root, mixture, columns, batch_size=READ_ROWS)
        return
    for shard in load_manifest(root)["shards"]:
        yield from pq.ParquetFile(Path(root) / shard["name"]).iter_batches(READ_ROWS, columns=columns)


@dataclass
class Split:
    """Hash ranges: held out below ``heldout``; trained on in [heldout, heldout + span * sample)."""

    heldout: float
    train_bytes: int
    documents: int
    sample: float = 1.0

    def train_hi(self, fraction: float) -> float:
        return self.heldout + (1.0 - self.heldout) * fraction


def plan_split(root: Path, mixture: str | None) -> Split:
    """One pass over ids and text sizes: the held-out threshold and the training text's bytes."""
    import pyarrow.compute as pc

    docs, total, lowest, lowest_bytes, below, below_bytes = 0, 0, 2.0, 0, 0, 0
    for batch in read_batches(root, mixture, ["id", "text"]):
        u = id_units(batch.column(0).to_pylist())
        nbytes = pc.fill_null(pc.binary_length(batch.column(1).cast("binary")), 0).to_numpy()
        docs += len(u)
        total += int(nbytes.sum())
        below += int((u < HELDOUT_FRACTION).sum())
        below_bytes += int(nbytes[u < HELDOUT_FRACTION].sum())
        if len(u) and u.min() < lowest:
            lowest, lowest_bytes = float(u.min()), int(nbytes[u == u.min()].sum())
        elif len(u) and u.min() == lowest:  # another copy of the same document (a mixture)
            lowest_bytes += int(nbytes[u == lowest].sum())
    if below:
        return Split(HELDOUT_FRACTION, total - below_bytes, docs)
    # a small corpus: hold out the lowest-hash document (all its copies)
    return Split(float(np.nextafter(lowest, 1.0)), total - lowest_bytes, docs)


def _texts_in(root: Path, mixture: str | None, lo: float, hi: float, max_bytes: int) -> Iterator[str]:
    """Texts of first copies whose u is in [lo, hi), in corpus order, up to ``max_bytes``."""
    seen = 0
    for batch in read_batches(root, mixture, ["id", "text", *(["copy"] if mixture else [])]):
        u = id_units(batch.column(0).to_pylist())
        keep = (u >= lo) & (u < hi)
        if mixture:
            keep &= batch.column(2).to_numpy(zero_copy_only=False) == 0
        for text in batch.column(1).filter(keep).to_pylist():
            if text:
                yield text
                seen += len(text.encode("utf-8"))
                if seen >= max_bytes:
                    return


def _write_tokens(path: Path, arrays: Iterator[np.ndarray], dtype) -> int:
    from assay.corpora.atomic import atomic_path

    n = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for a in arrays:
            a.astype(dtype).tofile(f)
            n += len(a)
    return n


def tokenize_corpus(root: Path, mixture: str | None, split: Split, encoder, work: Path, progress) -> dict:
    """Training and held-out token streams as flat files under ``work``; returns their counts."""
    dtype = np.uint16 if encoder.vocab_size <= 65_536 else np.uint32
    hi = split.train_hi(split.sample)
    info = {"dtype": np.dtype(dtype).name, "train_documents": 0, "heldout_documents": 0, "heldout_skipped": 0}
    held: list[np.ndarray] = []
    held_ids: set[str] = set()
    held_tokens = held_bytes = 0
    task = progress.task("tokenize", split.documents, "docs")

    def train_arrays() -> Iterator[np.ndarray]:
        nonlocal held_tokens, held_bytes
        done = 0
        for batch in read_batches(root, mixture, ["id", "text"]):
            ids, texts = batch.column(0).to_pylist(), batch.column(1).to_pylist()
            u = id_units(ids)
            chosen = [t or "" for t, x in zip(texts, u) if split.heldout <= x < hi]
            info["train_documents"] += len(chosen)
            yield from encoder.encode(chosen)
            for doc_id, text, x in zip(ids, texts, u):
                if x >= split.heldout or doc_id in held_ids or held_tokens >= HELDOUT_MAX_TOKENS:
                    continue
                held_ids.add(doc_id)
                tokens = encoder.encode([text or ""])[0]
                if len(tokens) > HELDOUT_MAX_TOKENS:
                    info["heldout_skipped"] += 1
                    continue
                held.append(tokens)
                held_tokens += len(tokens)
                held_bytes += len((text or "").encode("utf-8"))
            done += len(ids)
            progress.update(task, done)

    info["train_tokens"] = _write_tokens(work / "train.tokens", train_arrays(), dtype)
    info["heldout_documents"] = len(held)
    info["heldout_tokens"] = _write_tokens(work / "heldout.tokens", iter(held), dtype)
    info["heldout_bytes"] = held_bytes
    info["sample_fraction"] = split.sample
    progress.finish(task)
    return info


@dataclass
class LadderRun:
    """What `train_ladder` did: the ladder.json content and this run's speed per size."""

    ladder: dict
    tokens_per_s: dict[str, float] = field(default_factory=dict)
    resumed_from: dict[str, int] = field(default_factory=dict)
    already_done: bool = False


def _request(sizes, tokens, seed, seq_len, vocab, tokenizer, source) -> dict:
    tok = None
    if tokenizer:
        path = Path(tokenizer)
        if not (path / "tokenizer.json").is_file():
            raise ValueError(
                f"--tokenizer {path}: no tokenizer.json there (a Hugging Face fast tokenizer folder)"
            )
        sha = hashlib.sha256((path / "tokenizer.json").read_bytes()).hexdigest()
        tok = {"path": str(path.resolve()), "sha256": sha}
    return {
        "format": FORMAT,
        "sizes": [name for name, _ in sizes],
        "tokens": tokens,
        "seed": seed,
        "seq_len": seq_len,
        "vocab": None if tokenizer else vocab,
        "tokenizer": tok,
        "mixture": source["mixture"],
        "fingerprint": source["fingerprint"],
    }


def _check_out(out: Path, request: dict) -> str:
    """``new``, ``resume`` or ``done``; another run's folder is an error that says what differs."""
    saved = None
    for path in (out / "ladder.json", out / ".work" / "request.json"):
        if path.is_file():
            saved = json.loads(path.read_text()).get("request", {})
            state = "done" if path.name == "ladder.json" else "resume"
            break
    else:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ValueError(
                f"--out {out} exists and is not a proxy ladder folder; give a new or empty folder"
            )
        return "new"
    if saved != request:
        diff = [f"{k}: {saved.get(k)!r} -> {request[k]!r}" for k in request if saved.get(k) != request[k]]
        raise ValueError(
            f"--out {out} holds a ladder trained with other settings ({'; '.join(diff)[:200]}); "
            "use another --out, or delete it to start over"
        )
    return state


def train_ladder(
    root: str | Path,
    sizes: str | list[tuple[str, int]],
    tokens: int | str,
    out: str | Path,
    *,
    mixture: str | None = None,
    seed: int = 0,
    tokenizer: str | Path | None = None,
    vocab: int = 8192,
    seq_len: int = 256,
    checkpoint_every: int = 100,
    device: str = "auto",
    threads: int | None = None,
    quiet: bool = False,
) -> LadderRun:
    """Train one proxy LM per size on the same tokens and write ``OUT/ladder.json``.

    ``threads``: CPU threads for torch (None: torch's default). A tiny model trains fastest on
    one thread, and bitwise-repeatable CPU runs need the same count each time."""
    from assay.corpora.atomic import sweep_temporaries, write_json_atomic
    from assay.scorers.runtime import resolve_device

    sizes = proxy_lm.parse_sizes(sizes) if isinstance(sizes, str) else sizes
    tokens = proxy_lm.parse_count(tokens, "--tokens") if isinstance(tokens, str) else int(tokens)
    if seq_len < 8:
        raise ValueError(f"--seq-len {seq_len}: use at least 8 tokens")
    if threads is not None and threads < 1:
        raise ValueError(f"--threads {threads}: use at least 1")
    if checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every {checkpoint_every}: use at least 1 step")
    if not tokenizer and vocab < 300:
        raise ValueError(f"--vocab {vocab}: a byte-level BPE needs at least 300 (256 bytes + merges)")
    recipes = {name: proxy_lm.recipe_for(n, proxy_lm.shape_for(n), tokens, seq_len) for name, n in sizes}
    source = source_info(root, mixture)
    request = _request(sizes, tokens, seed, seq_len, vocab, tokenizer, source)
    out = Path(out)
    state = _check_out(out, request)
    if state == "done":
        shutil.rmtree(out / ".work", ignore_errors=True)
        return LadderRun(json.loads((out / "ladder.json").read_text()), already_done=True)
    device = resolve_device(device)
    root, work = Path(root), out / ".work"
    if state == "new":  # the request first: a folder holding only it is still a resumable run
        write_json_atomic(work / "request.json", {"request": request})
    sweep_temporaries(out)
    run = LadderRun({})
    with TrainingProgress(quiet) as progress, runtime.torch_threads(threads):
        encoder, data = _prepare_data(root, mixture, request, tokenizer, vocab, seq_len, out, work, progress)
        train_tokens = np.fromfile(work / "train.tokens", dtype=data["dtype"], count=0)
        if data["train_tokens"]:  # mapped, not read: a large stream stays on disk
            train_tokens = np.memmap(work / "train.tokens", dtype=data["dtype"], mode="r")
        heldout = np.fromfile(work / "heldout.tokens", dtype=data["dtype"])
        results = []
        for name, n in sizes:
            results.append(
                _train_size(
                    name, n, recipes[name], encoder, train_tokens, heldout, data, request, seed,
                    out, device, checkpoint_every, progress, run,
                )
            )  # fmt: skip
    tok_json = out / "tokenizer" / "tokenizer.json"
    ladder = {
        "format": FORMAT,
        "tokenizer": {
            "path": "tokenizer",
            "trained": not tokenizer,
            "from": request["tokenizer"]["path"] if tokenizer else None,
            "vocab_size": encoder.vocab_size,
            "eos_token_id": encoder.eos_id,
            "bos_token_id": encoder.tokenizer.bos_token_id,
            "pad_token_id": encoder.tokenizer.pad_token_id,
            "sha256": hashlib.sha256(tok_json.read_bytes()).hexdigest(),
        },
        "seed": seed,
        "seq_len": seq_len,
        "tokens": tokens,
        "device": device.split(":")[0],
        "precision": "bfloat16-autocast" if proxy_lm.autocast_dtype(device) else "float32",
        "sizes": results,
        "source": source,
        "data": {k: v for k, v in data.items() if k != "dtype"} | {"heldout_fraction": HELDOUT_FRACTION},
        "request": request,
    }
    write_json_atomic(out / "ladder.json", ladder)
    shutil.rmtree(work, ignore_errors=True)
    run.ladder = ladder
    return run


def _prepare_data(root, mixture, request, tokenizer, vocab, seq_len, out, work, progress):
    """The tokenizer (trained or given) in OUT/tokenizer and the token streams (cached in work)."""
    from assay.corpora.atomic import write_json_atomic

    tok_dir = out / "tokenizer"
    data_json = work / "data.json"
    split = None
    if not (tok_dir / "tokenizer.json").is_file() or not data_json.is_file():
        split = plan_split(root, mixture)
        if split.train_bytes == 0:
            raise ValueError(
                f"{root}: every document is held out; training needs at least two documents with text"
            )
    if not (tok_dir / "tokenizer.json").is_file():
        tmp = work / "publish-tokenizer"  # renamed onto OUT/tokenizer when complete
        shutil.rmtree(tmp, ignore_errors=True)
        if tokenizer:
            proxy_lm.load_encoder(tokenizer).tokenizer.save_pretrained(str(tmp))
        else:
            progress.note(f"training a {vocab:,}-token byte-level BPE")
            sample = (
                split.heldout,
                split.train_hi(min(1.0, TOKENIZER_SAMPLE_BYTES / max(1, split.train_bytes))),
            )
            tok = proxy_lm.train_tokenizer(_texts_in(root, mixture, *sample, TOKENIZER_SAMPLE_BYTES), vocab)
            proxy_lm.save_tokenizer(tok, tmp, seq_len)
        os.replace(tmp, tok_dir)
    encoder = proxy_lm.load_encoder(tok_dir)
    if data_json.is_file():
        return encoder, json.loads(data_json.read_text())
    # bytes per token on a slice of training text sizes the sample of documents to tokenize
    probe = list(_texts_in(root, mixture, split.heldout, 1.0, 2_000_000))
    bytes_per_token = sum(len(t.encode("utf-8")) for t in probe) / max(
        1, sum(map(len, encoder.encode(probe)))
    )
    needed = request["tokens"] + 1
    split.sample = min(1.0, SAMPLE_MARGIN * needed * bytes_per_token / split.train_bytes)
    data = tokenize_corpus(root, mixture, split, encoder, work, progress)
    while data["train_tokens"] < needed and split.sample < 1.0:  # the estimate fell short: widen
        split.sample = min(1.0, 2 * split.sample)
        data = tokenize_corpus(root, mixture, split, encoder, work, progress)
    if data["heldout_tokens"] < 2:
        raise ValueError(
            f"{root}: no held-out text to measure loss on (held-out documents are empty or too long)"
        )
    write_json_atomic(data_json, data)
    return encoder, data


def _train_size(
    name, n, recipe, encoder, train_tokens, heldout, data, request, seed, out, device, every, progress, run
) -> dict:
    """Train (or resume, or skip when done) one size; returns its ladder entry."""
    import torch

    from assay.corpora.atomic import write_json_atomic

    work = out / ".work" / name
    result_path = work / "result.json"
    if result_path.is_file() and (out / name / "config.json").is_file():
        return json.loads(result_path.read_text())
    shape = proxy_lm.shape_for(n)
    blocks = proxy_lm.TokenBlocks(train_tokens, recipe.seq_len, recipe.batch_seqs, seed)
    config = proxy_lm.llama_config(
        shape, encoder.vocab_size, recipe.seq_len, encoder.eos_id, encoder.tokenizer.pad_token_id
    )
    model = proxy_lm.build_model(config, seed).to(device)
    optimizer, scheduler = proxy_lm.make_optimizer(model, recipe)
    key = hashlib.sha256(json.dumps([request, name]).encode()).hexdigest()
    ckpt = work / proxy_lm.CHECKPOINT
    start = proxy_lm.load_checkpoint(ckpt, model, optimizer, scheduler, key)
    if start:
        run.resumed_from[name] = start
        progress.note(f"{name}: resuming from step {start:,} of {recipe.steps:,} (checkpoint)")
    task = progress.task(name, recipe.steps, "steps", start=start, tokens_per_step=recipe.batch_tokens)
    started = time.perf_counter()
    last = proxy_lm.train(
        model,
        blocks.batches(start),
        recipe,
        device,
        start_step=start,
        optimizer=optimizer,
        scheduler=scheduler,
        checkpoint=lambda step: proxy_lm.save_checkpoint(ckpt, model, optimizer, scheduler, step, key),
        checkpoint_every=every,
        on_step=lambda done, steps, loss: progress.update(task, done, loss=loss),
    )
    seconds = time.perf_counter() - started
    if recipe.steps > start:
        run.tokens_per_s[name] = (recipe.steps - start) * recipe.batch_tokens / max(seconds, 1e-9)
    total, count = proxy_lm.heldout_loss(model, heldout, recipe.seq_len, device)
    progress.finish(task)
    params, non_embedding = proxy_lm.count_params(model)
    tmp = out / ".work" / f"publish-{name}"  # renamed onto OUT/<name> when complete
    shutil.rmtree(tmp, ignore_errors=True)
    proxy_lm.save_model(model.to("cpu"), out / "tokenizer", tmp)
    shutil.rmtree(out / name, ignore_errors=True)  # a folder a killed run published without its result
    os.replace(tmp, out / name)
    result = {
        "name": name,
        "path": name,
        "target_non_embedding_params": n,
        "params": params,
        "non_embedding_params": non_embedding,
        "tokens": recipe.tokens,
        "steps": recipe.steps,
        "epochs": round(blocks.epochs(recipe.steps), 4),
        "heldout_loss": total / count,
        "heldout_bpb": total / (math.log(2) * data["heldout_bytes"]),
        "heldout_tokens": count,
        "final_train_loss": last,
        "config": {
            "d_model": shape.d_model,
            "n_layers": shape.n_layers,
            "n_heads": shape.n_heads,
            "d_ff": shape.d_ff,
            "vocab_size": encoder.vocab_size,
            **recipe.to_json(),
        },
    }
    write_json_atomic(result_path, result)
    ckpt.unlink(missing_ok=True)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return result


class TrainingProgress:
    """A live rich bar per task on a terminal (rate and loss beside it); elsewhere a plain line
    every ASSAY_PROGRESS_SECONDS (30) and when a task ends. Everything goes to stderr."""

    def __init__(self, quiet: bool = False):
        from rich.console import Console

        self.quiet, self.console = quiet, Console(stderr=True)
        self.every = float(os.environ.get("ASSAY_PROGRESS_SECONDS", "30"))
        self.bar = None
        self.tasks: dict[int, dict] = {}

    def __enter__(self) -> TrainingProgress:
        if not self.quiet and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}  {task.fields[detail]}"),
                TimeRemainingColumn(elapsed_when_finished=True),
                console=self.console,
            )
            self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def note(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, highlight=False)

    def task(self, label: str, total: int, unit: str, start: int = 0, tokens_per_step: int = 0) -> int:
        tid = (
            len(self.tasks)
            if self.bar is None
            else self.bar.add_task(label, total=total, completed=start, unit=unit, detail="")
        )
        now = time.monotonic()
        self.tasks[tid] = dict(
            label=label, total=total, unit=unit, start=start, t0=now, last=now, tps=tokens_per_step, detail=""
        )
        return tid

    def update(self, tid: int, done: int, loss: float | None = None) -> None:
        t = self.tasks[tid]
        t["done"] = done
        elapsed = time.monotonic() - t["t0"]
        parts = []
        if loss is not None:
            parts.append(f"loss {loss:.3f}")
        if t["tps"] and elapsed > 0:
            parts.append(f"{(done - t['start']) * t['tps'] / elapsed:,.0f} tok/s")
        t["detail"] = ", ".join(parts)
        if self.bar is not None:
            self.bar.update(tid, completed=done, detail=t["detail"])
        elif not self.quiet and time.monotonic() - t["last"] >= self.every:
            self._line(t)

    def finish(self, tid: int) -> None:
        t = self.tasks[tid]
        if self.bar is not None:
            self.bar.update(tid, completed=t["total"])
        elif not self.quiet:
            t["done"] = t["total"]
            self._line(t)

    def _line(self, t: dict) -> None:
        t["last"] = time.monotonic()
        elapsed = int(t["last"] - t["t0"])
        detail = f", {t['detail']}" if t["detail"] else ""
        line = f"{t['label']}: {t.get('done', t['start']):,}/{t['total']:,} {t['unit']}{detail}, {elapsed // 60}m{elapsed % 60:02d}s"
        self.console.print(line, highlight=False, soft_wrap=True)
