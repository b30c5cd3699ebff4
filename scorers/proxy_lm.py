"""Proxy language models: small Llama-style causal LMs that Assay trains itself, and how.

A *ladder* is a few such models trained on the same tokens of one corpus or mixture, for
PreSelect's per-document losses and for forecasting. This module holds the compute: the size
rule, the byte-level BPE tokenizer, the model built from a ``transformers.LlamaConfig``, the
plain-torch training loop over batches of token blocks, held-out loss, and checkpoints.
Reading a corpus root is ``assay.pipelines.proxy``'s job. Only the standard library, numpy and
Assay's atomic writes are imported at module level (torch, transformers and tokenizers inside
the functions), so it runs on the GPU machine's image, which has no duckdb, polars or datatrove.

Sizes count NON-embedding parameters (attention, MLP and norm weights; the tied input/output
embedding is left out, as in Kaplan et al. 2020 §2.1). ``shape_for(N)``:

* depth0 = max(2, round(N^(1/3) / 20)); width = sqrt(N / (12 depth0)), since a layer holds about
  12 d^2 weights (4 d^2 attention + 3 d x 8d/3 SwiGLU MLP). That keeps d/L near 26: inside the
  broad optimum of Kaplan et al. 2020 (Fig. 5: loss moves a few percent for d/L 20-200), on its
  deep side, as MobileLLM (Liu et al. 2024) found best below 1B parameters. On the bundled
  speeches at 300K tokens a 0.2M model of 4 layers x 64 reached 4.92 nats held out, one of
  2 layers x 96 (d/L 48) 5.22;
* head size 16 below width 128, 32 below 512, else 64; d_ff = 8 d_model / 3 rounded up to a
  multiple of 32;
* of the shapes with d_model one of the two multiples of the head size around width and
  depth0 or depth0 + 1 layers, the one whose exact count is nearest N by ratio (the narrower,
  then the shallower, on a tie). Depth never falls by more than one layer as N grows, and the
  count is within 0.81-1.23 x N from 50K to 10B (0.87-1.16 x N from 1M; up to 1.34 x N at 20K).

The ladder sizes it gives (exact counts; the embedding adds vocab x d_model, 8,192 x d by default):

    size  d_model  layers  heads  d_ff  non-embedding
    1M        128       5      4   352      1,004,928
    4M        192       9      6   512      3,984,960
    16M       320      13     10   864     16,116,160

Recipe (per size; ``recipe_for``):

* AdamW, betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on the block matrices only (not on norms
  or the embedding); gradients clipped to norm 1.0;
* peak lr = min(1e-2, 0.5 / d_model): falls as 1/width, as muP prescribes for Adam on hidden
  matrices, and gives GPT-3 Small's 6e-4 at d_model 768 (Brown et al. 2020, Table 2.1);
* linear warmup over max(1, steps / 20) steps, then cosine decay to 10 % of the peak at the end;
* batch = 2^round(log2(8 sqrt(N))) tokens (1M: 8,192; 4M: 16,384; 16M: 32,768) in whole
  sequences, but never more than 1/512 of the token budget and never less than one sequence;
  micro-batches of at most 8,192 tokens accumulate into it. steps = tokens // batch (the last
  partial batch is not trained). Short runs are limited by their steps. On the bundled speeches
  (vocab 2,048, seq 128, 300K tokens; the shallower shapes of d/L near 48 then in use) a 0.2M
  model's held-out loss went 5.75, 5.30, 5.21, 5.14 nats for 73, 292, 585, 1,171 steps (4,096
  down to 256 tokens a batch), a 1M model's 5.87, 5.27, 5.12 and (on another sample of the
  documents) 5.16: hence 1/512. At 292 steps, half or twice the lr was worse for both sizes;
* every size trains on the same tokens: documents packed, each preceded by the EOS token (the
  tokenizer's BOS is the same token, GPT-2 style), into blocks of seq_len + 1 tokens that overlap
  by one (each token is a target once), shuffled with the seed, a new order per epoch;
* float32 on CPU; bfloat16 autocast on CUDA (fp32 weights and optimizer state).

Reproducibility: the model is built right after ``torch.manual_seed(seed)``, the block order is
a function of (seed, epoch), and nothing else draws random numbers, so a CPU run is bitwise
repeatable (same torch build and thread count). A checkpoint holds model, optimizer, scheduler,
RNG state and the step (the data position: batch ``step`` is always the same blocks), so a run
resumed after kill -9 ends with the same weights as one never stopped.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from assay.corpora.atomic import atomic_path

EOS = "<|endoftext|>"  # separates documents; also the tokenizer's BOS (GPT-2 style)
PAD = "<|pad|>"
MIN_SIZE, MAX_SIZE = 10_000, 10_000_000_000
MIN_STEPS = 512  # the batch shrinks so that a short run still takes this many optimizer steps
MICRO_TOKENS = 8192  # tokens per forward/backward pass; larger batches accumulate gradients
BETAS = (0.9, 0.95)
WEIGHT_DECAY = 0.1
GRAD_CLIP = 1.0
MIN_LR_RATIO = 0.1
CHECKPOINT = "checkpoint.pt"
_COUNT = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(?:[eE]([+-]?\d+))?([kKmMbBgG]?)")
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}


def parse_count(text: str, what: str) -> int:
    """``1M``, ``0.05M``, ``250K``, ``2e6`` or ``16000000`` as a whole number."""
    m = _COUNT.fullmatch(str(text).strip())
    if not m:
        raise ValueError(f"{what}: {text!r} is not a number (use e.g. 1M, 0.5M, 250K, 2e6)")
    value = float(m.group(1)) * 10 ** int(m.group(2) or 0) * _UNITS[m.group(3).lower()]
    if value < 1:
        raise ValueError(f"{what}: {text!r} must be at least 1")
    return round(value)


def parse_sizes(text: str) -> list[tuple[str, int]]:
    """``"1M,4M,16M"`` -> ``[("1M", 1_000_000), ...]``: each name is also the model's folder."""
    sizes: list[tuple[str, int]] = []
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        n = parse_count(item, "--sizes")
        if not MIN_SIZE <= n <= MAX_SIZE:
            raise ValueError(
                f"--sizes: {item!r} is outside {MIN_SIZE:,}-{MAX_SIZE:,} non-embedding parameters"
            )
        name = item[:-1] + item[-1].upper() if item[-1].isalpha() else item
        if any(n == other for _, other in sizes):
            raise ValueError(f"--sizes: {item!r} is given twice")
        sizes.append((name, n))
    if not sizes:
        raise ValueError(f"--sizes: no size in {text!r} (use e.g. 1M,4M,16M)")
    return sorted(sizes, key=lambda s: s[1])


@dataclass(frozen=True)
class Shape:
    """Width, depth and heads of one Llama-style model."""

    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int

    @property
    def layer_params(self) -> int:
        # q, k, v, o projections + SwiGLU gate, up, down + two RMSNorm weights
        return 4 * self.d_model**2 + 3 * self.d_model * self.d_ff + 2 * self.d_model

    @property
    def non_embedding_params(self) -> int:
        return self.n_layers * self.layer_params + self.d_model  # + the final norm


def shape_for(n: int) -> Shape:
    """The shape whose non-embedding parameter count is near ``n`` (the rule in the docstring)."""
    depth0 = max(2, round(n ** (1 / 3) / 20))
    width = math.sqrt(n / (12 * depth0))
    head = 16 if width < 128 else 32 if width < 512 else 64
    candidates = []
    for d in sorted({max(head, math.floor(width / head) * head), max(head, math.ceil(width / head) * head)}):
        d_ff = -(-8 * d // 96) * 32  # 8d/3 rounded up to a multiple of 32
        candidates += [Shape(d, layers, d // head, d_ff) for layers in (depth0, depth0 + 1)]
    return min(candidates, key=lambda s: abs(math.log(s.non_embedding_params / n)))  # first on a tie


@dataclass(frozen=True)
class Recipe:
    """How one size trains (the rules in the module docstring)."""

    lr: float
    min_lr: float
    warmup_steps: int
    steps: int
    batch_seqs: int
    micro_seqs: int
    seq_len: int
    betas: tuple[float, float] = BETAS
    weight_decay: float = WEIGHT_DECAY
    grad_clip: float = GRAD_CLIP

    @property
    def batch_tokens(self) -> int:
        return self.batch_seqs * self.seq_len

    @property
    def tokens(self) -> int:
        return self.steps * self.batch_tokens

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "betas": list(self.betas), "batch_tokens": self.batch_tokens}


def recipe_for(n: int, shape: Shape, tokens: int, seq_len: int) -> Recipe:
    if tokens < seq_len:
        raise ValueError(
            f"--tokens {tokens:,} is fewer than one training step (one sequence of --seq-len {seq_len} tokens)"
        )
    wanted = 2 ** round(math.log2(8 * math.sqrt(n)))
    batch_seqs = max(1, min(wanted // seq_len, tokens // (seq_len * MIN_STEPS)))
    steps = tokens // (batch_seqs * seq_len)
    lr = min(1e-2, 0.5 / shape.d_model)
    return Recipe(
        lr=lr,
        min_lr=lr * MIN_LR_RATIO,
        warmup_steps=max(1, steps // 20),
        steps=steps,
        batch_seqs=batch_seqs,
        micro_seqs=max(1, min(batch_seqs, MICRO_TOKENS // seq_len)),
        seq_len=seq_len,
    )


def lr_factor(step: int, recipe: Recipe) -> float:
    """The multiplier of the peak lr at optimizer step ``step`` (0-based)."""
    if step < recipe.warmup_steps:
        return (step + 1) / recipe.warmup_steps
    span = max(1, recipe.steps - 1 - recipe.warmup_steps)
    progress = min(1.0, (step - recipe.warmup_steps) / span)
    return MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------
# tokenizer


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE (``tokenizers``) with EOS and PAD; deterministic for the same texts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if vocab_size < 300:
        raise ValueError(f"--vocab {vocab_size}: a byte-level BPE needs at least 300 (256 bytes + merges)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    eos = tok.token_to_id(EOS)
    # `tokenizer(text)` in transformers then gives exactly the ids a document trains on
    tok.post_processor = processors.TemplateProcessing(single=f"{EOS} $A", special_tokens=[(EOS, eos)])
    return tok


def save_tokenizer(tok, folder: str | os.PathLike, seq_len: int) -> None:
    """tokenizer.json + the files ``AutoTokenizer.from_pretrained`` reads (bos = eos, pad)."""
    import json

    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=PAD, model_max_length=seq_len
    )
    fast.save_pretrained(str(folder))
    # the class name every transformers version (and vLLM) knows, not only 5.x's TokenizersBackend
    config = Path(folder) / "tokenizer_config.json"
    config.write_text(
        json.dumps({**json.loads(config.read_text()), "tokenizer_class": "PreTrainedTokenizerFast"}, indent=2)
        + "\n"
    )


@dataclass
class TextEncoder:
    """Texts -> token ids, each document preceded by the EOS separator."""

    tokenizer: Any  # a transformers fast tokenizer
    eos_id: int

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        backend = self.tokenizer.backend_tokenizer
        encoded = backend.encode_batch(texts, add_special_tokens=False)
        return [np.asarray([self.eos_id, *e.ids], dtype=np.int64) for e in encoded]


def load_encoder(folder: str | os.PathLike) -> TextEncoder:
    """The tokenizer of a folder (``tokenizer.json`` + config, as ``save_tokenizer`` writes)."""
    from assay.scorers.runtime import offline_loading

    offline_loading()
    from transformers import AutoTokenizer

    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        raise ValueError(
            f"--tokenizer {folder}: no tokenizer.json there (a Hugging Face fast tokenizer folder)"
        )
    tok = AutoTokenizer.from_pretrained(str(folder))
    if tok.eos_token_id is None:
        raise ValueError(f"--tokenizer {folder}: the tokenizer has no EOS token to separate documents")
    return TextEncoder(tok, int(tok.eos_token_id))


# ---------------------------------------------------------------------------------------------
# model


def llama_config(shape: Shape, vocab_size: int, seq_len: int, eos_id: int, pad_id: int | None):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=shape.d_model,
        intermediate_size=shape.d_ff,
        num_hidden_layers=shape.n_layers,
        num_attention_heads=shape.n_heads,
        num_key_value_heads=shape.n_heads,
        head_dim=shape.d_model // shape.n_heads,
        max_position_embeddings=seq_len,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        dtype="float32",
    )


def build_model(config, seed: int):
    """A freshly initialised LlamaForCausalLM; the same seed gives the same weights."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def count_params(model) -> tuple[int, int]:
    """(all parameters, non-embedding parameters); a tied embedding counts once."""
    total = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings().weight
    if head is not model.get_input_embeddings().weight:
        embed += head.numel()
    return total, total - embed


def make_optimizer(model, recipe: Recipe):
    import torch

    embed = model.get_input_embeddings().weight
    decay = [p for p in model.parameters() if p.ndim >= 2 and p is not embed]
    other = [p for p in model.parameters() if p.ndim < 2 or p is embed]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": other, "weight_decay": 0.0}],
        lr=recipe.lr,
        betas=recipe.betas,
        eps=1e-8,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, recipe))
    return optimizer, scheduler


def autocast_dtype(device: str):
    """bfloat16 autocast on a CUDA device that has it; None (plain float32) otherwise."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


# ---------------------------------------------------------------------------------------------
# data: batches of token blocks


class TokenBlocks:
    """Training batches from one token stream: blocks of ``seq_len + 1`` tokens overlapping by one,
    in an order drawn from (seed, epoch), so batch ``step`` is always the same blocks."""

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_seqs: int, seed: int):
        self.tokens, self.seq_len, self.batch_seqs, self.seed = tokens, seq_len, batch_seqs, seed
        self.n_blocks = (len(tokens) - 1) // seq_len
        if self.n_blocks < 1:
            raise ValueError(
                f"the training text has {len(tokens):,} tokens, fewer than one block of {seq_len + 1}; "
                "use a larger corpus or a smaller --seq-len"
            )
        self._orders: dict[int, np.ndarray] = {}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n_blocks)}
        return self._orders[epoch]

    def epochs(self, steps: int) -> float:
        return steps * self.batch_seqs / self.n_blocks

    def batch(self, step: int) -> np.ndarray:
        out = np.empty((self.batch_seqs, self.seq_len + 1), dtype=np.int64)
        for j in range(self.batch_seqs):
            epoch, pos = divmod(step * self.batch_seqs + j, self.n_blocks)
            start = int(self._order(epoch)[pos]) * self.seq_len
            out[j] = self.tokens[start : start + self.seq_len + 1]
        return out

    def batches(self, start: int = 0) -> Iterator[np.ndarray]:
        step = start
        while True:
            yield self.batch(step)
            step += 1


# ---------------------------------------------------------------------------------------------
# training and evaluation


def _loss_sum(model, blocks, amp) -> Any:
    """Summed next-token cross-entropy (nats) of a [rows, len + 1] tensor of token blocks."""
    import torch
    import torch.nn.functional as F

    with torch.autocast(blocks.device.type, dtype=amp, enabled=amp is not None):
        logits = model(input_ids=blocks[:, :-1], use_cache=False).logits
    return F.cross_entropy(logits.float().flatten(0, 1), blocks[:, 1:].flatten(), reduction="sum")


def save_checkpoint(path: str | os.PathLike, model, optimizer, scheduler, step: int, key: str) -> None:
    """Everything a resumed run needs, written under a temporary name and renamed."""
    import torch

    state = {
        "key": key,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike, model, optimizer, scheduler, key: str) -> int:
    """Restore a checkpoint; returns its step (0 when there is none, or it is of another run)."""
    import torch

    path = Path(path)
    if not path.is_file():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("key") != key:
        return 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["step"])


StepCallback = Callable[[int, int, float], None]  # (steps done, steps in all, loss of the last batch)


def train(
    model,
    batches: Iterator[np.ndarray],
    recipe: Recipe,
    device: str = "cpu",
    *,
    start_step: int = 0,
    optimizer=None,
    scheduler=None,
    checkpoint: Callable[[int], None] | None = None,
    checkpoint_every: int | None = None,
    on_step: StepCallback | None = None,
) -> float:
    """Run optimizer steps ``start_step .. recipe.steps - 1`` on ``batches`` (the first one is batch
    ``start_step``); returns the last batch's mean loss. ``checkpoint(step)`` is called every
    ``checkpoint_every`` steps."""
    import torch

    if optimizer is None:
        optimizer, scheduler = make_optimizer(model, recipe)
    amp = autocast_dtype(device)
    model.train()
    loss_value = float("nan")
    for step in range(start_step, recipe.steps):
        batch = torch.from_numpy(next(batches)).to(device)
        targets = batch.shape[0] * (batch.shape[1] - 1)
        total = torch.zeros((), device=device)
        for micro in torch.split(batch, recipe.micro_seqs):
            loss = _loss_sum(model, micro, amp) / targets
            loss.backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = float(total)
        done = step + 1
        if (
            checkpoint is not None
            and checkpoint_every
            and done % checkpoint_every == 0
            and done < recipe.steps
        ):
            checkpoint(done)
        if on_step is not None:
            on_step(done, recipe.steps, loss_value)
    model.eval()
    return loss_value


def heldout_loss(
    model, tokens: np.ndarray, seq_len: int, device: str = "cpu", rows: int = 16
) -> tuple[float, int]:
    """(summed nats, tokens predicted) over a token stream: every token but the first is predicted
    once, with up to ``seq_len`` tokens of context (blocks of seq_len + 1 overlapping by one)."""
    import torch

    amp = autocast_dtype(device)
    n = (len(tokens) - 1) // seq_len
    starts = np.arange(n) * seq_len
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, n, rows):
            block = np.stack([tokens[s : s + seq_len + 1] for s in starts[i : i + rows]])
            total += float(_loss_sum(model, torch.from_numpy(block.astype(np.int64)).to(device), amp))
            count += block.shape[0] * seq_len
        tail = tokens[n * seq_len :]
        if len(tail) > 1:  # the last, shorter block runs alone at its own length
            block = torch.from_numpy(tail.astype(np.int64)[None]).to(device)
            total += float(_loss_sum(model, block, amp))
            count += len(tail) - 1
    return total, count


def save_model(model, tokenizer_folder: str | os.PathLike, folder: str | os.PathLike) -> None:
    """``save_pretrained`` (config.json + model.safetensors) plus the tokenizer files."""
    import shutil

    from assay.scorers.runtime import offline_loading

    offline_loading()  # no per-file writing bar: the ladder's progress covers the run
    model.save_pretrained(str(folder), safe_serialization=True)
    for f in sorted(Path(tokenizer_folder).iterdir()):
        if f.is_file():
            shutil.copyfile(f, Path(folder) / f.name)
