"""`rater`: a cheap model distilled from an expensive rating column, applied to the whole pool.

    assay train rater edu --root R --target qurating_educational_value --sample 20000 --kind fasttext
    assay annotate --scorer rater:edu            # rater_edu for every document

The target is any numeric annotation column (an LLM rating such as ``dataman_overall``, a
``qurating_*`` score). The rated documents (non-null target) are ordered by a keyed hash of their
id (keyed by ``seed``); ``--sample N`` takes the first N, and the first ``holdout`` share of those
(10 %) is held out to measure agreement.

Two kinds of rater:

* ``fasttext``: the target is quantised into ``levels`` labels ``__label__0`` (lowest) ...: a target
  with at most ``levels`` distinct values (a 1–5 rating) keeps one label per value; a continuous
  one is cut at its quantiles over the training sample (equal-frequency bins). Each label stands
  for the mean target of its training documents, and the score is the expected value of the
  label distribution fastText predicts, Σ_k P(k) v_k (on the target's own scale). Texts become
  lines as for every Assay fastText classifier (``fasttext_classifier.classifier_line``), and
  training is deterministic (``thread=1``, seeded).
* ``embedding``: ridge regression (closed form, float64) on the ``embed`` vectors: read from
  ``annotations/embed`` when that set was made by the same model, else embedded here. Scoring
  embeds each document with the same model and window (the vectors ``embed`` would store).

Agreement on the held-out documents (in ``rater.json`` and printed by ``assay train rater``):
Spearman's rank correlation, and per score level the share of documents whose estimate falls in
their own level (an estimate's level is the bin its value falls in, cut halfway between
neighbouring level values). Files: ``ROOT/models/rater_NAME/`` holds ``rater.bin`` (fastText) or
``rater.safetensors`` (``weight``, ``bias``) and ``rater.json``; the scorer's version hashes them.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

FORMAT = "assay.rater/1"
KINDS = ("fasttext", "embedding")
DEFAULT_LEVELS = 5
_KEY = b"assay-rater/1"


def rater_dir(root: str | Path, name: str) -> Path:
    from assay.scorers.fasttext_text import sanitise

    if not name or sanitise(name) != name:
        raise ValueError(f"rater: {name!r} is not a rater name (use lower-case letters, digits and _)")
    return Path(root) / "models" / f"rater_{name}"


def find_column(root: Path, column: str) -> tuple[str, dict]:
    """The annotation set holding ``column`` and its manifest entry (complete over every shard)."""
    from assay.corpora.manifest import load_manifest, require_root

    manifest = load_manifest(require_root(root))
    holders = [
        (n, e) for n, e in manifest["annotations"].items() if column in e.get("columns", {}).get(n, [])
    ]
    if not holders:
        known = sorted(
            {c for n, e in manifest["annotations"].items() for c in e.get("columns", {}).get(n, [])}
        )
        raise ValueError(
            f"rater: no annotation column {column!r} in {root} (columns: {', '.join(known) or 'none'})"
        )
    if len(holders) > 1:
        raise ValueError(
            f"rater: column {column!r} is in several annotation sets: {', '.join(n for n, _ in holders)}"
        )
    name, entry = holders[0]
    parts = [Path(s["name"]).name for s in manifest["shards"]]
    missing = [p for p in parts if not (root / "annotations" / name / p).is_file()]
    if missing:
        raise ValueError(
            f"rater: annotations/{name} lacks {len(missing)} of {len(parts)} shards; finish annotating"
        )
    return name, {**entry, "parts": parts}


def read_target(root: Path, column: str) -> tuple[list[str], np.ndarray, dict]:
    """(ids, float64 values) of every document with a non-null, finite target; the set's entry."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    name, entry = find_column(root, column)
    ids: list[str] = []
    values: list[np.ndarray] = []
    for part in entry["parts"]:
        table = pq.read_table(root / "annotations" / name / part, columns=["id", column])
        if (
            not pa.types.is_integer(table.schema.field(column).type)
            and not pa.types.is_floating(table.schema.field(column).type)
            and not pa.types.is_boolean(table.schema.field(column).type)
        ):
            raise ValueError(f"rater: target {column!r} is {table.schema.field(column).type}, not a number")
        v = pc.fill_null(pc.cast(table.column(column), pa.float64()), np.nan).to_numpy(zero_copy_only=False)
        ok = np.isfinite(v)
        ids += [i for i, keep in zip(table.column("id").to_pylist(), ok) if keep]
        values.append(v[ok])
    y = np.concatenate(values) if values else np.zeros(0)
    if len(y) < 10:
        raise ValueError(f"rater: only {len(y)} documents have a value of {column!r}; at least 10 are needed")
    return ids, y, {"set": name, "version": entry.get("version")}


def hash_order(ids: list[str], seed: int) -> np.ndarray:
    """Positions of ``ids`` in keyed-hash order: the sample and held-out split never depend on input order."""
    key = _KEY + int(seed).to_bytes(8, "little", signed=True)
    h = np.array(
        [
            int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8, key=key).digest(), "little")
            for i in ids
        ],
        dtype=np.uint64,
    )
    return np.argsort(h, kind="stable")


def quantise(y: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """(bin edges, level values): one level per distinct value when there are few, else quantile bins."""
    distinct = np.unique(y)
    if len(distinct) <= levels:
        edges = (distinct[1:] + distinct[:-1]) / 2
    else:
        edges = np.unique(np.quantile(y, np.arange(1, levels) / levels))
    label = np.searchsorted(edges, y, side="right")
    values = np.array([y[label == k].mean() for k in range(len(edges) + 1)])
    return edges, values


def level_of(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.searchsorted(edges, np.asarray(values, np.float64), side="right")


def agreement(estimate: np.ndarray, y: np.ndarray, level_values: np.ndarray, edges: np.ndarray) -> dict:
    """Spearman's rho and per-level accuracy of estimates against the true target."""
    from scipy.stats import spearmanr

    true = level_of(y, edges)
    # an estimate falls in the level whose value it is nearest to (cut halfway between level values)
    cuts = (level_values[1:] + level_values[:-1]) / 2
    guess = np.searchsorted(cuts, estimate, side="right")
    per_level = []
    for k, v in enumerate(level_values):
        rows = true == k
        acc = float((guess[rows] == k).mean()) if rows.any() else None
        per_level.append({"level": k, "value": float(v), "documents": int(rows.sum()), "accuracy": acc})
    rho = spearmanr(estimate, y).statistic if len(y) > 2 and np.ptp(y) > 0 else float("nan")
    return {
        "documents": int(len(y)),
        "spearman": None if not np.isfinite(rho) else float(rho),
        "level_accuracy": float((guess == true).mean()) if len(y) else None,
        "levels": per_level,
    }


# --- the two kinds ---------------------------------------------------------------------------


def expected_value(model: Any, lines: list[str], level_values: np.ndarray) -> np.ndarray:
    """Σ_k P(k) v_k from one fastText call (labels ``__label__k``), renormalised over the labels it returns."""
    labels, probs = model.predict(lines, k=len(level_values))
    out = np.empty(len(lines), np.float64)
    for i, (lab, p) in enumerate(zip(labels, probs)):
        k = np.array([int(x.rsplit("__", 1)[1]) for x in lab])
        p = np.asarray(p, np.float64)
        out[i] = float((p * level_values[k]).sum() / p.sum())
    return out


def train_fasttext(
    texts: list[str], y: np.ndarray, out: Path, edges: np.ndarray, seed: int, hyper: dict[str, Any]
) -> Any:
    """A multi-class fastText model of the target's level; written to ``out`` atomically."""
    import fasttext

    from assay.corpora.atomic import atomic_path
    from assay.scorers.fasttext_classifier import auto_bucket, classifier_line

    label = level_of(y, edges)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".assay-rater-") as tmp:
        train_file = Path(tmp) / "train.txt"
        with open(train_file, "w", encoding="utf-8") as f:
            for i in np.random.default_rng(seed).permutation(len(texts)):
                f.write(f"__label__{label[i]} {classifier_line(texts[i])}\n")
        bucket = auto_bucket(train_file.stat().st_size, hyper["word_ngrams"])
        model = fasttext.train_supervised(
            input=str(train_file),
            lr=hyper["lr"],
            epoch=hyper["epoch"],
            dim=hyper["dim"],
            wordNgrams=hyper["word_ngrams"],
            minCount=hyper["min_count"],
            bucket=bucket,
            loss="softmax",
            thread=1,  # one thread: the same model on every run
            seed=seed,
            verbose=0,
        )
    with atomic_path(out) as tmp_model:
        model.save_model(str(tmp_model))
    return model


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Ridge regression in float64 (closed form, centred): weights and bias."""
    x = np.asarray(x, np.float64)
    mx, my = x.mean(axis=0), float(y.mean())
    xc = x - mx
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - my))
    return w, my - float(mx @ w)


# --- the scorer ------------------------------------------------------------------------------


@dataclass
class RaterScorer:
    """``rater_NAME``: the distilled rater's estimate of its target (float32; null without text)."""

    kind: ClassVar[str] = "scorer"
    folder: Path
    device: str = "auto"
    batch_size: int | None = None
    name: str = field(init=False)
    version: str = field(init=False)
    record: dict = field(init=False, repr=False)
    _model: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        meta = self.folder / "rater.json"
        label = self.folder.name.removeprefix("rater_")
        if not meta.is_file():
            raise ValueError(
                f"rater:{label}: no rater in {self.folder}; train one with "
                f"`assay train rater {label} --target COLUMN`"
            )
        self.record = json.loads(meta.read_text())
        if self.record.get("format") != FORMAT:
            raise ValueError(f"{meta}: not a distilled rater (format {self.record.get('format')!r})")
        model_file = self.folder / self.record["model_file"]
        h = hashlib.sha256(model_file.read_bytes() + b"\0" + meta.read_bytes())
        self.version = f"1-{h.hexdigest()[:12]}"
        self.name = self.folder.name

    @classmethod
    def from_spec(cls, arg: str | None, root: Path, **settings: Any) -> RaterScorer:
        if not arg:
            raise ValueError("the rater scorer needs a name: --scorer rater:NAME (`assay train rater`)")
        return cls(rater_dir(root, arg), device=settings.get("device") or "auto")

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_model": None}  # a worker loads its own copy

    def output_schema(self) -> pa.Schema:
        return pa.schema([(self.name, pa.float32())])

    def _load(self) -> Any:
        if self._model is None:
            if self.record["kind"] == "fasttext":
                from assay.scorers.fasttext_text import load_model

                self._model = load_model(self.folder / self.record["model_file"])
            else:
                from safetensors.numpy import load_file

                from assay.scorers.embed import EmbeddingScorer

                enc = self.record["encoder"]
                embedder = EmbeddingScorer(
                    model=enc["model"], max_tokens=enc["max_tokens"], device=self.device
                )
                if embedder.identity.sha256 != enc["sha256"]:
                    raise ValueError(
                        f"{self.folder}: trained on {enc['model']} ({enc['sha256'][:12]}), which is now "
                        f"{embedder.identity.short}; retrain the rater"
                    )
                self._model = (embedder, load_file(str(self.folder / self.record["model_file"])))
        return self._model

    def estimate(self, texts: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """float64 estimates and which rows had text."""
        from assay.scorers.fasttext_text import has_words

        ok = np.array([has_words(t) for t in texts], dtype=bool)
        rows = np.flatnonzero(ok)
        out = np.full(len(texts), np.nan)
        if len(rows) == 0:
            return out, ok
        model = self._load()
        if self.record["kind"] == "fasttext":
            from assay.scorers.fasttext_classifier import classifier_line

            values = np.asarray(self.record["level_values"], np.float64)
            out[rows] = expected_value(model, [classifier_line(texts[i]) for i in rows], values)
        else:
            embedder, head = model
            x = embedder.embed_texts([texts[i] for i in rows]).astype(np.float64)
            out[rows] = x @ head["weight"].astype(np.float64) + float(head["bias"][0])
        return out, ok

    def score(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        values, ok = self.estimate(batch.column("text").to_pylist())
        return pa.RecordBatch.from_arrays(
            [pa.array(values.astype(np.float32), pa.float32(), mask=~ok)], schema=self.output_schema()
        )


# --- training ----------------------------------------------------------------------------------


def _embed_vectors(root: Path, ids: list[str], texts: list[str], embedder: Any) -> tuple[np.ndarray, str]:
    """Vectors of ``ids``: from annotations/embed when its model is this one, else embedded now."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from assay.corpora.manifest import load_manifest
    from assay.scorers.embed import vectors_of

    entry = load_manifest(root)["annotations"].get("embed")
    folder = root / "annotations" / "embed"
    if (
        entry
        and str(entry.get("version", "")).startswith(embedder.version.split("-s")[0])
        and folder.is_dir()
    ):
        wanted = pa.array(sorted(set(ids)), pa.string())
        found: dict[str, np.ndarray] = {}
        for part in sorted(folder.glob("part-*.parquet")):
            table = pq.read_table(part, columns=["id", "embedding"])
            table = table.filter(pc.is_in(table.column("id"), value_set=wanted))
            vectors, valid = vectors_of(table.column("embedding"))
            for doc_id, v in zip(np.asarray(table.column("id").to_pylist(), dtype=object)[valid], vectors):
                found[doc_id] = v
        if all(i in found for i in ids):
            return np.stack([found[i] for i in ids]).astype(np.float64), "annotations/embed"
    return embedder.embed_texts(texts).astype(np.float64), "embedded"


def train(
    root: str | Path,
    name: str,
    target: str,
    *,
    kind: str = "fasttext",
    sample: int | None = None,
    levels: int = DEFAULT_LEVELS,
    holdout: float = 0.1,
    seed: int = 0,
    fasttext_settings: dict[str, Any] | None = None,
    alpha: float = 1.0,
    encoder: str = "all-MiniLM-L6-v2",
    device: str = "auto",
) -> dict[str, Any]:
    """Train rater NAME on a sample of the documents rated by ``target``; returns its record."""
    from assay.corpora.atomic import atomic_path, write_json_atomic
    from assay.scorers.qurating import corpus_texts

    root = Path(root)
    if kind not in KINDS:
        raise ValueError(f"rater: kind must be one of {', '.join(KINDS)} (got {kind!r})")
    if levels < 2:
        raise ValueError(f"rater: levels must be at least 2 (got {levels})")
    if not 0 < holdout < 1:
        raise ValueError(f"rater: holdout must be in (0, 1) (got {holdout})")
    if sample is not None and sample < 10:
        raise ValueError(f"rater: --sample must be at least 10 (got {sample})")
    folder = rater_dir(root, name)
    ids, y, source = read_target(root, target)
    order = hash_order(ids, seed)[: sample or len(ids)]
    n_test = max(1, int(round(len(order) * holdout)))
    test, train_rows = order[:n_test], order[n_test:]
    chosen = [ids[i] for i in order]
    found = dict(zip(*corpus_texts(root, set(chosen))))

    def text_of(i: int) -> str:
        return found.get(ids[i]) or ""

    edges, level_values = quantise(y[train_rows], levels)
    folder.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "format": FORMAT,
        "kind": kind,
        "target": {"column": target, **source},
        "sample": {
            "rated": len(ids),
            "sample": len(order),
            "train": len(train_rows),
            "heldout": len(test),
            "seed": seed,
        },
        "levels": {"edges": edges.tolist(), "values": level_values.tolist()},
        "level_values": level_values.tolist(),
    }
    train_texts = [text_of(i) for i in train_rows]
    test_texts = [text_of(i) for i in test]
    if kind == "fasttext":
        hyper = {
            "lr": 0.5,
            "epoch": 25,
            "dim": 64,
            "word_ngrams": 2,
            "min_count": 1,
            **(fasttext_settings or {}),
        }
        model = train_fasttext(train_texts, y[train_rows], folder / "rater.bin", edges, seed, hyper)
        from assay.scorers.fasttext_classifier import classifier_line

        estimate = expected_value(model, [classifier_line(t) for t in test_texts], level_values)
        record |= {"model_file": "rater.bin", "fasttext": hyper}
    else:
        from safetensors.numpy import save_file

        from assay.scorers.embed import EmbeddingScorer

        embedder = EmbeddingScorer(model=encoder, device=device)
        x_train, where = _embed_vectors(root, [ids[i] for i in train_rows], train_texts, embedder)
        w, b = fit_ridge(x_train, y[train_rows], alpha)
        w, b = w.astype(np.float32).astype(np.float64), float(np.float32(b))  # as stored and scored
        x_test, _ = _embed_vectors(root, [ids[i] for i in test], test_texts, embedder)
        estimate = x_test @ w + b
        with atomic_path(folder / "rater.safetensors") as tmp:
            save_file({"weight": w.astype(np.float32), "bias": np.array([b], np.float32)}, str(tmp))
        record |= {
            "model_file": "rater.safetensors",
            "ridge": {"alpha": alpha, "vectors": where},
            "encoder": {
                "model": encoder,
                "sha256": embedder.identity.sha256,
                "max_tokens": embedder.max_tokens,
            },
        }
    record["heldout"] = agreement(estimate, y[test], level_values, edges)
    write_json_atomic(folder / "rater.json", record)
    return record
