"""`qurating`: pairwise quality judgments and Bradley–Terry raters (QuRating, Wettig et al. 2024, METHODS.md §5).

    assay train qurating edu --root R --judgments judged.parquet          # judgments from a file
    assay train qurating edu --root R --backend SPEC --pairs 2000 --criteria educational_value
    assay annotate --scorer qurating:edu                                  # qurating_<criterion>

**Judgments.** A judge LM sees two excerpts under one of four criteria (``CRITERIA``: writing
style, required expertise, facts & trivia, educational value) and says ``A`` or ``B``
(``pairwise_prompt``). ``collect_judgments`` asks both orders and reads the judge's probability of
each label (``GenerationBackend.option_probabilities``: the exact distribution the paper estimates
from 20 samples at temperature 1). ``p_ab`` = P(judge picks B | a shown as A, b as B), ``p_ba`` the
same with the order swapped, and the position-debiased label is p = (p_ab + 1 − p_ba) / 2 (§5.2).

A judgments file (Parquet, JSONL or CSV) has one row per pair: ``criterion``; ``text_a``,
``text_b`` (the judged texts) or ``doc_a``, ``doc_b`` (ids of documents of the corpus root, whose
whole text is taken); and ``p`` = P(b is better than a) — the paper's convention, p_AB =
votes_B / (votes_A + votes_B) — or ``p_ab`` and ``p_ba`` of both orders, debiased as above.

**Rater.** Frozen sentence embeddings (all-MiniLM-L6-v2 by default) and one linear head per
criterion, trained with the Bradley–Terry loss BCE(σ(s_b − s_a), p) on the pairs kept by the
confidence filter |p − 0.5| ≥ 0.25 (the paper's ``confidence = 0.5``; §5.3), with an optional
label temperature p ← σ(logit(p)/T). Frozen, not fine-tuned: training takes seconds on a CPU,
is deterministic (seeded mini-batches, numpy float64), and because the head is linear, the
token-weighted mean of chunk scores equals the head applied to the token-weighted mean of chunk
embeddings, so one document embedding per judged text trains exactly what annotation computes.
Features are standardised over the judged texts; the head is folded back onto raw embeddings.
Bradley–Terry fixes scores only up to a constant: the bias makes the judged texts' mean score 0.

**Annotation** (§5.4): a document is tokenised whole and cut into chunks of at most
``chunk_tokens`` = 512 positions (the encoder's special tokens included; at most the encoder's
position embeddings); score = Σ_k n_k s(chunk_k) / Σ_k n_k with n_k the chunk's text tokens.
Each chunk is padded to a width fixed by its own length (``runtime.token_batches``), so a
document's score depends on it alone, bit for bit on CPU. Empty documents get null.

Files: ``ROOT/models/qurating_NAME/rater.safetensors`` (``weight`` (criteria, dim) and ``bias``,
float32) and ``rater.json`` (criteria, encoder and its sha256, settings, data, pairwise accuracy
on training pairs and on held-out pairs: those involving a held-out document, a hashed share of
the judged documents that no training pair contains). The scorer's version hashes both files and carries the
encoder's identity. The compute imports only torch, sentence-transformers, numpy and pyarrow.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import pyarrow as pa

from assay.scorers import runtime

FORMAT = "assay.qurating/1"
DEFAULT_ENCODER = "all-MiniLM-L6-v2"
CHUNK_TOKENS = 512  # QuRating annotates 512-token chunks (METHODS.md §5.4)
CONFIDENCE = 0.25  # keep |p - 0.5| >= 0.25, the paper's confidence = 0.5 (METHODS.md §5.3)
DEFAULT_BATCH_TOKENS = 16_384
PAD_MULTIPLE = 16
OPTIONS = ("A", "B")
CRITERIA: dict[str, str] = {
    "writing_style": "is written in a more polished, elegant and carefully crafted style",
    "required_expertise": "demands more expert knowledge and background to be understood",
    "facts_and_trivia": (
        "holds more facts and trivia; specific facts and little-known details count for more "
        "than widely known things"
    ),
    "educational_value": (
        "is more educational, for instance because it explains ideas clearly, reasons step by step, "
        "or poses questions and answers them"
    ),
}
JUDGMENT_SCHEMA = pa.schema(
    [
        ("doc_a", pa.string()),
        ("doc_b", pa.string()),
        ("text_a", pa.string()),
        ("text_b", pa.string()),
        ("criterion", pa.string()),
        ("p_ab", pa.float64()),
        ("p_ba", pa.float64()),
        ("p", pa.float64()),
        ("judge", pa.string()),
    ]
)
Progress = Callable[[str, int, int], None]


class GenerationBackend(Protocol):
    """What judgment collection needs of a judge LM (``assay.scorers.generation`` provides them)."""

    identity: str

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]: ...

    def option_probabilities(self, prompts: list[str], options: list[str]) -> np.ndarray: ...


def check_criterion(criterion: str) -> str:
    if criterion not in CRITERIA:
        raise ValueError(f"unknown QuRating criterion {criterion!r}; known: {', '.join(CRITERIA)}")
    return criterion


def column_name(criterion: str) -> str:
    return f"qurating_{criterion}"


def pairwise_prompt(criterion: str, text_a: str, text_b: str) -> str:
    """The judge's prompt: which of two excerpts better meets the criterion (METHODS.md §5.1)."""
    ask = CRITERIA[check_criterion(criterion)]
    return (
        f"Below are two excerpts of text. Decide which of the two {ask}.\n"
        "Judge this quality alone: pay no attention to the language of the texts, to their length, "
        "or to which one comes first. The excerpts may begin or end in the middle of a passage; "
        "work out the missing context. Even if the two are much alike, make a relative choice.\n\n"
        f"[Option A]\n{text_a}\n\n[Option B]\n{text_b}\n\n"
        f"Which option {ask}? Answer with a single word: A or B.\n"
    )


def debias(p_ab: np.ndarray, p_ba: np.ndarray) -> np.ndarray:
    """Position-debiased P(b better than a): p̃ = (p_ab + 1 − p_ba) / 2 (METHODS.md §5.2)."""
    return (np.asarray(p_ab, np.float64) + 1.0 - np.asarray(p_ba, np.float64)) / 2.0


def confident(p: np.ndarray, threshold: float = CONFIDENCE) -> np.ndarray:
    """Pairs the rater trains on: |p̃ − 0.5| ≥ threshold (METHODS.md §5.3)."""
    return np.abs(np.asarray(p, np.float64) - 0.5) >= threshold - 1e-12


def collect_judgments(
    backend: GenerationBackend,
    pairs: Sequence[tuple[str, str]],
    criterion: str,
    ids: Sequence[tuple[str | None, str | None]] | None = None,
) -> pa.Table:
    """Judge every pair in both orders; the table keeps p_ab, p_ba and the debiased p."""
    check_criterion(criterion)
    if ids is not None and len(ids) != len(pairs):
        raise ValueError(f"collect_judgments: {len(ids)} id pairs for {len(pairs)} text pairs")
    prompts = [pairwise_prompt(criterion, a, b) for a, b in pairs]
    prompts += [pairwise_prompt(criterion, b, a) for a, b in pairs]
    probs = np.asarray(backend.option_probabilities(prompts, list(OPTIONS)), dtype=np.float64)
    if probs.shape != (len(prompts), len(OPTIONS)):
        raise ValueError(f"judge {backend.identity}: option probabilities of shape {probs.shape}")
    n = len(pairs)
    p_ab, p_ba = probs[:n, 1], probs[n:, 1]
    ids = ids or [(None, None)] * n
    return pa.table(
        {
            "doc_a": [i[0] for i in ids],
            "doc_b": [i[1] for i in ids],
            "text_a": [a for a, _ in pairs],
            "text_b": [b for _, b in pairs],
            "criterion": [criterion] * n,
            "p_ab": p_ab,
            "p_ba": p_ba,
            "p": debias(p_ab, p_ba),
            "judge": [backend.identity] * n,
        },
        schema=JUDGMENT_SCHEMA,
    )


def excerpt(text: str, rng: np.random.Generator, words: int) -> str:
    """``words`` consecutive whitespace-separated words from a random start (all when shorter)."""
    parts = text.split()
    if len(parts) <= words:
        return " ".join(parts)
    start = int(rng.integers(0, len(parts) - words + 1))
    return " ".join(parts[start : start + words])


def sample_pairs(
    root: Path, n_pairs: int, seed: int = 0, max_words: int = 380
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``n_pairs`` random pairs of distinct documents and their excerpts, as judgments are collected
    (METHODS.md §5.2): a pair shares one length, ``max_words`` (≈ 512 Llama tokens) with probability
    0.5, else uniform in [max_words/2, max_words], each excerpt from a random start."""
    ids, texts = corpus_texts(Path(root))
    usable = [i for i, t in enumerate(texts) if t and not t.isspace()]
    if len(usable) < 2:
        raise ValueError(f"{root}: pairs need at least 2 documents with text (found {len(usable)})")
    rng = np.random.default_rng(seed)
    pairs, id_pairs = [], []
    for _ in range(n_pairs):
        i, j = rng.choice(len(usable), size=2, replace=False)
        words = max_words if rng.random() < 0.5 else int(rng.integers(max_words // 2, max_words + 1))
        a, b = usable[int(i)], usable[int(j)]
        pairs.append((excerpt(texts[a], rng, words), excerpt(texts[b], rng, words)))
        id_pairs.append((ids[a], ids[b]))
    return pairs, id_pairs


def corpus_texts(root: Path, wanted: set[str] | None = None) -> tuple[list[str], list[str]]:
    """(ids, texts) of the corpus, in docs-shard order (only ``wanted`` ids when given)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    shards = sorted((root / "docs").glob("part-*.parquet"))
    if not shards:
        raise ValueError(f"{root}: no docs shards; run `assay ingest` first")
    ids: list[str] = []
    texts: list[str] = []
    value_set = pa.array(sorted(wanted), pa.string()) if wanted is not None else None
    for shard in shards:
        for batch in pq.ParquetFile(shard).iter_batches(batch_size=8192, columns=["id", "text"]):
            if value_set is not None:
                batch = batch.filter(pc.is_in(batch.column(0), value_set=value_set))
            ids += batch.column(0).to_pylist()
            texts += batch.column(1).to_pylist()
    return ids, texts


def read_judgments(path: str | Path, root: str | Path | None = None) -> pa.Table:
    """A judgments file (see the module docstring) as a table of ``JUDGMENT_SCHEMA``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such judgments file")
    table = _read_table(path)
    names = set(table.column_names)
    if "criterion" not in names:
        raise ValueError(f"{path}: no criterion column (columns: {', '.join(table.column_names)})")
    n = table.num_rows
    if n == 0:
        raise ValueError(f"{path}: no judgments")
    criteria = [str(c) if c is not None else "" for c in table.column("criterion").to_pylist()]
    for row, c in enumerate(criteria):
        if c not in CRITERIA:
            raise ValueError(f"{path}: row {row + 1}: unknown criterion {c!r}; known: {', '.join(CRITERIA)}")

    def floats(name: str) -> np.ndarray:
        values = np.array([np.nan if v is None else float(v) for v in table.column(name).to_pylist()])
        bad = np.flatnonzero(~((values >= 0) & (values <= 1)))
        if len(bad):
            raise ValueError(f"{path}: row {bad[0] + 1}: {name} must be a probability in [0, 1]")
        return values

    if "p_ab" in names and "p_ba" in names:
        p_ab, p_ba = floats("p_ab"), floats("p_ba")
        p = floats("p") if "p" in names else debias(p_ab, p_ba)
    elif "p" in names:
        p = floats("p")
        p_ab = p_ba = np.full(n, np.nan)
    else:
        raise ValueError(f"{path}: give p = P(b better than a), or p_ab and p_ba of both orders")

    doc_a = _strings(table, "doc_a", n)
    doc_b = _strings(table, "doc_b", n)
    if "text_a" in names and "text_b" in names:
        text_a, text_b = _strings(table, "text_a", n), _strings(table, "text_b", n)
    elif "doc_a" in names and "doc_b" in names:
        if root is None:
            raise ValueError(f"{path}: doc_a/doc_b name documents: a corpus root is needed to read them")
        found = dict(zip(*corpus_texts(Path(root), {*doc_a, *doc_b} - {None})))
        missing = [d for d in (*doc_a, *doc_b) if d not in found]
        if missing:
            raise ValueError(
                f"{path}: document {missing[0]!r} is not in {root} ({len(set(missing))} missing)"
            )
        text_a, text_b = [found[d] for d in doc_a], [found[d] for d in doc_b]
    else:
        raise ValueError(f"{path}: give text_a and text_b, or doc_a and doc_b (ids in the corpus root)")
    for row, (a, b) in enumerate(zip(text_a, text_b)):
        if not a or not b:
            raise ValueError(f"{path}: row {row + 1}: an empty text")
    judge = _strings(table, "judge", n)
    return pa.table(
        [doc_a, doc_b, text_a, text_b, criteria, p_ab, p_ba, p, judge], schema=JUDGMENT_SCHEMA
    ).replace_schema_metadata(None)


def _strings(table: pa.Table, name: str, n: int) -> list[str | None]:
    if name not in table.column_names:
        return [None] * n
    return [None if v is None else str(v) for v in table.column(name).to_pylist()]


def _read_table(path: Path) -> pa.Table:
    suffixes = "".join(path.suffixes[-2:]).lower()
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if path.suffix.lower() == ".csv":
            import pyarrow.csv as pcsv

            return pcsv.read_csv(path)
        if path.suffix.lower() in (".jsonl", ".json") or suffixes.endswith(".jsonl.gz"):
            import pyarrow.json as pjson

            return pjson.read_json(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValueError(f"{path}: cannot read judgments ({str(exc).splitlines()[0]})") from None
    raise ValueError(f"{path}: judgments must be .parquet, .jsonl or .csv")


# --- the encoder: chunked, token-weighted document embeddings (torch + sentence-transformers) -----


@dataclass
class ChunkEncoder:
    """Token-weighted mean of a sentence encoder's embeddings over a document's chunks."""

    model: str = DEFAULT_ENCODER
    chunk_tokens: int = CHUNK_TOKENS
    device: str = "auto"
    dtype: str = "auto"
    batch_tokens: int = DEFAULT_BATCH_TOKENS
    model_path: Path = field(init=False)
    identity: runtime.ModelIdentity = field(init=False, repr=False)
    _model: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.model_path = runtime.resolve_model(self.model)
        self.identity = runtime.model_identity(self.model_path)
        self.device = runtime.resolve_device(self.device)
        self.dtype = runtime.resolve_dtype(self.device, self.dtype)
        if int(self.chunk_tokens) < 8:
            raise ValueError(f"qurating: chunk_tokens must be at least 8 (got {self.chunk_tokens})")

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_model": None}  # a worker loads its own copy

    def load(self) -> Any:
        if self._model is None:
            runtime.offline_loading()
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(self.model_path), device=self.device, local_files_only=True)
            if self.dtype != "float32":
                model.to(runtime.torch_dtype(self.dtype))
            model.eval()
            config = getattr(getattr(model[0], "auto_model", None), "config", None)
            positions = getattr(config, "max_position_embeddings", None)
            if positions:  # a chunk never runs past the encoder's position embeddings
                self.chunk_tokens = min(int(self.chunk_tokens), int(positions))
            self._model = model
        return self._model

    def chunks(self, texts: Sequence[str | None]) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
        """Encoder inputs of every chunk, the document each belongs to, and its text tokens."""
        model = self.load()
        tok = model.tokenizer
        prefix, suffix = _special_tokens(tok)
        room = int(self.chunk_tokens) - len(prefix) - len(suffix)
        rows = [i for i, t in enumerate(texts) if t and not t.isspace()]
        if not rows:
            return [], np.zeros(0, np.int64), np.zeros(0)
        encoded = tok([texts[i] for i in rows], add_special_tokens=False, truncation=False, verbose=False)
        inputs, owner, weight = [], [], []
        for i, ids in zip(rows, encoded["input_ids"]):
            for start in range(0, len(ids), room):
                piece = ids[start : start + room]
                inputs.append(prefix + piece + suffix)
                owner.append(i)
                weight.append(len(piece))
        return inputs, np.asarray(owner, np.int64), np.asarray(weight, np.float64)

    def encode_inputs(self, inputs: list[list[int]]) -> np.ndarray:
        """One embedding (float32) per chunk; each padded to a width set by its own length."""
        import torch

        model = self.load()
        pad_id = model.tokenizer.pad_token_id or 0
        out = np.zeros((len(inputs), model.get_embedding_dimension()), np.float32)
        lengths = [len(x) for x in inputs]
        for rows, width in runtime.token_batches(lengths, self.batch_tokens, None, PAD_MULTIPLE):
            ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                ids[r, : lengths[i]] = torch.as_tensor(inputs[i])
                mask[r, : lengths[i]] = 1
            features = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
            with torch.inference_mode():
                vectors = model({k: v.to(self.device) for k, v in features.items()})["sentence_embedding"]
            out[rows] = vectors.float().cpu().numpy()
        return out

    def documents(self, texts: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """(n, dim) float64 token-weighted mean chunk embeddings, and which rows had text."""
        inputs, owner, weight = self.chunks(texts)
        vectors = self.encode_inputs(inputs).astype(np.float64)
        dim = self.load().get_embedding_dimension()
        sums = np.zeros((len(texts), dim))
        totals = np.zeros(len(texts))
        np.add.at(sums, owner, vectors * weight[:, None])
        np.add.at(totals, owner, weight)
        valid = totals > 0
        sums[valid] /= totals[valid, None]
        return sums, valid


def _special_tokens(tok: Any) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a text ([CLS] and [SEP] for BERT-like encoders)."""
    plain = tok("a", add_special_tokens=False)["input_ids"]
    full = tok("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain) :])
    return [], []


# --- training: Bradley–Terry on frozen embeddings (numpy) ---------------------------------------


@dataclass
class TrainSettings:
    """The rater's training settings (recorded in rater.json)."""

    confidence: float = CONFIDENCE
    label_temperature: float = 1.0
    epochs: int = 100
    lr: float = 0.01
    weight_decay: float = 0.1  # AdamW's decoupled decay, the paper's value (METHODS.md §5.3)
    l2: float = 0.01  # ridge penalty in the loss: a frozen-embedding head sees few texts, it must not overfit
    batch_pairs: int = 512  # the paper's total batch size (METHODS.md §5.3)
    holdout: float = 0.1  # share of judged documents held out (with every pair that involves one)
    seed: int = 0

    def check(self) -> TrainSettings:
        if not 0 <= self.confidence < 0.5:
            raise ValueError(f"qurating: confidence must be in [0, 0.5) (got {self.confidence})")
        if not self.label_temperature > 0:
            raise ValueError(f"qurating: label temperature must be > 0 (got {self.label_temperature})")
        if self.epochs < 1 or self.batch_pairs < 1:
            raise ValueError("qurating: epochs and batch_pairs must be at least 1")
        if not 0 <= self.holdout < 1:
            raise ValueError(f"qurating: holdout must be in [0, 1) (got {self.holdout})")
        return self


def heldout_texts(texts: Sequence[str], share: float, seed: int) -> np.ndarray:
    """Which judged documents are held out: the lowest ``share`` of a keyed hash of each text, so
    the split depends on the documents and the seed, never on the order of the judgments. A pair
    involving a held-out document is never trained on: held-out accuracy is on unseen documents."""
    key = int(seed).to_bytes(8, "little", signed=True)
    keys = np.array(
        [
            int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8, key=key).digest(), "little")
            for t in texts
        ],
        dtype=np.uint64,
    )
    held = np.zeros(len(texts), bool)
    held[np.argsort(keys, kind="stable")[: int(round(len(texts) * share))]] = True
    return held


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def fit_bradley_terry(
    x: np.ndarray, a: np.ndarray, b: np.ndarray, p: np.ndarray, settings: TrainSettings
) -> np.ndarray:
    """Head weights w (dim + 1: bias last, unused by differences) minimising BCE(σ(x_b·w − x_a·w), p).

    AdamW over seeded mini-batches with 10 % warm-up and linear decay (the paper's schedule)."""
    rng = np.random.default_rng(settings.seed)
    d = x.shape[1]
    w = np.zeros(d)
    m, v = np.zeros(d), np.zeros(d)
    n = len(p)
    per_epoch = max(1, math.ceil(n / settings.batch_pairs))
    total = settings.epochs * per_epoch
    warmup = max(1, total // 10)
    step = 0
    for _ in range(settings.epochs):
        order = rng.permutation(n)
        for lo in range(0, n, settings.batch_pairs):
            rows = order[lo : lo + settings.batch_pairs]
            diff = x[b[rows]] - x[a[rows]]
            grad = diff.T @ (_sigmoid(diff @ w) - p[rows]) / len(rows) + settings.l2 * w
            step += 1
            lr = settings.lr * min(step / warmup, max(0.0, (total - step) / max(1, total - warmup)))
            m = 0.9 * m + 0.1 * grad
            v = 0.999 * v + 0.001 * grad * grad
            m_hat, v_hat = m / (1 - 0.9**step), v / (1 - 0.999**step)
            w -= lr * (m_hat / (np.sqrt(v_hat) + 1e-8) + settings.weight_decay * w)
    return w


def pairwise_accuracy(scores: np.ndarray, a: np.ndarray, b: np.ndarray, p: np.ndarray) -> float | None:
    """Share of pairs (p ≠ 0.5) whose score order agrees with the label's side."""
    decided = p != 0.5
    if not decided.any():
        return None
    agree = (scores[b] > scores[a]) == (p > 0.5)
    return float(agree[decided].mean())


def train_rater(
    judgments: pa.Table,
    out_dir: str | Path,
    *,
    encoder: ChunkEncoder | None = None,
    settings: TrainSettings | None = None,
    data: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Fit one head per criterion of ``judgments``; write rater.safetensors and rater.json."""
    from safetensors.numpy import save_file

    from assay.corpora.atomic import atomic_path, write_json_atomic

    settings = (settings or TrainSettings()).check()
    encoder = encoder or ChunkEncoder()
    criteria = [c for c in CRITERIA if c in set(judgments.column("criterion").to_pylist())]
    if not criteria:
        raise ValueError("qurating: no judgments to train on")
    text_a = judgments.column("text_a").to_pylist()
    text_b = judgments.column("text_b").to_pylist()
    texts = sorted(set(text_a) | set(text_b))  # sorted: the embedding matrix never depends on row order
    where = {t: i for i, t in enumerate(texts)}
    if progress:
        progress("embed judged texts", 0, len(texts))
    x, valid = encoder.documents(texts)
    if progress:
        progress("embed judged texts", len(texts), len(texts))
    if not valid.all():
        raise ValueError(f"qurating: a judged text has no tokens: {texts[int(np.argmin(valid))]!r}")
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std == 0] = 1.0
    z = (x - mean) / std  # standardised: one learning rate suits every dimension
    a_all = np.array([where[t] for t in text_a])
    b_all = np.array([where[t] for t in text_b])
    p_all = np.asarray(judgments.column("p").to_numpy(zero_copy_only=False), np.float64)
    crit = np.array(judgments.column("criterion").to_pylist(), dtype=object)
    held = heldout_texts(texts, settings.holdout, settings.seed)
    weights, biases, results = [], [], {}
    for c in criteria:
        rows = np.flatnonzero(crit == c)
        keep = rows[confident(p_all[rows], settings.confidence)]
        if len(keep) < 2:
            raise ValueError(
                f"qurating: {c}: {len(keep)} of {len(rows)} pairs pass the confidence filter "
                f"|p - 0.5| >= {settings.confidence}; collect more pairs or lower --confidence"
            )
        p = p_all[keep]
        if settings.label_temperature != 1.0:
            clipped = np.clip(p, 1e-6, 1 - 1e-6)
            p = _sigmoid(np.log(clipped / (1 - clipped)) / settings.label_temperature)
        a, b = a_all[keep], b_all[keep]
        unseen = held[a] | held[b]
        test, train = np.flatnonzero(unseen), np.flatnonzero(~unseen)
        if len(train) == 0:
            raise ValueError(
                f"qurating: {c}: every confident pair involves a held-out document; "
                "collect more pairs or lower the holdout share"
            )
        w = fit_bradley_terry(z, a[train], b[train], p[train], settings)
        raw_w = w / std
        scores = x @ raw_w
        bias = -float(scores.mean())  # Bradley–Terry leaves the offset free: centre on the judged texts
        weights.append(raw_w)
        biases.append(bias)
        results[c] = {
            "pairs": int(len(rows)),
            "kept": int(len(keep)),
            "train_pairs": int(len(train)),
            "heldout_docs": int(held.sum()),
            "heldout_pairs": int(len(test)),
            "train_accuracy": pairwise_accuracy(scores, a[train], b[train], p[train]),
            "heldout_accuracy": pairwise_accuracy(scores, a[test], b[test], p[test]) if len(test) else None,
        }
        if progress:
            progress(f"train {c}", 1, 1)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "rater.safetensors") as tmp:
        save_file(
            {
                "weight": np.ascontiguousarray(np.stack(weights), np.float32),
                "bias": np.asarray(biases, np.float32),
            },
            str(tmp),
        )
    record = {
        "format": FORMAT,
        "criteria": criteria,
        "columns": [column_name(c) for c in criteria],
        "encoder": {
            "model": encoder.model,
            "sha256": encoder.identity.sha256,
            "chunk_tokens": int(encoder.chunk_tokens),
        },
        "head": "linear on frozen sentence embeddings (token-weighted mean over chunks)",
        "loss": "BCE(sigmoid(s_b - s_a), p), p = P(b better than a), debiased over both orders",
        "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
        "data": data or {},
        "texts": len(texts),
        "results": results,
    }
    write_json_atomic(out_dir / "rater.json", record)
    return record


def rater_dir(root: str | Path, name: str) -> Path:
    from assay.scorers.fasttext_text import sanitise

    if not name or sanitise(name) != name:
        raise ValueError(f"qurating: {name!r} is not a rater name (use lower-case letters, digits and _)")
    return Path(root) / "models" / f"qurating_{name}"


# --- the scorer ----------------------------------------------------------------------------------


@dataclass
class QuRatingScorer:
    """One float32 ``qurating_<criterion>`` column per criterion a rater was trained on."""

    kind: ClassVar[str] = "scorer"
    folder: Path
    device: str = "auto"
    dtype: str = "auto"
    batch_tokens: int = DEFAULT_BATCH_TOKENS
    name: str = field(init=False)
    criteria: list[str] = field(init=False)
    encoder: ChunkEncoder = field(init=False, repr=False)
    weight: np.ndarray = field(init=False, repr=False)
    bias: np.ndarray = field(init=False, repr=False)
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        from safetensors.numpy import load_file

        self.folder = Path(self.folder)
        head, meta = self.folder / "rater.safetensors", self.folder / "rater.json"
        if not head.is_file() or not meta.is_file():
            label = self.folder.name.removeprefix("qurating_")
            raise ValueError(
                f"qurating:{label}: no rater in {self.folder}; train one with "
                f"`assay train qurating {label} --judgments FILE` (or --backend SPEC --pairs N)"
            )
        record = json.loads(meta.read_text())
        if record.get("format") != FORMAT:
            raise ValueError(f"{meta}: not a QuRating rater (format {record.get('format')!r})")
        tensors = load_file(str(head))
        self.weight = tensors["weight"].astype(np.float64)
        self.bias = tensors["bias"].astype(np.float64)
        self.criteria = list(record["criteria"])
        enc = record["encoder"]
        self.encoder = ChunkEncoder(
            enc["model"], int(enc["chunk_tokens"]), self.device, self.dtype, self.batch_tokens
        )
        if self.encoder.identity.sha256 != enc["sha256"]:
            raise ValueError(
                f"{meta}: the rater was trained on encoder {enc['model']} with sha256 {enc['sha256'][:12]}, "
                f"but that model now has {self.encoder.identity.short}; retrain the rater"
            )
        self.device, self.dtype = self.encoder.device, self.encoder.dtype
        h = hashlib.sha256(head.read_bytes() + b"\0" + meta.read_bytes())
        self.digest = h.hexdigest()[:12]
        self.name = self.folder.name

    @property
    def version(self) -> str:
        return f"1-{self.digest}-{self.encoder.identity.short}-{self.dtype}"

    @classmethod
    def from_spec(cls, arg: str | None, root: Path, **settings: Any) -> QuRatingScorer:
        """``qurating:NAME`` (a rater under ROOT/models/) or ``qurating:PATH`` (a rater folder)."""
        if not arg:
            raise ValueError(
                "the qurating scorer needs a rater: --scorer qurating:NAME (`assay train qurating`)"
            )
        from assay.scorers.embed import parse_options

        name, _, rest = arg.partition(":")
        opts = parse_options(rest, ("dtype", "batch_tokens"), "qurating")
        path = Path(name)
        folder = path if ("/" in name or name.startswith(".")) and path.is_dir() else rater_dir(root, name)
        kwargs: dict[str, Any] = {"device": settings.get("device") or "auto"}
        if "dtype" in opts:
            kwargs["dtype"] = opts["dtype"]
        if "batch_tokens" in opts:
            kwargs["batch_tokens"] = int(opts["batch_tokens"])
        return cls(folder, **kwargs)

    def output_schema(self) -> pa.Schema:
        return pa.schema([(column_name(c), pa.float32()) for c in self.criteria])

    def scores(self, texts: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """(n, criteria) float64 scores and which rows had text."""
        x, valid = self.encoder.documents(texts)
        return x @ self.weight.T + self.bias, valid

    def score(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        values, valid = self.scores(batch.column("text").to_pylist())
        columns = [
            pa.array(values[:, k].astype(np.float32), pa.float32(), mask=~valid)
            for k in range(len(self.criteria))
        ]
        return pa.RecordBatch.from_arrays(columns, schema=self.output_schema())
