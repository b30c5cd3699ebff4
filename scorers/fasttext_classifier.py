"""fastText classifiers that the user trains: positive vs negative documents, then P(positive) per doc.

This is the shared machinery behind DCLM-style quality filtering, PreSelect and BETR: each picks its
positive and negative documents differently, then trains the same kind of model.

Training text, one line per document (``classifier_line``): every ``\\n`` becomes a space, and a
word that begins with ``__label__`` loses its two leading underscores (otherwise fastText would
read it as a label in training and drop it when predicting). A line is ``__label__1 <text>`` for a
positive and ``__label__0 <text>`` for a negative. Scoring normalises text the same way, so the
column equals ``model.predict(classifier_line(text), k=2)``'s probability of ``__label__1``.

Order never depends on how documents arrive: each document gets a key (a keyed hash of its line,
keyed by ``seed``); ``balance`` keeps the lowest keys of the larger class, the lowest keys of each
class (``holdout``, 10%) are held out to measure accuracy, and the training lines are shuffled with
``seed``. fastText itself is deterministic at ``thread=1`` (more threads train faster, not repeatably).

``train_classifier`` writes ``MODEL.bin`` and ``MODEL.bin.json``: hyperparameters, the caller's
``metadata`` (for ``assay train fasttext``: the SQL that chose each class), counts, held-out
accuracy and the model's sha256. ``FastTextClassifierScorer``'s version is that sha256's prefix, so a
retrained model is a new version and annotations made with the old one read as stale.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import time
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from assay.corpora.atomic import atomic_path, write_json_atomic
from assay.scorers.fasttext_text import (
    LABEL_PREFIX,
    binding_version,
    file_sha256,
    has_words,
    load_model,
    one_line,
    sanitise,
    texts_of,
)

POSITIVE = f"{LABEL_PREFIX}1"
NEGATIVE = f"{LABEL_PREFIX}0"
SIDECAR_FORMAT = "assay.fasttext_classifier/1"
_LABEL_WORD = re.compile(r"(^|[\s\0])__label__")


def classifier_line(text: str) -> str:
    """A document as one classifier input line (see the module docstring)."""
    line = one_line(text)
    if LABEL_PREFIX in line:
        line = _LABEL_WORD.sub(r"\1label__", line)
    return line


def sidecar_path(model_path: str | Path) -> Path:
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


def p_positive(model: Any, lines: list[str], positive_label: str = POSITIVE) -> np.ndarray:
    """P(positive) for lines already passed through ``classifier_line``, in one fastText call."""
    labels, probs = model.predict(lines, k=len(model.get_labels()))
    out = np.zeros(len(lines), dtype=np.float32)
    for i, (lab, p) in enumerate(zip(labels, probs)):
        if positive_label in lab:  # fastText leaves out labels scoring below log(1e-5): those are 0
            out[i] = p[lab.index(positive_label)]
    # fastText reports exp(log(p + 1e-5)), so a sure document can read 1.00001
    return np.minimum(out, np.float32(1.0))


class _Spool:
    """One class's documents as classifier lines in a temporary file, with an order key per line."""

    def __init__(self, f: BinaryIO, seed: int):
        self.f = f
        self.hash_key = seed.to_bytes(8, "little", signed=True)
        self.offsets = array("Q")  # 8 bytes a document, so millions of documents stay small
        self.keys = array("Q")
        self.pos = 0
        self.read = 0
        self.empty = 0

    def add_all(self, texts: Iterable[str | None]) -> None:
        for text in texts:
            self.read += 1
            if not has_words(text):
                self.empty += 1
                continue
            line = (classifier_line(text) + "\n").encode("utf-8", errors="replace")
            digest = hashlib.blake2b(line, digest_size=8, key=self.hash_key).digest()
            self.keys.append(int.from_bytes(digest, "little"))
            self.offsets.append(self.pos)
            self.f.write(line)
            self.pos += len(line)

    def by_key(self) -> np.ndarray:
        """Line numbers, lowest key first."""
        return np.argsort(np.frombuffer(self.keys, dtype=np.uint64), kind="stable")

    def line(self, i: int) -> bytes:
        self.f.seek(self.offsets[i])
        return self.f.readline()


def train_classifier(
    positive_texts: Iterable[str | None],
    negative_texts: Iterable[str | None],
    *,
    out_path: str | Path,
    lr: float = 0.1,
    epoch: int = 5,
    dim: int = 100,
    word_ngrams: int = 2,
    min_count: int = 1,
    bucket: int | None = None,
    balance: bool = False,
    seed: int = 0,
    thread: int = 1,
    holdout: float = 0.1,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Train a supervised fastText model (``__label__1`` = positive); write it and its sidecar.

    The texts may be any iterables (e.g. streamed from DuckDB): they are written to temporary
    files beside ``out_path``, not held in memory. ``bucket`` is fastText's hash space for word
    n-grams. fastText's own default (2M) makes a ~800 MB model at dim 100 whatever the data;
    ``None`` sizes it from the training data instead (`auto_bucket`). Returns ``out_path``.
    """
    import fasttext

    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".assay-fasttext-") as tmp:
        tmp = Path(tmp)
        with open(tmp / "positive", "w+b") as fp, open(tmp / "negative", "w+b") as fn:
            pos, neg = _Spool(fp, seed), _Spool(fn, seed)
            pos.add_all(positive_texts)
            neg.add_all(negative_texts)
            for label, spool in (("positive", pos), ("negative", neg)):
                if not spool.offsets:
                    raise ValueError(
                        f"no {label} documents with text ({spool.read} read, {spool.empty} empty): "
                        f"check the {label} selection"
                    )
            keep_pos, keep_neg = pos.by_key(), neg.by_key()
            if balance:  # downsample the larger class to the smaller one's size
                n = min(len(keep_pos), len(keep_neg))
                keep_pos, keep_neg = keep_pos[:n], keep_neg[:n]
            test_pos, train_pos = _split(keep_pos, holdout)
            test_neg, train_neg = _split(keep_neg, holdout)

            train_file, heldout_file = tmp / "train.txt", tmp / "heldout.txt"
            is_pos = np.concatenate([np.ones(len(train_pos), bool), np.zeros(len(train_neg), bool)])
            line_no = np.concatenate([train_pos, train_neg])
            with open(train_file, "wb") as f:
                for j in np.random.default_rng(seed).permutation(len(line_no)):
                    _write_line(f, is_pos[j], pos if is_pos[j] else neg, int(line_no[j]))
            with open(heldout_file, "wb") as f:
                for i in test_pos:
                    _write_line(f, True, pos, int(i))
                for i in test_neg:
                    _write_line(f, False, neg, int(i))

        if bucket is None:
            bucket = auto_bucket(train_file.stat().st_size, word_ngrams)
        model = fasttext.train_supervised(
            input=str(train_file),
            lr=lr,
            epoch=epoch,
            dim=dim,
            wordNgrams=word_ngrams,
            minCount=min_count,
            bucket=bucket,
            loss="softmax",
            thread=thread,
            seed=seed,
            verbose=0,
        )
        accuracy = _accuracy(model, heldout_file)
        with atomic_path(out_path) as tmp_model:
            model.save_model(str(tmp_model))

    sidecar = {
        "format": SIDECAR_FORMAT,
        "model_file": out_path.name,
        "sha256": file_sha256(out_path),
        "binding": binding_version(),
        "labels": {"positive": POSITIVE, "negative": NEGATIVE},
        "normalisation": "one line per document: '\\n' -> ' '; a word starting with __label__ loses "
        "its two leading underscores; line = '<label> <text>'",
        "hyperparameters": {
            "lr": lr,
            "epoch": epoch,
            "dim": dim,
            "word_ngrams": word_ngrams,
            "min_count": min_count,
            "bucket": bucket,
            "loss": "softmax",
            "balance": balance,
            "seed": seed,
            "thread": thread,
            "holdout": holdout,
        },
        "data": metadata or {},
        "counts": {
            "positive_read": pos.read,
            "positive_empty": pos.empty,
            "negative_read": neg.read,
            "negative_empty": neg.empty,
            "positive_train": len(train_pos),
            "negative_train": len(train_neg),
            "positive_heldout": len(test_pos),
            "negative_heldout": len(test_neg),
        },
        "heldout_accuracy": accuracy,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_json_atomic(sidecar_path(out_path), sidecar)
    return out_path


def _split(order: np.ndarray, holdout: float) -> tuple[np.ndarray, np.ndarray]:
    """(held out, train): the first ``holdout`` share of a class in key order is held out."""
    n_test = min(int(round(len(order) * holdout)), len(order) - 1)  # fastText must see every class
    return order[:n_test], order[n_test:]


def _write_line(f: BinaryIO, positive: bool, spool: _Spool, i: int) -> None:
    f.write((POSITIVE if positive else NEGATIVE).encode() + b" " + spool.line(i))


def auto_bucket(train_bytes: int, word_ngrams: int) -> int:
    """Hash buckets for the training set's word n-grams: about twice the n-grams it can hold
    (~6 bytes a word), a power of two between 2^12 and fastText's default 2M."""
    ngrams = max(train_bytes // 6, 1) * max(word_ngrams - 1, 1)
    return int(min(2_000_000, max(4096, 1 << int(np.ceil(np.log2(2 * ngrams))))))


def _accuracy(model: Any, heldout_file: Path, batch: int = 4096) -> float | None:
    """Share of held-out lines on the right side of P(positive) = 0.5; None when none were held out."""
    right = total = 0
    with open(heldout_file, encoding="utf-8") as f:
        while part := [line for _, line in zip(range(batch), f)]:
            labels, lines = zip(*(line.rstrip("\n").split(" ", 1) for line in part))
            p = p_positive(model, list(lines))
            right += int(((p >= 0.5) == (np.array(labels) == POSITIVE)).sum())
            total += len(part)
    return right / total if total else None


@dataclass
class FastTextClassifierScorer:
    """P(positive) of a user-trained fastText classifier, one float32 column per document."""

    model_path: Path
    batch_size: int | None = 4096  # documents per fastText call (None: the default)
    positive_label: str = POSITIVE
    name: str = field(init=False)
    version: str = field(init=False)
    column: str = field(init=False)
    _model: Any = field(default=None, init=False, repr=False, compare=False)
    _stat: tuple[int, int] = field(default=(0, 0), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.model_path = Path(self.model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(
                f"{self.model_path}: no such fastText model; train one with "
                "`assay train fasttext --positive ... --negative ... --out MODEL.bin`"
            )
        self.batch_size = 4096 if self.batch_size is None else int(self.batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        stem = sanitise(self.model_path.stem)
        self.name = f"fasttext_{stem}"
        self.column = f"{stem}_p_positive"
        # the file's content is the version: retraining changes it, so old annotations read as stale
        self._stat = self._file_stat()
        self.version = file_sha256(self.model_path)[:12]

    def _file_stat(self) -> tuple[int, int]:
        st = self.model_path.stat()
        return st.st_mtime_ns, st.st_size

    @classmethod
    def from_spec(cls, arg: str | None, root: Path, **settings: Any) -> FastTextClassifierScorer:
        """``--scorer fasttext:MODEL.bin``: the path is taken as given, else under the corpus root."""
        if not arg:
            raise ValueError("the fasttext scorer needs a model: --scorer fasttext:MODEL.bin")
        path = Path(arg)
        if not path.is_absolute() and not path.exists() and (Path(root) / path).exists():
            path = Path(root) / path
        keep = {k: v for k, v in settings.items() if k in ("batch_size", "positive_label")}
        return cls(model_path=path, **keep)

    def __getstate__(self) -> dict:
        # fastText models do not pickle; a worker process loads its own copy on first use
        return {**self.__dict__, "_model": None}

    @property
    def model(self) -> Any:
        if self._model is None:
            model = load_model(self.model_path)
            if self.positive_label not in model.get_labels():
                raise ValueError(
                    f"{self.model_path}: no label {self.positive_label!r} "
                    f"(labels: {', '.join(model.get_labels()[:10])}); pass positive_label=..."
                )
            self._model = model
        return self._model

    def training_record(self) -> dict[str, Any] | None:
        """The sidecar written at training time (hyperparameters, queries, accuracy); None when it
        is absent or describes another file (its sha256 differs from this model's)."""
        path = sidecar_path(self.model_path)
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
        return record if str(record.get("sha256", "")).startswith(self.version) else None

    def output_schema(self) -> pa.Schema:
        return pa.schema([(self.column, pa.float32())])

    def score(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self._file_stat() != self._stat:
            # a retrained file under the same name would be scored under the old version's label
            raise RuntimeError(
                f"{self.model_path} changed after this scorer read it (version {self.version}); "
                "build a new FastTextClassifierScorer"
            )
        texts = texts_of(batch)
        out = np.full(len(texts), np.nan, dtype=np.float32)
        rows = [i for i, t in enumerate(texts) if has_words(t)]
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            lines = [classifier_line(texts[i]) for i in chunk]
            out[chunk] = p_positive(self.model, lines, self.positive_label)
        return pa.RecordBatch.from_arrays(
            [pa.array(out, pa.float32(), mask=np.isnan(out))], schema=self.output_schema()
        )
