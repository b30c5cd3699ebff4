"""Mixture tables in the RegMix layout: one file of domain weights, one of per-domain losses.

A mixture file has an ``index`` column and one weight column per training domain
(``train_the_pile_pile_cc``); a loss file has ``index`` and one loss column per validation
domain (``metric/the_pile_pile_cc_val_loss``). The two sets of domains need not be the same
(RegMix trains on 17 Pile domains and validates on 13). Columns are matched by their short
domain name (``pile_cc``), so full column names and short names are both accepted.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

INDEX = "index"
_PREFIXES = ("train_", "metric/", "the_pile_")
_SUFFIXES = ("_val_loss", "_loss")


def domain_name(column: str) -> str:
    """Short domain name of a weight or loss column: ``metric/the_pile_pile_cc_val_loss`` -> ``pile_cc``."""
    name = column
    for prefix in _PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            name = name[len(prefix) :]
    for suffix in _SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return name


def is_loss_column(column: str) -> bool:
    return column.startswith("metric/") or column.endswith("_loss")


def _read(path: str | Path) -> pl.DataFrame:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        frame = pl.read_parquet(path)
    elif suffix in {".csv", ".tsv"}:
        frame = pl.read_csv(path, separator="\t" if suffix == ".tsv" else ",", infer_schema_length=None)
    else:
        raise ValueError(f"{path}: expected a .csv, .tsv or .parquet table")
    if INDEX not in frame.columns:
        raise ValueError(f"{path}: no '{INDEX}' column (rows are matched on it)")
    if frame[INDEX].n_unique() != frame.height:
        raise ValueError(f"{path}: the '{INDEX}' column has repeated values")
    for column in frame.columns:
        if column != INDEX and not frame[column].dtype.is_numeric():
            raise ValueError(f"{path}: column '{column}' is not numeric ({frame[column].dtype})")
        if column != INDEX and frame[column].null_count():
            raise ValueError(f"{path}: column '{column}' has {frame[column].null_count()} empty cells")
    return frame


def read_mixtures(path: str | Path) -> pl.DataFrame:
    """A mixture file: ``index`` plus one weight column per domain; each row sums to about 1."""
    frame = _read(path)
    weights = frame.drop(INDEX)
    if weights.width == 0:
        raise ValueError(f"{path}: no weight columns beside '{INDEX}'")
    if any(is_loss_column(c) for c in weights.columns):
        raise ValueError(f"{path}: looks like a loss file (columns named metric/… or …_loss)")
    w = weights.to_numpy()
    if (w < 0).any():
        row = int(np.argwhere(w < 0)[0, 0])
        raise ValueError(f"{path}: negative weight in the row with index {frame[INDEX][row]}")
    sums = w.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 0.05)
    if len(bad):
        raise ValueError(
            f"{path}: weights of the row with index {frame[INDEX][int(bad[0])]} sum to {sums[bad[0]]:.3f}, "
            f"not 1 ({len(bad)} such rows)"
        )
    return frame


def read_losses(path: str | Path) -> pl.DataFrame:
    """A loss file: ``index`` plus one loss column per validation domain."""
    frame = _read(path)
    if frame.width < 2:
        raise ValueError(f"{path}: no loss columns beside '{INDEX}'")
    return frame


def join_mixtures_losses(mixtures: pl.DataFrame, losses: pl.DataFrame) -> pl.DataFrame:
    """One row per mixture with its weights and its losses; every mixture must have losses."""
    clash = (set(mixtures.columns) & set(losses.columns)) - {INDEX}
    if clash:
        raise ValueError(f"columns in both the mixture and the loss file: {sorted(clash)}")
    table = mixtures.join(losses, on=INDEX, how="inner")
    if table.height < mixtures.height:
        missing = sorted(set(mixtures[INDEX]) - set(losses[INDEX]))
        raise ValueError(f"{len(missing)} mixtures have no losses (indices {missing[:5]}…)")
    return table


def load_table(mixtures: str | Path, losses: str | Path) -> pl.DataFrame:
    return join_mixtures_losses(read_mixtures(mixtures), read_losses(losses))


def split_columns(table: pl.DataFrame) -> tuple[list[str], list[str]]:
    """(weight columns, loss columns) of a joined table."""
    losses = [c for c in table.columns if is_loss_column(c)]
    weights = [c for c in table.columns if c != INDEX and c not in losses]
    return weights, losses


def resolve_target(loss_columns: list[str], target: str) -> list[str]:
    """Loss columns behind a target: a column name, a short domain name, or ``mean`` (all of them)."""
    if target == "mean":
        if not loss_columns:
            raise ValueError("no loss columns (named metric/… or …_loss) to average")
        return list(loss_columns)
    if target in loss_columns:
        return [target]
    hits = [c for c in loss_columns if domain_name(c) == target]
    if len(hits) == 1:
        return hits
    known = ", ".join(sorted(domain_name(c) for c in loss_columns))
    raise ValueError(f"target '{target}' is not a loss column; use 'mean' or one of: {known}")


def weight_matrix(frame: pl.DataFrame, domains: list[str]) -> np.ndarray:
    """Weights of ``domains`` (in that order) from a frame whose columns may use full or short names."""
    by_name = {domain_name(c): c for c in frame.columns if c != INDEX}
    columns, missing = [], []
    for d in domains:
        column = d if d in frame.columns else by_name.get(domain_name(d))
        if column is None:
            missing.append(d)
        columns.append(column)
    if missing:
        raise ValueError(f"missing weight columns for domains {missing}")
    return frame.select(columns).to_numpy().astype(float)


def mixture_vector(mixture: dict[str, float], domains: list[str]) -> np.ndarray:
    """A dict domain -> weight (full or short names; absent domains weigh 0) as a normalised vector."""
    position = {domain_name(d): i for i, d in enumerate(domains)}
    x = np.zeros(len(domains))
    unknown = []
    for key, weight in mixture.items():
        i = position.get(domain_name(key))
        if i is None:
            unknown.append(key)
        else:
            x[i] += float(weight)
    if unknown:
        raise ValueError(f"domains unknown to this predictor: {unknown}; it knows {sorted(position)}")
    if (x < 0).any() or x.sum() <= 0:
        raise ValueError("mixture weights must be non-negative with a positive sum")
    return x / x.sum()


def read_domain_tokens(path: str | Path) -> dict[str, float]:
    """Tokens available per domain, from JSON ``{domain: tokens}`` or a CSV with columns domain,tokens."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a JSON object {{domain: tokens}}")
        tokens = {str(k): float(v) for k, v in raw.items()}
    else:
        frame = pl.read_csv(path, infer_schema_length=None)
        if {"domain", "tokens"} - set(frame.columns):
            raise ValueError(f"{path}: expected columns 'domain' and 'tokens', found {frame.columns}")
        tokens = {str(d): float(t) for d, t in zip(frame["domain"], frame["tokens"])}
    negative = [d for d, t in tokens.items() if not t >= 0]
    if negative:
        raise ValueError(f"{path}: token counts must be non-negative numbers ({negative})")
    return tokens
