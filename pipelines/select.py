"""`assay select`: turn scores into a mixture under a budget, working on ids and scores only.

The pool is every row of the `annotations` view that passes the recipe's filter, with its rank
score and its size (tokens, chars) from `stats`, or tokens from a real tokenizer. Strata split
the pool; each stratum gets a quota in the budget's unit by largest remainder, so the quotas add
up to the budget exactly. Inside a stratum the strategy orders the documents and they are taken
in that order until the quota is met: a stratum overshoots its quota by less than one document.
A quota larger than the stratum's pool is filled by whole passes over the same order (documents
repeated), never more than `max_epochs` passes. Text is read only afterwards, shard by shard,
when `corpora.mixture.write_mixture` copies the chosen documents.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from assay.pipelines.recipe import Recipe, RecipeError, check_sql

# DuckDB sorts and joins out of core beyond this; without a cap the pool query of a 10M-document
# corpus peaks near 3.4 GB for a 0.5 GB result (bench/select.py), with it near 1.6 GB.
POOL_QUERY_MEMORY = "1GB"
STATS_HINT = "run `assay annotate --scorer stats` first (selection counts tokens and characters from it)"


@dataclass
class Pool:
    """The candidate documents in id order: what selection needs, and no text."""

    ids: object  # pyarrow string array
    score: np.ndarray  # float64; NaN where the rank is NULL (or no rank: uniform)
    tokens: np.ndarray  # int64
    chars: np.ndarray  # int64
    stratum: np.ndarray  # int64 stratum index per row
    raw_score: np.ndarray  # the rank as the recipe computes it, before z-normalisation
    keys: list[dict] = field(default_factory=list)  # stratum index -> {column: value}
    dropped: dict = field(default_factory=dict)  # rows left out of the pool, by reason


@dataclass
class Selection:
    ids: object  # pyarrow string array of the chosen documents (id order)
    counts: np.ndarray  # copies of each chosen document (>= 1)
    scores: np.ndarray
    report: dict  # what goes into the mixture manifest


def largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Whole-number quotas proportional to `weights` that add up to `total` exactly."""
    weights = np.asarray(weights, dtype=np.float64)
    raw = total * weights / weights.sum()
    base = np.floor(raw).astype(np.int64)
    short = int(total - base.sum())
    base[np.argsort(-(raw - base), kind="stable")[:short]] += 1
    return base


def rank_order(
    score: np.ndarray, strategy: str, temperature: float | None, rng: np.random.Generator
) -> np.ndarray:
    """Row positions in the order a strategy takes them (rows arrive in id order: ties go by id).

    gumbel: descending score/tau + Gumbel(0,1) noise, i.e. sampling without replacement with
    probability proportional to exp(score/tau) (QuRating, Wettig et al. 2024; METHODS.md §5.5).
    """
    if strategy == "uniform":
        return rng.permutation(len(score))
    if strategy == "gumbel" and temperature:
        keys = score / temperature + rng.gumbel(size=len(score))
        return np.argsort(-keys, kind="stable")
    return np.argsort(-score, kind="stable")  # topk, threshold, and gumbel at tau = 0


def take_until(sizes: np.ndarray, quota: int) -> np.ndarray:
    """Copies per position when walking `sizes` (already in take order) cyclically until the
    running total reaches `quota`: whole passes first, then the shortest prefix that meets it."""
    counts = np.zeros(len(sizes), dtype=np.int64)
    total = int(sizes.sum())
    if quota <= 0 or total == 0:
        return counts
    full, rest = divmod(quota, total)
    counts += full
    if rest:
        counts[: int(np.searchsorted(np.cumsum(sizes), rest, side="left")) + 1] += 1
    return counts


def _stratum_codes(n: int, columns: list, names: list[str]) -> tuple[np.ndarray, list[dict]]:
    """Stratum index per row and the {column: value} key of each index, in sorted key order."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not columns:
        return np.zeros(n, dtype=np.int64), [{}]
    code = np.zeros(n, dtype=np.int64)
    values = []
    for col in columns:
        enc = pc.dictionary_encode(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
        vals = enc.dictionary.to_pylist() + [None]  # the last slot is NULL
        idx = pc.fill_null(enc.indices, len(vals) - 1).to_numpy().astype(np.int64)
        code = code * len(vals) + idx
        values.append(vals)
    uniq, inverse = np.unique(code, return_inverse=True)
    keys = []
    for c in uniq.tolist():
        parts = []
        for vals in reversed(values):
            c, r = divmod(c, len(vals))
            parts.append(vals[r])
        keys.append(dict(zip(names, reversed(parts))))
    order = sorted(range(len(keys)), key=lambda i: [(v is not None, v or "") for v in keys[i].values()])
    remap = np.empty(len(keys), dtype=np.int64)
    remap[order] = np.arange(len(keys))
    return remap[inverse], [keys[i] for i in order]


def load_pool(root: str | Path, recipe: Recipe) -> tuple[Pool, dict]:
    """Check the recipe's SQL, then read ids, scores, sizes and strata of the filtered pool."""
    import pyarrow.compute as pc

    from assay.corpora.catalog import ident, open_catalog

    con = open_catalog(root)
    try:
        views = {
            r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
        }
        if "annotations_stats" not in views:
            raise ValueError(f"{root}: no `stats` annotations; {STATS_HINT}")
        check_sql(recipe, con)
        # the wide view names a stats column `stats_<col>` when an earlier set already has `<col>`
        names = {r[0] for r in con.execute("DESCRIBE annotations").fetchall()}
        tokens, chars = (ident(f"stats_{c}" if f"stats_{c}" in names else c) for c in ("tokens_est", "chars"))
        con.execute(f"SET memory_limit = '{POOL_QUERY_MEMORY}'")
        score = f"CAST(({recipe.rank}) AS DOUBLE)" if recipe.rank else "NULL::DOUBLE"
        strata = "".join(
            f", CAST({ident(c)} AS VARCHAR) AS __s{i}" for i, c in enumerate(recipe.strata.columns)
        )
        where = f" WHERE ({recipe.filter})" if recipe.filter else ""
        table = con.sql(
            f"SELECT id, {score} AS __score{strata}, {tokens} AS __tokens, {chars} AS __chars "
            f"FROM annotations{where} ORDER BY id"
        ).to_arrow_table()
    finally:
        con.close()
    if table.num_rows == 0:
        raise RecipeError("filter", "no document of the corpus passes it")
    missing = table.column("__tokens").null_count
    if missing:
        raise ValueError(f"{missing} documents of the pool have no `stats` annotation; {STATS_HINT}")
    score_arr = table.column("__score").to_numpy().astype(np.float64)
    keep = np.ones(table.num_rows, dtype=bool)
    dropped = {}
    if recipe.rank is not None:
        keep &= ~np.isnan(score_arr)
        dropped["null_rank"] = int((~keep).sum())
    if recipe.normalize and keep.any():
        mean, std = score_arr[keep].mean(), score_arr[keep].std()
        ranked = (score_arr - mean) / std if std > 0 else score_arr - mean
    else:
        ranked = score_arr
    if recipe.threshold is not None:
        below = keep & ~(ranked >= recipe.threshold)
        dropped["below_threshold"] = int(below.sum())
        keep &= ~below
    if not keep.any():
        if dropped.get("below_threshold"):
            raise RecipeError("threshold", f"no document of the pool reaches {recipe.threshold}")
        raise RecipeError("rank", "is NULL for every document of the pool")
    if not keep.all():
        table = table.filter(keep)
        score_arr, ranked = score_arr[keep], ranked[keep]
    strata_cols = [table.column(f"__s{i}") for i in range(len(recipe.strata.columns))]
    stratum, keys = _stratum_codes(table.num_rows, strata_cols, list(recipe.strata.columns))
    counting = {"method": "stats.tokens_est", "note": "UTF-8 bytes / 4 (scorers/stats.py)"}
    ids = table.column("id").combine_chunks()
    tokens = pc.cast(table.column("__tokens"), "int64").to_numpy()
    if recipe.tokenizer and len(ids):
        from assay.corpora.shards import sha256_file

        tokens = count_tokens(root, ids, recipe.tokenizer)
        counting = {"method": "tokenizer", "path": recipe.tokenizer, "sha256": sha256_file(recipe.tokenizer)}
    pool = Pool(
        ids=ids,
        score=ranked,
        tokens=tokens,
        chars=pc.cast(table.column("__chars"), "int64").to_numpy(),
        stratum=stratum,
        raw_score=score_arr,
        keys=keys,
        dropped=dropped,
    )
    return pool, counting


def count_tokens(root: str | Path, ids, tokenizer_path: str, batch_size: int = 512) -> np.ndarray:
    """Tokens per document with a `tokenizers` tokenizer.json, reading text one docs shard at a time."""
    from tokenizers import Tokenizer

    from assay.corpora.mixture import locate_docs, read_rows

    tok = Tokenizer.from_file(tokenizer_path)
    tok.no_truncation()
    tok.no_padding()
    out = np.zeros(len(ids), dtype=np.int64)
    for path, rows, positions in locate_docs(root, ids):
        texts = read_rows(path, rows, ["text"]).column("text").to_pylist()
        for i in range(0, len(texts), batch_size):
            enc = tok.encode_batch([t or "" for t in texts[i : i + batch_size]], add_special_tokens=False)
            out[positions[i : i + batch_size]] = [len(e.ids) for e in enc]
    return out


def _leaf_weights(pool: Pool, recipe: Recipe, unit_pool: np.ndarray) -> np.ndarray:
    """Each stratum's share of the budget: its pool share, or explicit weights on the first column."""
    weights = recipe.strata.weights
    if weights is None:
        return unit_pool / unit_pool.sum()
    col = recipe.strata.columns[0]
    firsts = [k[col] for k in pool.keys]
    for value, w in weights.items():
        if w > 0 and value not in firsts:
            raise RecipeError(f"strata.{col}.{value}", "no document of the filtered pool has this value")
    group_total: dict = {}
    for v, u in zip(firsts, unit_pool):
        group_total[v] = group_total.get(v, 0) + u
    return np.array(
        [
            weights.get(v, 0.0) * (u / group_total[v] if group_total[v] else 0.0)
            for v, u in zip(firsts, unit_pool)
        ]
    )


def _describe_key(key: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in key.items()) or "the whole pool"


def plan_selection(pool: Pool, recipe: Recipe) -> Selection:
    """Quotas per stratum, order inside each, and the copies of every chosen document."""
    budget = recipe.budget
    unit = budget.unit if budget else "docs"
    sizes = {"tokens": pool.tokens, "chars": pool.chars, "docs": np.ones(len(pool.tokens), np.int64)}[unit]
    n_strata = len(pool.keys)
    members = np.argsort(pool.stratum, kind="stable")  # grouped by stratum, id order inside
    bounds = np.concatenate([[0], np.cumsum(np.bincount(pool.stratum, minlength=n_strata))])
    unit_pool = np.array(
        [sizes[members[bounds[s] : bounds[s + 1]]].sum() for s in range(n_strata)], dtype=np.float64
    )
    if budget is None:
        target, quotas, weights = None, None, unit_pool / max(unit_pool.sum(), 1)
    else:
        total = unit_pool.sum()
        target = budget.amount if budget.amount is not None else max(int(round(budget.fraction * total)), 1)
        weights = _leaf_weights(pool, recipe, unit_pool)
        quotas = largest_remainder(target, weights)
    counts = np.zeros(len(pool.tokens), dtype=np.int64)
    strata_report = []
    for s, key in enumerate(pool.keys):
        rows = members[bounds[s] : bounds[s + 1]]
        if quotas is None:
            counts[rows] = 1
        else:
            if quotas[s] > recipe.max_epochs * unit_pool[s]:
                passes = quotas[s] / unit_pool[s] if unit_pool[s] else float("inf")
                raise RecipeError(
                    "max_epochs",
                    f"stratum {_describe_key(key)} needs {passes:.2f} passes over its {unit_pool[s]:.0f} pool "
                    f"{unit} to fill its quota of {quotas[s]} {unit}, but max_epochs is {recipe.max_epochs}; "
                    "raise max_epochs or lower the budget or this stratum's weight",
                )
            rng = np.random.default_rng([recipe.seed, zlib.crc32(json.dumps(key, sort_keys=True).encode())])
            order = rows[rank_order(pool.score[rows], recipe.strategy, recipe.temperature, rng)]
            counts[order] = take_until(sizes[order], int(quotas[s]))
        c = counts[rows]
        chosen = rows[c > 0]
        raw = pool.raw_score[chosen]
        raw = raw[~np.isnan(raw)]
        strata_report.append(
            {
                "key": key,
                "weight": round(float(weights[s]), 9),
                "quota": None if quotas is None else int(quotas[s]),
                "pool_docs": int(len(rows)),
                "pool_tokens": int(pool.tokens[rows].sum()),
                "pool_chars": int(pool.chars[rows].sum()),
                "selected_docs": int(len(chosen)),
                "rows": int(c.sum()),
                "tokens": int((pool.tokens[rows] * c).sum()),
                "chars": int((pool.chars[rows] * c).sum()),
                "epochs": round(float((sizes[rows] * c).sum() / unit_pool[s]), 6) if unit_pool[s] else 0.0,
                "repeated_docs": int((c > 1).sum()),
                "max_copies": int(c.max()) if len(c) else 0,
                # the cut actually used: the lowest score taken (topk: the threshold that reproduces it)
                "score_min": float(raw.min()) if len(raw) else None,
                "score_max": float(raw.max()) if len(raw) else None,
            }
        )
    chosen = np.nonzero(counts)[0]
    selected_units = int((sizes * counts).sum())
    report = {
        "budget": {
            "unit": unit,
            "amount": budget.amount if budget else None,
            "fraction": budget.fraction if budget else None,
            "compute_flops": budget.compute_flops if budget else None,
            "target": target,
            "selected": selected_units,
            "overshoot": None if target is None else selected_units - target,
        },
        "pool": {
            "docs": int(len(pool.tokens)),
            "tokens": int(pool.tokens.sum()),
            "chars": int(pool.chars.sum()),
            "dropped": pool.dropped,
        },
        "selected": {
            "docs": int(len(chosen)),
            "rows": int(counts.sum()),
            "tokens": int((pool.tokens * counts).sum()),
            "chars": int((pool.chars * counts).sum()),
            "repeated_docs": int((counts > 1).sum()),
            "max_copies": int(counts.max()) if len(counts) else 0,
        },
        "strata": strata_report,
    }
    return Selection(pool.ids.take(chosen), counts[chosen], pool.raw_score[chosen], report)


def select(
    root: str | Path, recipe: Recipe, name: str, recipe_text: str | None = None, force: bool = False
) -> dict:
    """Check everything, choose documents, then write `mixtures/<name>/`; returns its manifest."""
    from assay.corpora.manifest import load_manifest, tool_versions
    from assay.corpora.mixture import check_name, write_mixture

    root = Path(root)
    started = time.time()
    check_name(root, name, force)
    pool, counting = load_pool(root, recipe)
    selection = plan_selection(pool, recipe)
    corpus = load_manifest(root)
    manifest = {
        "name": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "recipe": recipe.to_json(),
        "seed": recipe.seed,
        "strategy": recipe.strategy,
        "temperature": recipe.temperature,
        "normalize": recipe.normalize,
        "max_epochs": recipe.max_epochs,
        "token_count": counting,
        **selection.report,
        "corpus": {
            "docs_shards": [{"name": s["name"], "sha256": s.get("sha256")} for s in corpus["shards"]],
            "annotations": {k: v["version"] for k, v in corpus["annotations"].items()},
        },
        "versions": tool_versions(),
        "seconds_selecting": round(time.time() - started, 3),
    }
    return write_mixture(
        root, name, selection.ids, selection.counts, selection.scores, manifest, recipe_text, force
    )
