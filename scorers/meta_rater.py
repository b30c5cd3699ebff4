"""`meta_rater`: a weighted sum of normalised score columns (Meta-rater, Zhuang et al. 2025; METHODS.md §6).

    assay annotate --scorer meta_rater:published                 # the 25 published weights (§6.4)
    assay annotate --scorer meta_rater:weights=models/meta_rater_web.json   # from `assay fit meta-rater`
    assay annotate --scorer meta_rater:rp_word_count=0.3,rp_frac_unique_words=0.7,norm=rank,name=mine

Q_agg(x) = sum_j w_j * norm_j(Q_j(x)) (§6.3 step 1). Options (comma-separated):

* ``published`` — the learned "All 25" weights of the SlimPajama-Meta-rater dataset card, each
  applied to the catalog column that holds that score (``PUBLISHED``: the 11 RedPajama signals are
  the ``rp_*`` columns of the ``heuristics`` scorer; the model ratings are looked up under their own
  names, or ``SCORE=COLUMN`` names the column, e.g. ``published,fineweb_edu=edu_score``). Scores
  with no column are named on stderr and in the metadata. The weights of the present scores are
  **renormalised to sum to 1** (the order of documents is the same either way; the scale stays that
  of the published rater), and the output metadata says so: a sum over a subset is not the
  published rater, only its restriction;
* ``weights=FILE`` — a JSON file ``{"weights": {column: w, ...}}`` (what ``assay fit meta-rater``
  writes; ``weights=NAME`` also finds ``ROOT/models/meta_rater_NAME.json``); used as given;
* ``COLUMN=W`` — inline weights, used as given;
* ``norm`` — ``z`` (default; the file's own when it names one): (x - mean) / std over the corpus;
  ``rank``: the corpus percentile of x (ties get the mean percentile), read off a table of 1,001
  corpus quantiles with linear interpolation, exact when a column has at most 1,001 distinct
  values; ``none``: the raw value. A NULL (or NaN) input counts as the column's neutral value
  (z: 0, rank: 0.5, none: 0);
* ``name`` — the annotation set and column are ``meta_rater_NAME`` (default ``meta_rater``, or
  ``meta_rater_<name>`` of a weights file that has a name).

Normalisation statistics are corpus-level: they are computed once when the scorer is built, over
every row of the annotation sets that hold the columns, and saved as
``models/meta_rater_stats_<hash>.json`` keyed by the columns, the normalisation and the input
files, so workers and reruns load the same statistics and a document's score never depends on
its batch. The version carries a hash of the weights and statistics.

The published weights are all positive, and the card does not say whether a signal such as
``frac_no_alph_words`` was flipped before weighting (METHODS.md §6.3, not verified): they are
applied to the columns as Assay computes them.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

FORMAT = "assay.meta_rater/1"
NORMS = ("z", "rank", "none")
QUANTILES = 1001
NEUTRAL = {"z": 0.0, "rank": 0.5, "none": 0.0}

# METHODS.md §6.4: published score -> (learned weight, the catalog column that holds it)
PUBLISHED: dict[str, tuple[float, str]] = {
    "educational_value": (0.0564, "educational_value"),  # QuRater
    "frac_no_alph_words": (0.0493, "rp_frac_no_alph_words"),
    "fineweb_edu": (0.0493, "fineweb_edu"),
    "uppercase_fraction": (0.0488, "rp_uppercase_letter_fraction"),
    "facts_trivia": (0.0477, "facts_trivia"),  # QuRater
    "top_3gram": (0.0473, "rp_frac_chars_top_3gram"),
    "terminal_punct": (0.0473, "rp_lines_ending_with_terminal_punct"),
    "top_2gram": (0.0471, "rp_frac_chars_top_2gram"),
    "dsir_wiki": (0.0469, "dsir_wiki"),
    "numerical_frac": (0.0460, "rp_numerical_chars_fraction"),
    "num_sentences": (0.0458, "rp_num_sentences"),
    "dsir_math": (0.0448, "dsir_math"),
    "reasoning": (0.0444, "reasoning"),  # PRRC
    "unique_words": (0.0432, "rp_frac_unique_words"),
    "word_count": (0.0423, "rp_word_count"),
    "unigram_entropy": (0.0422, "rp_unigram_entropy"),
    "dsir_books": (0.0414, "dsir_books"),
    "professionalism": (0.0405, "professionalism"),  # PRRC
    "fluency": (0.0402, "fluency"),  # WanjuanCC
    "readability": (0.0393, "readability"),  # PRRC
    "required_expertise": (0.0373, "required_expertise"),  # QuRater
    "advertisement": (0.0368, "advertisement"),  # WanjuanCC
    "cleanliness": (0.0117, "cleanliness"),  # PRRC
    "mean_word_length": (0.0065, "rp_mean_word_length"),
    "writing_style": (0.0005, "writing_style"),  # QuRater
}

_printed: set[str] = set()  # notes already shown in this process (from_spec runs in every worker)


def _note(message: str) -> None:
    if message not in _printed:
        _printed.add(message)
        print(message, file=sys.stderr)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def parse_options(arg: str | None) -> dict[str, Any]:
    """``published`` / ``weights=FILE`` / ``COLUMN=W`` items, plus ``norm=`` and ``name=``."""
    if not arg:
        raise ValueError(
            "scorer meta_rater needs weights: meta_rater:published, meta_rater:weights=FILE.json "
            "or meta_rater:COLUMN=W,COLUMN=W"
        )
    out: dict[str, Any] = {"published": False, "weights_file": None, "inline": {}, "aliases": {}}
    for part in (p.strip() for p in arg.split(",")):
        if not part:
            continue
        if part == "published":
            out["published"] = True
            continue
        key, eq, value = (s.strip() for s in part.partition("="))
        if not eq or not key or not value:
            raise ValueError(f"meta_rater option {part!r}: expected published, KEY=VALUE or COLUMN=WEIGHT")
        if key in ("norm", "name"):
            out[key] = value
        elif key == "weights":
            out["weights_file"] = value
        elif _number(value) is not None:
            out["inline"][key] = _number(value)
        elif key in PUBLISHED:
            out["aliases"][key] = value
        else:
            raise ValueError(f"meta_rater option {part!r}: {value!r} is not a number")
    sources = [out["published"], out["weights_file"] is not None, bool(out["inline"])]
    if sum(sources) != 1:
        raise ValueError("meta_rater: give exactly one of published, weights=FILE or inline COLUMN=W weights")
    if out["aliases"] and not out["published"]:
        raise ValueError(f"meta_rater: SCORE=COLUMN ({', '.join(out['aliases'])}) goes with published only")
    if out.get("norm", "z") not in NORMS:
        raise ValueError(f"meta_rater: norm must be one of {', '.join(NORMS)} (got {out['norm']!r})")
    name = out.get("name")
    if name is not None and not name.replace("_", "a").isalnum():
        raise ValueError(f"meta_rater: name {name!r} must be letters, digits and _")
    return out


def load_weights(path: str | Path, root: Path | None = None) -> dict:
    """A weights JSON (``{"weights": {column: w}}``, optionally ``name`` and ``norm``), checked."""
    p = Path(path)
    if not p.is_file() and root is not None:
        for candidate in (Path(root) / p, Path(root) / "models" / f"meta_rater_{path}.json"):
            if candidate.is_file():
                p = candidate
                break
    if not p.is_file():
        raise ValueError(f"meta_rater: weights file {path} does not exist")
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"meta_rater: {p} is not JSON ({err.msg}, line {err.lineno})") from None
    weights = doc.get("weights") if isinstance(doc, dict) else None
    if not isinstance(weights, dict) or not weights:
        raise ValueError(f'meta_rater: {p} has no "weights" object of column -> number')
    bad = [k for k, v in weights.items() if isinstance(v, bool) or not isinstance(v, int | float)]
    if bad:
        raise ValueError(f"meta_rater: {p}: weights of {bad} are not numbers")
    if doc.get("norm", "z") not in NORMS:
        raise ValueError(f"meta_rater: {p}: norm must be one of {', '.join(NORMS)}")
    return {**doc, "weights": {k: float(v) for k, v in weights.items()}, "path": str(p)}


def save_weights(path: str | Path, weights: dict[str, float], **extra: Any) -> None:
    """Write a weights JSON that ``meta_rater:weights=FILE`` reads (atomically)."""
    from assay.corpora.atomic import write_json_atomic

    write_json_atomic(path, {"format": FORMAT, **extra, "weights": {k: float(v) for k, v in weights.items()}})


# ---------------------------------------------------------------------------------------------
# corpus columns and their statistics


def column_sets(root: Path, columns: list[str]) -> dict[str, Path]:
    """The annotation set holding each column: the first in name order, as `annotate` joins them.
    Columns no set holds are left out (the caller decides whether that is an error)."""
    import pyarrow.parquet as pq

    found: dict[str, Path] = {}
    folders = sorted(p for p in (Path(root) / "annotations").glob("*") if p.is_dir())
    for folder in folders:
        if folder.name.startswith("meta_rater"):
            continue  # never read our own output back
        parts = sorted(folder.glob("part-*.parquet"))
        if parts:
            for c in pq.read_schema(parts[0]).names:
                if c in columns and c not in found:
                    found[c] = folder
    return found


def as_float(col: pa.Array | pa.ChunkedArray, name: str) -> np.ndarray:
    """A numeric (or boolean) column as float64 with NaN for NULL."""
    import pyarrow.compute as pc

    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)):
        raise ValueError(f"meta_rater: column {name!r} is {col.type}, not a number")
    values = pc.fill_null(pc.cast(col, pa.float64()), float("nan"))
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)


def read_columns(root: Path, columns: list[str]) -> tuple[pa.Array, dict[str, np.ndarray], list[Path]]:
    """(ids in corpus order, column -> float64 values, the files read) over the whole corpus."""
    import pyarrow.parquet as pq

    sets = column_sets(root, columns)
    missing = [c for c in columns if c not in sets]
    if missing:
        raise ValueError(f"meta_rater: columns {missing} are in no annotation set of {root}")
    ids, values, files = None, {}, []
    for folder in sorted(set(sets.values())):
        wanted = [c for c in columns if sets[c] == folder]
        parts = sorted(folder.glob("part-*.parquet"))
        files += parts
        table = pa.concat_tables([pq.read_table(p, columns=["id", *wanted]) for p in parts])
        these = table.column("id").combine_chunks()
        if ids is None:
            ids = these
        elif len(these) != len(ids) or not these.equals(ids):
            raise ValueError(
                f"meta_rater: annotation set {folder.name} does not describe the same documents in the "
                f"same order as {sets[columns[0]].name}; re-run `assay annotate` for it"
            )
        for c in wanted:
            values[c] = as_float(table.column(c), c)
    return ids, values, files


def column_stats(values: np.ndarray, norm: str) -> dict[str, Any]:
    """What ``normalise`` needs for one column, from all its corpus values."""
    valid = values[~np.isnan(values)]
    out: dict[str, Any] = {"rows": int(len(values)), "nulls": int(len(values) - len(valid))}
    if norm == "z":
        out["mean"] = float(valid.mean()) if len(valid) else 0.0
        out["std"] = float(valid.std()) if len(valid) else 0.0
    elif norm == "rank":
        if len(valid):
            q = np.quantile(valid, np.linspace(0.0, 1.0, QUANTILES))
            # equal quantiles (ties) share the mean of their percentiles: a tie gets its mid-rank
            xp, inverse = np.unique(q, return_inverse=True)
            grid = np.linspace(0.0, 1.0, QUANTILES)
            fp = np.bincount(inverse, weights=grid) / np.bincount(inverse)
        else:
            xp, fp = np.zeros(0), np.zeros(0)
        out["xp"], out["fp"] = xp.tolist(), fp.tolist()
    return out


def normalise(values: np.ndarray, stats: dict[str, Any], norm: str) -> np.ndarray:
    """One column normalised with corpus statistics; NaN becomes the neutral value."""
    x = np.asarray(values, dtype=np.float64)
    if norm == "z":
        out = (x - stats["mean"]) / stats["std"] if stats["std"] > 0 else np.zeros_like(x)
    elif norm == "rank":
        xp, fp = np.asarray(stats["xp"]), np.asarray(stats["fp"])
        out = np.interp(x, xp, fp) if len(xp) > 1 else np.full_like(x, 0.5)
    else:
        out = x.copy()
    out[np.isnan(x)] = NEUTRAL[norm]
    return out


def _fingerprint(files: list[Path], root: Path) -> list:
    return [[str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def corpus_stats(root: Path, columns: list[str], norm: str) -> tuple[dict[str, dict], Path]:
    """Per-column statistics over the whole corpus, loaded from ``models/`` or computed and saved."""
    from assay.corpora.atomic import write_json_atomic

    root = Path(root)
    sets = column_sets(root, columns)
    missing = [c for c in columns if c not in sets]
    if missing:
        raise ValueError(f"meta_rater: columns {missing} are in no annotation set of {root}")
    files = sorted({f for c in columns for f in sets[c].glob("part-*.parquet")})
    key = json.dumps([sorted(columns), norm, QUANTILES, _fingerprint(files, root)])
    path = root / "models" / f"meta_rater_stats_{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"
    if path.is_file():
        return json.loads(path.read_text())["stats"], path
    _, values, _ = read_columns(root, columns)
    stats = {c: column_stats(values[c], norm) for c in sorted(columns)}
    write_json_atomic(
        path,
        {"format": FORMAT, "norm": norm, "sets": {c: sets[c].name for c in sorted(columns)}, "stats": stats},
        indent=None,
    )
    return stats, path


def aggregate(normalised: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """sum_j w_j z_j, added up in the weights' order (the same order for every batch)."""
    out = None
    for c, w in weights.items():
        term = w * normalised[c]
        out = term if out is None else out + term
    return out


# ---------------------------------------------------------------------------------------------
# the scorer


@dataclass
class MetaRaterScorer:
    """Q_agg = sum_j w_j norm_j(column_j) per document, with corpus-level normalisation."""

    name: str = "meta_rater"
    weights: dict[str, float] = field(default_factory=dict)  # column -> weight, in summation order
    norm: str = "z"
    stats: dict[str, dict] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # how the weights came about (metadata)

    @property
    def version(self) -> str:
        blob = json.dumps([list(self.weights.items()), self.norm, self.stats], sort_keys=True)
        return "1-" + hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def input_columns(self) -> tuple[str, ...]:
        return ("id", *self.weights)

    def output_schema(self) -> pa.Schema:
        meta = json.dumps({"weights": self.weights, "norm": self.norm, **self.info}, sort_keys=True)
        return pa.schema([pa.field(self.name, pa.float64(), metadata={"assay.meta_rater": meta})])

    def normalised(self, batch: pa.RecordBatch | pa.Table) -> dict[str, np.ndarray]:
        return {c: normalise(as_float(batch.column(c), c), self.stats[c], self.norm) for c in self.weights}

    def score(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        q = aggregate(self.normalised(batch), self.weights)
        return pa.RecordBatch.from_arrays([pa.array(q, pa.float64())], schema=self.output_schema())

    @classmethod
    def from_spec(cls, arg: str | None, root: Path, **settings: Any) -> MetaRaterScorer:
        opts = parse_options(arg)
        root = Path(root)
        name = opts.get("name")
        if opts["published"]:
            weights, info = _published(root, opts["aliases"])
        elif opts["weights_file"] is not None:
            doc = load_weights(opts["weights_file"], root)
            weights = doc["weights"]
            opts.setdefault("norm", doc.get("norm", "z"))
            name = name or doc.get("name")
            info = {"source": doc["path"], "renormalised": False}
        else:
            weights, info = dict(opts["inline"]), {"source": "inline", "renormalised": False}
        norm = opts.get("norm", "z")
        stats, stats_path = corpus_stats(root, list(weights), norm)
        info["stats"] = str(stats_path.relative_to(root))
        return cls(
            name=f"meta_rater_{name}" if name else "meta_rater",
            weights=weights,
            norm=norm,
            stats={c: stats[c] for c in weights},
            info=info,
        )


def _published(root: Path, aliases: dict[str, str]) -> tuple[dict[str, float], dict[str, Any]]:
    """The published weights of the scores the catalog has, renormalised to sum to 1."""
    wanted = {score: aliases.get(score, column) for score, (_, column) in PUBLISHED.items()}
    sets = column_sets(root, list(wanted.values()))
    present = {s: c for s, c in wanted.items() if c in sets}
    missing = [s for s in wanted if s not in present]
    if not present:
        raise ValueError(
            f"meta_rater:published: none of the {len(PUBLISHED)} published scores has a column in {root} "
            "(run `assay annotate --scorer heuristics` for the 11 RedPajama signals)"
        )
    total = sum(PUBLISHED[s][0] for s in present)
    weights: dict[str, float] = {}
    for s, column in present.items():  # two scores named onto one column add up
        weights[column] = weights.get(column, 0.0) + PUBLISHED[s][0] / total
    if missing:
        _note(
            f"meta_rater:published: {len(present)} of {len(PUBLISHED)} scores present (published weight "
            f"{total:.4f}, renormalised to 1); missing: {', '.join(missing)}"
        )
    info = {
        "source": "published",
        "renormalised": True,
        "published_weight_present": round(total, 6),
        "present": present,
        "missing": missing,
    }
    return weights, info
