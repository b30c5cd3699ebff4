"""`preselect`: PreSelect's predictive strength and its fastText classifier (Shum et al. 2025,
arXiv 2503.00808; METHODS.md §2).

    assay annotate --scorer lm_loss:...                    # per-document bpc of N proxy LMs: lm_a, lm_b, ...
    assay train preselect web --models lm_a,lm_b,lm_c --capability 30.1,31.4,33.0
    assay annotate --scorer preselect:web                  # P(positive) for every document
    assay select --recipe preselect.yaml --name web10      # top 10 % of characters by preselect_web

**Predictive strength** (§2.2). Models are ordered by capability (downstream benchmark average),
weakest first, and C_i is model i's bits per character on document d:
``S(d) = sum_{i<j} 1{C_i > C_j} / (N(N-1)/2)``, the share of model pairs whose losses keep the
capability order (the stronger model compresses d better). Within one document every model sees
the same characters, so ordering by bpc equals ordering by total loss, as the reference does.

* A tied loss pair counts 0: not concordant, as the reference's strict ``>``.
* Two models with the same capability are an error: their pair has no expected order, and
  dropping it would change Z for everyone; give distinct values (or leave one model out).
* A document missing any model's loss (null or NaN) gets a null S.

**Labels** (§2.3): positives are the documents with S = 1; negatives are as many of the
lowest-S documents, ties broken by a keyed hash of the id (``embed.id_hashes``), so the choice
never depends on the order documents arrive in. Fewer than ``MIN_PER_CLASS`` in a class is an error.
The classifier is trained by ``fasttext_classifier.train_classifier`` with PreSelect's
hyperparameters (§2.4: lr 0.1, 3 epochs, word bigrams, dim 100, minCount 1) and ``balance``, so
the classes stay equal when there are fewer low-S documents than positives.

Files and columns (NAME sanitised):

``models/preselect_NAME.strength.json``
    the models (annotation sets) in capability order, their values and loss columns.
``annotations/preselect_NAME_s/`` (``--scorer preselect:NAME:strength``)
    ``preselect_NAME_s`` (float64): S per document, a pure function of that document's losses
    and the ordering (the version hashes the ordering and the loss sets' versions). It is an
    annotation set so that S reads in SQL beside every other column: how many documents are
    perfect, which sources they come from, how S relates to other quality signals.
``models/preselect_NAME.bin`` (+ ``.bin.json``, the trainer's sidecar with the models, the
    capability order, label counts and held-out accuracy).
``annotations/preselect_NAME/`` (``--scorer preselect:NAME``)
    ``preselect_NAME`` (float32): the classifier's P(positive) for every document with text; the
    version is the model file's sha256 prefix, so retraining marks old scores stale.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from assay.corpora.atomic import write_json_atomic
from assay.scorers.fasttext_classifier import FastTextClassifierScorer

FORMAT = "assay.preselect/1"
STRENGTH_VERSION = "1"
# PreSelect's fastText settings (Shum et al. 2025, train_fasttext.py; METHODS.md §2.4); the rest are
# fastText defaults. The n-gram hash space is sized from the data (fasttext_classifier.auto_bucket).
PRESELECT_FASTTEXT = {"lr": 0.1, "epoch": 3, "dim": 100, "word_ngrams": 2, "min_count": 1}
MIN_PER_CLASS = 10


# --- the score ---------------------------------------------------------------------------------


def predictive_strength(losses: np.ndarray, capability: np.ndarray) -> np.ndarray:
    """S per document (float64 in [0, 1], NaN where a loss is missing) from a (docs, models)
    loss matrix and one capability value per model, in any order (see the module docstring)."""
    losses = np.asarray(losses, dtype=np.float64)
    capability = np.asarray(capability, dtype=np.float64)
    if losses.ndim != 2:
        raise ValueError(f"losses must be a (documents, models) matrix, got shape {losses.shape}")
    n_models = losses.shape[1]
    if capability.shape != (n_models,):
        raise ValueError(f"{n_models} models in the losses but {capability.size} capability values")
    if n_models < 2:
        raise ValueError(f"predictive strength compares models: give at least 2, got {n_models}")
    if not np.isfinite(capability).all():
        raise ValueError(f"capability values must be finite numbers, got {capability.tolist()}")
    order = np.argsort(capability, kind="stable")
    ranked = capability[order]
    same = np.flatnonzero(ranked[1:] == ranked[:-1])
    if same.size:
        i, j = sorted((int(order[same[0]]), int(order[same[0] + 1])))
        raise ValueError(
            f"models {i} and {j} have the same capability {ranked[same[0]]:g}: their pair has no "
            "expected order; give distinct values or leave one out"
        )
    ordered = losses[:, order]
    weak, strong = np.triu_indices(n_models, k=1)  # every pair, the weaker model first
    concordant = (ordered[:, weak] > ordered[:, strong]).sum(axis=1)
    s = concordant / len(weak)
    s[np.isnan(ordered).any(axis=1)] = np.nan
    return s


# --- names and files ---------------------------------------------------------------------------


def label_of(name: str) -> str:
    """NAME as it appears in files and columns (lower-case [a-z0-9_])."""
    from assay.scorers.fasttext_text import sanitise

    label = sanitise(name)
    if label.endswith("_s"):
        # preselect_<x>_s is the strength set of x: a classifier named "x_s" would share its folder
        raise ValueError(f"preselect name {name!r}: a name may not end in '_s' (that names a strength set)")
    return label


def model_path(root: str | Path, name: str) -> Path:
    return Path(root) / "models" / f"preselect_{label_of(name)}.bin"


def strength_path(root: str | Path, name: str) -> Path:
    return Path(root) / "models" / f"preselect_{label_of(name)}.strength.json"


def strength_set(name: str) -> str:
    """The annotation set (and column) holding S."""
    return f"preselect_{label_of(name)}_s"


def set_for_run(run: str) -> str:
    """The lm_loss annotation set of a proxy run (a model folder's name): ``1M`` -> ``lm_1m``,
    named exactly as ``lm_loss`` names the set of that folder."""
    from assay.scorers.lm_loss import default_name

    return f"lm_{default_name(run)}"


def loss_sets(root: str | Path, sets: Sequence[str], name: str) -> dict[str, dict[str, str]]:
    """Per loss set: its bpc column and version, checked to cover every docs shard."""
    from assay.corpora.manifest import load_manifest, require_root

    manifest = load_manifest(require_root(root))
    parts = [Path(s["name"]).name for s in manifest["shards"]]
    out = {}
    for set_name in sets:
        entry = manifest["annotations"].get(set_name)
        if entry is None or entry.get("kind") == "extractor":
            known = sorted(k for k, v in manifest["annotations"].items() if v.get("kind") != "extractor")
            raise ValueError(
                f"preselect {name}: no annotation set {set_name!r} in {root} (sets: {', '.join(known) or 'none'}); "
                "write per-document losses first with `assay annotate --scorer lm_loss:...`"
            )
        columns = entry["columns"].get(set_name, [])
        bpc = [c for c in columns if c.endswith("_bpc")]
        column = f"{set_name}_bpc" if f"{set_name}_bpc" in columns else (bpc[0] if len(bpc) == 1 else None)
        if column is None:
            raise ValueError(
                f"preselect {name}: annotation set {set_name!r} has no bits-per-character column "
                f"{set_name}_bpc (columns: {', '.join(c for c in columns if c != 'id')})"
            )
        done = [p for p in parts if p in entry["shards"]]
        if len(done) < len(parts):
            raise ValueError(
                f"preselect {name}: annotations/{set_name} covers {len(done)} of {len(parts)} docs shards; "
                f"finish `assay annotate --scorer {entry.get('spec', set_name)}` first"
            )
        out[set_name] = {"column": column, "version": entry["version"]}
    return out


def write_strength_config(
    root: str | Path, name: str, sets: Sequence[str], capability: Sequence[float], source: dict[str, Any]
) -> dict[str, Any]:
    """Check the loss sets and the capability values, then write ``models/preselect_NAME.strength.json``
    (models weakest first). ``source`` says where the values came from. Returns what it wrote."""
    sets = [s.strip() for s in sets]
    if len(sets) != len(capability):
        raise ValueError(f"preselect {name}: {len(sets)} models but {len(capability)} capability values")
    if len(set(sets)) != len(sets):
        raise ValueError(f"preselect {name}: a model is named twice in {', '.join(sets)}")
    if len(sets) < 2:
        raise ValueError(f"preselect {name}: predictive strength compares models; give at least 2")
    values = [float(v) for v in capability]
    if not all(np.isfinite(values)):
        raise ValueError(f"preselect {name}: capability values must be finite numbers, got {values}")
    by_value: dict[float, str] = {}
    for set_name, value in zip(sets, values):
        if value in by_value:  # the rule of predictive_strength, with the models' names
            raise ValueError(
                f"preselect {name}: {by_value[value]} and {set_name} have the same capability {value:g}: "
                "their pair has no expected order; give distinct values or leave one out"
            )
        by_value[value] = set_name
    inputs = loss_sets(root, sets, name)
    order = sorted(range(len(sets)), key=lambda i: values[i])
    config = {
        "format": FORMAT,
        "name": label_of(name),
        "models": [sets[i] for i in order],
        "capability": [values[i] for i in order],
        "columns": [inputs[sets[i]]["column"] for i in order],
        "source": source,
    }
    write_json_atomic(strength_path(root, name), config)
    return config


# --- the scorers -------------------------------------------------------------------------------


def _floats(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numeric column as float64 with NaN for null."""
    import pyarrow.compute as pc

    return pc.fill_null(pc.cast(column, pa.float64()), np.nan).to_numpy(zero_copy_only=False)


@dataclass
class PredictiveStrengthScorer:
    """S per document from the loss columns of N annotation sets, ordered by capability."""

    label: str
    columns: tuple[str, ...]  # loss columns, weakest model first
    capability: tuple[float, ...]
    version: str
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = f"preselect_{self.label}_s"

    @property
    def input_columns(self) -> tuple[str, ...]:
        return ("id", *self.columns)

    def output_schema(self) -> pa.Schema:
        return pa.schema([(self.name, pa.float64())])

    def score(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        losses = np.column_stack([_floats(batch.column(c)) for c in self.columns])
        s = predictive_strength(losses, np.asarray(self.capability))
        return pa.RecordBatch.from_arrays(
            [pa.array(s, pa.float64(), mask=np.isnan(s))], schema=self.output_schema()
        )

    @classmethod
    def for_root(cls, root: str | Path, name: str) -> PredictiveStrengthScorer:
        """The scorer ``assay train preselect NAME`` configured (its strength.json)."""
        path = strength_path(root, name)
        if not path.is_file():
            raise ValueError(
                f"preselect {name}: no model ordering {path}; run `assay train preselect {name} "
                "--models ... --capability ...` first"
            )
        config = json.loads(path.read_text())
        inputs = loss_sets(root, config["models"], name)  # still there, and their current versions
        key = {
            "columns": [inputs[m]["column"] for m in config["models"]],
            "capability": config["capability"],
            "inputs": {m: inputs[m]["version"] for m in config["models"]},
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return cls(
            label=label_of(name),
            columns=tuple(key["columns"]),
            capability=tuple(config["capability"]),
            version=f"{STRENGTH_VERSION}-{digest[:12]}",
        )


@dataclass
class PreselectScorer(FastTextClassifierScorer):
    """P(positive) of the PreSelect classifier in ``preselect_NAME``: the fastText scorer, renamed."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.name = self.column = self.model_path.stem  # preselect_NAME, already sanitised

    @classmethod
    def from_spec(cls, arg: str | None, root: Path, **settings: Any) -> Any:
        """``preselect:NAME`` -> this scorer; ``preselect:NAME:strength`` -> S (PredictiveStrengthScorer)."""
        name, _, mode = (arg or "").partition(":")
        if not name.strip():
            raise ValueError(
                "the preselect scorer needs a name: --scorer preselect:NAME (from `assay train preselect NAME`)"
            )
        name, mode = name.strip(), mode.strip()
        if mode == "strength":
            return PredictiveStrengthScorer.for_root(root, name)
        if mode:
            raise ValueError(
                f"preselect:{arg}: unknown mode {mode!r}; use preselect:{name} or preselect:{name}:strength"
            )
        path = model_path(root, name)
        if not path.is_file():
            raise ValueError(
                f"preselect:{name}: no classifier {path}; train it with `assay train preselect {name} "
                "--models ... --capability ...`"
            )
        keep = {k: v for k, v in settings.items() if k == "batch_size"}
        return cls(model_path=path, **keep)


# --- labels and training ------------------------------------------------------------------------


def read_strength(root: str | Path, name: str) -> tuple[pa.Array, np.ndarray, int]:
    """(ids, S) of every document with an S, and how many have none, from the catalog."""
    from assay.corpora.catalog import ident, open_catalog, view_name

    set_name = strength_set(name)
    con = open_catalog(root, read_only=True)
    try:
        views = {
            r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
        }
        view = f"annotations_{view_name(set_name)}"
        if view not in views:
            raise ValueError(
                f"preselect {name}: no annotation set {set_name}; run `assay train preselect {name} ...`"
            )
        column = ident(set_name)
        table = con.sql(
            f"SELECT id, {column} AS s FROM {ident(view)} WHERE {column} IS NOT NULL ORDER BY id"
        ).to_arrow_table()
        (without,) = con.execute(f"SELECT count(*) FROM {ident(view)} WHERE {column} IS NULL").fetchone()
    finally:
        con.close()
    return table.column("id").combine_chunks(), _floats(table.column("s")), int(without)


@dataclass
class Labels:
    """The documents chosen for each class: ``table`` has ``id`` and ``label`` (1 / 0)."""

    table: pa.Table
    positives: int
    negatives: int
    negative_max_s: float | None  # the highest S among the negatives


def choose_labels(
    ids: pa.Array | Sequence[str], s: np.ndarray, *, name: str = "", min_per_class: int = MIN_PER_CLASS
) -> Labels:
    """PreSelect's labels (§2.3): S = 1 vs as many lowest-S documents (ties: id hash)."""
    from assay.scorers.embed import id_hashes

    id_list = ids.to_pylist() if isinstance(ids, pa.Array | pa.ChunkedArray) else list(ids)
    s = np.asarray(s, dtype=np.float64)
    if len(id_list) != len(s) or np.isnan(s).any():
        raise ValueError("choose_labels needs one S per id and no missing S (drop null S first)")
    positive = np.flatnonzero(s == 1.0)
    rest = np.flatnonzero(s < 1.0)
    rest = rest[np.lexsort((id_hashes([id_list[i] for i in rest]), s[rest]))]  # lowest S, then id hash
    negative = rest[: len(positive)]
    what = f"preselect {name}: " if name else ""
    if len(positive) < min_per_class:
        zeros = int((s == 0.0).sum())
        hint = (
            f"; {zeros} have S = 0, so check that the capability order is not reversed"
            if zeros > len(positive)
            else ""
        )
        raise ValueError(
            f"{what}only {len(positive)} of {len(s)} scored documents have S = 1 (every model pair in "
            f"capability order); the classifier needs at least {min_per_class} positives{hint}"
        )
    if len(negative) < min_per_class:
        raise ValueError(
            f"{what}only {len(negative)} of {len(s)} scored documents have S < 1; the classifier needs "
            f"at least {min_per_class} negatives"
        )
    chosen = np.concatenate([positive, negative])
    table = pa.table(
        {
            "id": pa.array([id_list[i] for i in chosen], pa.string()),
            "label": pa.array(np.r_[np.ones(len(positive)), np.zeros(len(negative))].astype(np.int8)),
        }
    )
    return Labels(table, len(positive), len(negative), float(s[negative].max()) if len(negative) else None)


def label_texts(con: Any, labels: pa.Table, label: int) -> Iterator[str | None]:
    """The texts of one class, streamed from the catalog's docs view in Arrow batches."""
    cursor = con.cursor()  # each class on its own cursor, with its own view of the labels
    try:
        cursor.register("preselect_labels", labels)
        reader = cursor.sql(
            f"SELECT d.text FROM docs d JOIN preselect_labels l USING (id) WHERE l.label = {int(label)}"
        ).to_arrow_reader(2048)
        for batch in reader:
            yield from batch.column(0).to_pylist()
    finally:
        cursor.close()


def train_preselect_classifier(
    root: str | Path, name: str, labels: Labels, metadata: dict[str, Any], **hyperparameters: Any
) -> Path:
    """Train the classifier on the labelled documents' texts; writes ``models/preselect_NAME.bin``
    and its sidecar (``metadata`` under ``data``). Hyperparameters default to PreSelect's."""
    from assay.corpora.catalog import open_catalog
    from assay.scorers.fasttext_classifier import train_classifier

    settings = {**PRESELECT_FASTTEXT, **{k: v for k, v in hyperparameters.items() if v is not None}}
    con = open_catalog(root, read_only=True)
    try:
        return train_classifier(
            label_texts(con, labels.table, 1),
            label_texts(con, labels.table, 0),
            out_path=model_path(root, name),
            balance=True,
            metadata=metadata,
            **settings,
        )
    finally:
        con.close()
