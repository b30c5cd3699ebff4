"""Mixture tables: the RegMix layout (wide) and the recipe layout (long).

Wide: a mixture file has an ``index`` column and one weight column per training domain
(``train_the_pile_pile_cc``); a loss file has ``index`` and one loss column per validation
domain (``metric/the_pile_pile_cc_val_loss``). The two sets of domains need not be the same
(RegMix trains on 17 Pile domains and validates on 13). Columns are matched by their short
domain name (``pile_cc``), so full column names and short names are both accepted.

Recipes: a mixture file has rows ``recipe, domain, weight`` (any number of domains; a domain a
recipe does not list weighs 0), and the results are the long format of
``../shared/data/eval_results/recipes`` (``recipe, task, metric, value``, other columns ignored),
filtered to one task and metric. Both become the same joined table — a key column (``recipe``),
one weight column per domain, one target column — so every regressor reads either.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

INDEX = "index"
RECIPE = "recipe"
KEYS = (INDEX, RECIPE)  # the key column of a table: wide files use index, recipe files recipe
RECIPE_COLUMNS = (RECIPE, "domain", "weight")
SUM_TOLERANCE = 0.05  # how far a mixture's weights may sum from 1 (rounded weights in the files)
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
    bad = np.flatnonzero(np.abs(sums - 1.0) > SUM_TOLERANCE)
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
    table = mixtures.join(losses, on=INDEX, how="inner", maintain_order="left")
    if table.height < mixtures.height:
        missing = sorted(set(mixtures[INDEX]) - set(losses[INDEX]))
        raise ValueError(f"{len(missing)} mixtures have no losses (indices {missing[:5]}…)")
    return table


def load_table(mixtures: str | Path, losses: str | Path) -> pl.DataFrame:
    return join_mixtures_losses(read_mixtures(mixtures), read_losses(losses))


def split_columns(table: pl.DataFrame) -> tuple[list[str], list[str]]:
    """(weight columns, loss columns) of a joined table."""
    losses = [c for c in table.columns if is_loss_column(c)]
    weights = [c for c in table.columns if c not in KEYS and c not in losses]
    return weights, losses


def key_column(table: pl.DataFrame) -> str | None:
    """The column that names a table's mixtures (``recipe`` or ``index``), if it has one."""
    return next((k for k in (RECIPE, INDEX) if k in table.columns), None)


# ---- the recipe layout ---------------------------------------------------------------------
def _read_any(path: Path) -> pl.DataFrame:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return pl.read_parquet(path)
    if name.endswith((".csv", ".csv.gz", ".tsv")):
        sep = "\t" if name.endswith(".tsv") else ","
        return pl.read_csv(path, separator=sep, infer_schema_length=None)
    raise ValueError(f"{path}: expected a .csv, .csv.gz, .tsv or .parquet table")


def is_recipe_file(path: str | Path) -> bool:
    """Whether a mixture file is in the recipe layout (columns recipe, domain, weight)."""
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            columns = list(pl.read_parquet_schema(path))
        else:
            columns = pl.read_csv(path, separator="\t" if name.endswith(".tsv") else ",", n_rows=1).columns
    except (OSError, pl.exceptions.PolarsError):
        return False  # unreadable: the reader of the other layout reports why
    return set(RECIPE_COLUMNS) <= set(columns)


def read_recipe_mixtures(path: str | Path) -> pl.DataFrame:
    """Rows ``recipe, domain, weight`` as one row per recipe: ``recipe`` + one column per domain.

    A domain a recipe does not list weighs 0. Each recipe's weights must sum to 1 within
    ``SUM_TOLERANCE`` (else an error names the recipe) and are then rescaled to sum to exactly 1.
    """
    path = Path(path)
    frame = _read_any(path)
    missing = [c for c in RECIPE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: a recipe mixture file needs columns recipe, domain, weight (missing {missing})"
        )
    frame = frame.select(pl.col(RECIPE).cast(pl.String), pl.col("domain").cast(pl.String), pl.col("weight"))
    if frame.height == 0:
        raise ValueError(f"{path}: no rows")
    if not frame["weight"].dtype.is_numeric():
        raise ValueError(f"{path}: column 'weight' is not numeric ({frame['weight'].dtype})")
    for column in frame.columns:
        empty = frame[column].null_count()
        if empty:
            raise ValueError(f"{path}: column '{column}' has {empty} empty cells")
    negative = frame.filter(pl.col("weight") < 0)
    if negative.height:
        raise ValueError(
            f"{path}: negative weight of domain {negative['domain'][0]!r} in recipe {negative[RECIPE][0]!r}"
        )
    repeated = frame.group_by(RECIPE, "domain").len().filter(pl.col("len") > 1)
    if repeated.height:
        raise ValueError(
            f"{path}: recipe {repeated[RECIPE][0]!r} lists domain {repeated['domain'][0]!r} more than once"
        )
    bad_names = sorted({d for d in frame["domain"] if d in KEYS or is_loss_column(d)})
    if bad_names:
        raise ValueError(f"{path}: domain names {bad_names} are reserved (key or loss-column names)")
    sums = frame.group_by(RECIPE, maintain_order=True).agg(pl.col("weight").sum())
    off = sums.filter((pl.col("weight") - 1.0).abs() > SUM_TOLERANCE)
    if off.height:
        raise ValueError(
            f"{path}: weights of recipe {off[RECIPE][0]!r} sum to {off['weight'][0]:.3f}, not 1 "
            f"({off.height} such recipes; sums within {SUM_TOLERANCE} of 1 are rescaled, others refused)"
        )
    domains = list(dict.fromkeys(frame["domain"]))  # file order
    wide = frame.pivot(on="domain", index=RECIPE, values="weight").fill_null(0.0)
    wide = wide.select(RECIPE, *[pl.col(d).cast(pl.Float64) for d in domains])
    total = wide.select(domains).sum_horizontal()
    return wide.with_columns([pl.col(d) / total for d in domains])


def results_column(task: str, metric: str) -> str:
    """The target column a long-format result becomes (named like a loss column)."""
    return f"metric/{task}/{metric}"


def read_long_results(path: str | Path, task: str, metric: str) -> pl.DataFrame:
    """One row per recipe with its value of (task, metric) from a long-format results file.

    Several runs of one recipe (repeats, or one run listed in two tables) are averaged; the
    ``n_runs`` column says how many rows each mean has.
    """
    path = Path(path)
    frame = _read_any(path)
    missing = [c for c in (RECIPE, "task", "metric", "value") if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: a long results file needs columns recipe, task, metric, value (missing {missing})"
        )
    picked = frame.filter((pl.col("task") == task) & (pl.col("metric") == metric))
    if picked.height == 0:
        tasks = frame.filter(pl.col("task") == task)
        if tasks.height == 0:
            known = sorted(set(frame["task"].cast(pl.String)))
            shown = ", ".join(known[:8]) + (f", … ({len(known)} tasks)" if len(known) > 8 else "")
            raise ValueError(f"{path}: no task {task!r} (tasks: {shown})")
        metrics = ", ".join(sorted(set(tasks["metric"].cast(pl.String))))
        raise ValueError(f"{path}: task {task!r} has no metric {metric!r} (its metrics: {metrics})")
    value = picked["value"]
    if not value.dtype.is_numeric() or value.null_count():
        raise ValueError(f"{path}: {task}/{metric} has empty or non-numeric values")
    return picked.group_by(pl.col(RECIPE).cast(pl.String), maintain_order=True).agg(
        pl.col("value").cast(pl.Float64).mean().alias(results_column(task, metric)), pl.len().alias("n_runs")
    )


def join_recipes_results(
    mixtures: pl.DataFrame, results: pl.DataFrame, skip_missing: bool = False
) -> tuple[pl.DataFrame, dict]:
    """Recipes with both weights and a result, and a note of those with only one of the two.

    A recipe with weights but no result is refused (as a wide mixture without losses is), unless
    ``skip_missing``: then it is left out and listed in the note. Results without weights are
    ignored (a long file usually holds more recipes than one mixture file)."""
    table = mixtures.join(results.drop("n_runs"), on=RECIPE, how="inner", maintain_order="left")
    if table.height == 0:
        raise ValueError(
            f"no recipe has both weights and a result (mixtures: {few(mixtures[RECIPE])}; "
            f"results: {few(results[RECIPE])})"
        )
    have = set(table[RECIPE])
    lacking = [r for r in mixtures[RECIPE] if r not in have]
    if lacking and not skip_missing:
        what = next((c for c in results.columns if c.startswith("metric/")), "the result")
        raise ValueError(
            f"{len(lacking)} recipes have weights but no {what.removeprefix('metric/')} result: "
            f"{few(lacking)} (drop them from the mixture file, or skip them with --skip-missing)"
        )
    note = {
        "n_recipes": table.height,
        "runs_averaged": int(results.filter(pl.col(RECIPE).is_in(list(have)))["n_runs"].sum()),
        "mixtures_without_result": lacking,
        "results_without_mixture": [r for r in results[RECIPE] if r not in have],
    }
    return table, note


def load_recipe_table(
    mixtures: str | Path, results: str | Path, task: str, metric: str, skip_missing: bool = False
) -> tuple[pl.DataFrame, dict]:
    """The joined table of a recipe mixture file and a long results file (see join_recipes_results)."""
    return join_recipes_results(
        read_recipe_mixtures(mixtures), read_long_results(results, task, metric), skip_missing
    )


# metrics where lower is better: only such a target can stand for the forecast's reference loss
LOSS_METRICS = ("val_loss", "ce_loss", "ctx_ce_loss", "bpb", "ppl", "loss")


def is_loss_metric(metric: str) -> bool:
    return metric in LOSS_METRICS or metric.endswith("_loss")


def align_domains(frame: pl.DataFrame, domains: list[str]) -> pl.DataFrame:
    """A recipe frame with exactly a predictor's domains: absent ones weigh 0; a domain the
    predictor does not know may appear only with weight 0 (its mass could not be predicted)."""
    known = {domain_name(d) for d in domains}
    present = {domain_name(c): c for c in frame.columns if c not in KEYS}
    unknown = [c for n, c in present.items() if n not in known and frame[c].abs().max() > 0]
    if unknown:
        raise ValueError(
            f"domains unknown to this predictor carry weight: {few(unknown)}; it knows {few(sorted(known))}"
        )
    key = key_column(frame)
    columns = [pl.col(present[domain_name(d)]).alias(d) if domain_name(d) in present else pl.lit(0.0).alias(d)
               for d in domains]  # fmt: skip
    return frame.select(*([key] if key else []), *columns)


def few(names, k: int = 5) -> str:
    names = [str(n) for n in names]
    return (
        ", ".join(names[:k]) + (f", … ({len(names)} in all)" if len(names) > k else "") if names else "none"
    )


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
    by_name = {domain_name(c): c for c in frame.columns if c not in KEYS}
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
