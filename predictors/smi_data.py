"""Inputs of the SMI predictor: per-fact counts in the SMI repository's layout or the catalog's.

The SMI repository (arXiv 2502.04066) stores, per model, a JSON list of facts with document
counts (`time_seqs`, `time_subj`, `time_obj`, `time_s1j1`, …) and the model's closed-book QA
accuracy `acc`; Assay's catalog exports `fact_counts` with `n_docs`, `n_subj`, `n_obj`, `n_both`.
Both read into one table with the repository's names.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import polars as pl

COUNT_COLUMNS = ("time_seqs", "time_subj", "time_obj", "time_s1j1")
# the catalog's fact_counts names -> the SMI repository's names
FACT_COUNTS_NAMES = {"n_docs": "time_seqs", "n_subj": "time_subj", "n_obj": "time_obj", "n_both": "time_s1j1"}


def parse_model_size(text: str) -> float:
    """Parameters from '7e9', '7b', '410m', '1b1' (1.1B) or a model name such as 'pythia-1.4b'.

    Sizes written in billions become `billions × 1e9`, as the paper computes log2(N).
    """
    text = str(text).strip()
    try:
        return float(text)
    except ValueError:
        pass
    for part in re.split(r"[-_/]", text):
        m = re.fullmatch(r"(\d+(?:\.\d+)?)([mMbBkK])(\d*)", part)
        if m:
            value = float(m.group(1) + ("." + m.group(3) if m.group(3) else ""))
            return value * {"k": 1e3, "m": 1e6, "b": 1e9}[m.group(2).lower()]
    raise ValueError(f"cannot read a model size from {text!r}; give it as 7e9, 7b or 410m")


def _load_json_rows(path: Path) -> pl.DataFrame:
    import orjson

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if path.name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        rows = [orjson.loads(line) for line in data.splitlines() if line.strip()]
    else:
        rows = orjson.loads(data)
    if isinstance(rows, dict):
        rows = [dict(v, fact_id=k) if isinstance(v, dict) else v for k, v in rows.items()]
    return pl.DataFrame(rows, infer_schema_length=None)


def read_counts(path: str | Path) -> pl.DataFrame:
    """Per-fact counts (and `acc` when present) from a merge_outputs JSON(.gz), JSONL, CSV or Parquet.

    Accepts the SMI repository's names (`idx`, `time_seqs`, …) or the catalog's `fact_counts`
    names (`fact_id`, `n_docs`, `n_subj`, `n_obj`, `n_both`); returns the repository's names.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such counts file")
    name = path.name.lower()
    if name.endswith(".parquet"):
        table = pl.read_parquet(path)
    elif name.endswith((".csv", ".csv.gz", ".tsv")):
        table = pl.read_csv(path, separator="\t" if name.endswith(".tsv") else ",")
    else:
        table = _load_json_rows(path)
    return normalise_columns(table, source=str(path))


def normalise_columns(table: pl.DataFrame, source: str = "table") -> pl.DataFrame:
    """Rename fact_counts columns to the SMI names and check the counts are there."""
    renames = {k: v for k, v in FACT_COUNTS_NAMES.items() if k in table.columns and v not in table.columns}
    if "fact_id" not in table.columns and "idx" in table.columns:
        renames["idx"] = "fact_id"
    table = table.rename(renames)
    if "fact_id" not in table.columns:
        table = table.with_row_index("fact_id")
    missing = [c for c in COUNT_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"{source}: missing count columns {missing}; expected the SMI merge_outputs layout "
            f"({', '.join(COUNT_COLUMNS)}) or fact_counts ({', '.join(FACT_COUNTS_NAMES)})"
        )
    return table


def load_model_table(specs: list[tuple[str | Path, float | None]]) -> pl.DataFrame:
    """Stack counts files into one fitting table; a missing size is read from the file name."""
    parts, seen = [], set()
    for path, size in specs:
        path = Path(path)
        model = re.sub(r"\.(json|jsonl|csv|parquet)(\.gz)?$", "", path.name)
        size = parse_model_size(model) if size is None else float(size)
        if model in seen:  # same file name in two folders: keep the models apart
            model = f"{model}@{size:g}"
        seen.add(model)
        part = read_counts(path)
        if "acc" not in part.columns:
            raise ValueError(f"{path}: no 'acc' column; fitting needs each fact's observed accuracy")
        part = part.select("fact_id", *COUNT_COLUMNS, "acc")
        parts.append(part.with_columns(pl.lit(model).alias("model"), pl.lit(size).alias("model_size")))
    return pl.concat(parts, how="vertical_relaxed")


# the SMI repository's model families (merge_outputs/<model>.json.gz), each on one corpus's counts:
# Pythia and GPT-Neo/J on the Pile, BLOOM on ROOTS
FAMILIES: dict[str, list[str]] = {
    "pythia": [f"pythia-{s}" for s in ("14m", "31m", "70m", "160m", "410m", "1.4b", "2.8b", "6.9b", "12b")],
    "gpt-neo": ["gpt-neo-125m", "gpt-neo-1.3B", "gpt-neo-2.7B", "gpt-j-6b"],
    "bloom": [f"bloom-{s}" for s in ("560m", "1b1", "1b7", "3b", "7b1")],
}


def load_families(
    merge_outputs: str | Path, families: dict[str, list[str]] | None = None
) -> dict[str, dict[str, pl.DataFrame]]:
    """{family: {model: fitting table}} from a merge_outputs folder (sizes read from the names)."""
    folder = Path(merge_outputs)
    out = {}
    for family, models in (FAMILIES if families is None else families).items():
        out[family] = {m: load_model_table([(folder / f"{m}.json.gz", None)]) for m in models}
    return out
