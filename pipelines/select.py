"""`assay select`: turn scores into a mixture under a budget, working on ids and scores only.

The pool is every row of the `annotations` view that passes the recipe's filter, with its rank
score and its size (tokens, chars) from `stats`, or tokens from a real tokenizer. Strata split
the pool; each stratum gets a quota in the budget's unit by largest remainder, so the quotas add
up to the budget exactly. Inside a stratum the strategy orders the documents and they are taken
in that order until the quota is met: a stratum overshoots its quota by less than one document.
A quota larger than the stratum's pool is filled by whole passes over the same order (documents
repeated), never more than `max_epochs` passes. Text is read only afterwards, shard by shard,
when `corpora.mixture.write_mixture_pieces` copies the chosen documents.

`select` works out of core, so its memory is set by `memory` (DuckDB's cap; it spills to a
folder under `.assay/tmp/`), not by the corpus: the filtered pool is written once to a DuckDB
file there, joined one docs shard at a time where each annotation set's shard holds that docs
shard's ids (what `annotate` writes; else, or for a rank with a window, in one query);
per-stratum sums and a histogram of the budget's unit over the order key (tokens, characters
or documents per bucket) locate the bucket where each quota runs out, and only that
bucket is sorted to find the exact last document (ties by id); the chosen documents are then
located in the docs shards and streamed to the writer one shard at a time. Gumbel and uniform
keys come from an MD5 hash of (seed, id) (`noise_sql`), so no generator state exists. The
former in-memory planner (`_load_pool`, `_plan_selection`, `_select_in_memory`) is kept to
check that both write the same bytes; with `noise="hash"` it draws the same keys in Python.
"""

from __future__ import annotations

import json
import re
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


def _load_pool(root: str | Path, recipe: Recipe) -> tuple[Pool, dict]:
    """The former in-memory planner's pool (kept to check the out-of-core one): check the recipe's SQL, then read ids, scores, sizes and strata of the filtered pool."""
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


def _leaf_weights(keys: list[dict], recipe: Recipe, unit_pool: np.ndarray) -> np.ndarray:
    """Each stratum's share of the budget: its pool share, or explicit weights on the first column."""
    weights = recipe.strata.weights
    if weights is None:
        return unit_pool / unit_pool.sum()
    col = recipe.strata.columns[0]
    firsts = [k[col] for k in keys]
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


def _budget_report(budget, unit: str, target: int | None, selected: int) -> dict:
    """The manifest's budget block: what was asked and what the selection took."""
    return {
        "unit": unit,
        "amount": budget.amount if budget else None,
        "fraction": budget.fraction if budget else None,
        "compute_flops": budget.compute_flops if budget else None,
        "target": target,
        "selected": selected,
        "overshoot": None if target is None else selected - target,
    }


def _check_epochs(quota: float, pool: float, key: tuple, unit: str, recipe: Recipe) -> None:
    """A stratum's quota must fit in max_epochs passes over its pool."""
    if quota > recipe.max_epochs * pool:
        passes = quota / pool if pool else float("inf")
        raise RecipeError(
            "max_epochs",
            f"stratum {_describe_key(key)} needs {passes:.2f} passes over its {pool:.0f} pool "
            f"{unit} to fill its quota of {quota} {unit}, but max_epochs is {recipe.max_epochs}; "
            "raise max_epochs or lower the budget or this stratum's weight",
        )


def _describe_key(key: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in key.items()) or "the whole pool"


def _plan_selection(pool: Pool, recipe: Recipe, noise: str = "rng") -> Selection:
    """The former in-memory planner: quotas per stratum, order inside each, and the copies of
    every chosen document. noise "rng" is the former NumPy generator; "hash" draws the keys
    `select` uses (hash_gumbel), as an independent reference for it."""
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
        weights = _leaf_weights(pool.keys, recipe, unit_pool)
        quotas = largest_remainder(target, weights)
    counts = np.zeros(len(pool.tokens), dtype=np.int64)
    strata_report = []
    for s, key in enumerate(pool.keys):
        rows = members[bounds[s] : bounds[s + 1]]
        if quotas is None:
            counts[rows] = 1
        else:
            _check_epochs(quotas[s], unit_pool[s], key, unit, recipe)
            if noise == "hash":
                order = rows[hash_order(pool.score[rows], pool.ids.take(rows), recipe)]
            else:
                rng = np.random.default_rng(
                    [recipe.seed, zlib.crc32(json.dumps(key, sort_keys=True).encode())]
                )
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
        "budget": _budget_report(budget, unit, target, selected_units),
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


def plan_selection(pool: Pool, recipe: Recipe) -> Selection:
    """The in-memory planner over a Pool already in memory (meta_rater's search scores small
    candidate pools this way); `select` itself works out of core."""
    return _plan_selection(pool, recipe)


def _select_in_memory(
    root: str | Path,
    recipe: Recipe,
    name: str,
    recipe_text: str | None = None,
    force: bool = False,
    noise: str = "rng",
) -> dict:
    """The former planner end to end (whole pool in memory); `select` must write the same bytes."""
    from assay.corpora.mixture import check_name, write_mixture

    root = Path(root)
    started = time.time()
    check_name(root, name, force)
    pool, counting = _load_pool(root, recipe)
    selection = _plan_selection(pool, recipe, noise)
    manifest = _manifest(root, name, recipe, counting, selection.report, started)
    return write_mixture(
        root, name, selection.ids, selection.counts, selection.scores, manifest, recipe_text, force
    )


def corpus_state(corpus: dict, recipe: Recipe) -> dict:
    """What a selection depends on besides its recipe: the docs shards, the annotation sets
    (versions, and a digest of their shards' checksums: a set filled in for appended shards
    keeps its version), and the tokenizer file a recipe counts tokens with."""
    import hashlib
    import json

    shards = {
        k: {p: e.get("sha256") for p, e in v.get("shards", {}).items()}
        for k, v in corpus["annotations"].items()
    }
    state = {
        "docs_shards": [{"name": s["name"], "sha256": s.get("sha256")} for s in corpus["shards"]],
        "annotations": {k: v["version"] for k, v in corpus["annotations"].items()},
        "annotation_shards": hashlib.sha256(json.dumps(shards, sort_keys=True).encode()).hexdigest(),
    }
    if recipe.tokenizer:
        from assay.corpora.shards import sha256_file

        state["tokenizer_sha256"] = sha256_file(Path(recipe.tokenizer))
    return state


def _already_selected(root: Path | str, name: str, recipe: Recipe, corpus: dict) -> dict | None:
    """The mixture's manifest when `name` was selected with this recipe from the corpus as it is
    now: a rerun (a pipeline script run again, or one killed after publishing) is then done."""
    import json

    from assay.corpora.mixture import list_mixtures, load_mixture

    if name not in list_mixtures(root):
        return None
    done = load_mixture(root, name)
    same_recipe = done.get("recipe") == json.loads(json.dumps(recipe.to_json()))
    if same_recipe and done.get("corpus") == corpus_state(corpus, recipe):
        return {**done, "already_selected": True}
    return None


def _manifest(
    root: Path,
    name: str,
    recipe: Recipe,
    counting: dict,
    report: dict,
    started: float,
    corpus: dict | None = None,
) -> dict:
    from assay.corpora.manifest import load_manifest, tool_versions

    corpus = corpus if corpus is not None else load_manifest(root)  # the state selected from
    return {
        "name": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "recipe": recipe.to_json(),
        "seed": recipe.seed,
        "strategy": recipe.strategy,
        "temperature": recipe.temperature,
        "normalize": recipe.normalize,
        "max_epochs": recipe.max_epochs,
        "token_count": counting,
        **report,
        "corpus": corpus_state(corpus, recipe),
        "versions": tool_versions(),
        "seconds_selecting": round(time.time() - started, 3),
    }


# ---------------------------------------------------------------------------------------------
# Out of core: the pool lives in a DuckDB file under the root, never in this process.

# Histogram buckets per stratum: the exact pass after it sorts one bucket (~pool/BUCKETS rows).
BUCKETS = 1 << 16
_TWO53 = "'9007199254740992'::DOUBLE"


def noise_sql(seed: int, id_sql: str = "id") -> str:
    """SQL for a document's Gumbel(0,1) draw: -ln(-ln(u)), u from the MD5 of "<seed>:<id>".

    A hash, not a generator, so a draw depends on the document and the seed only: no state is
    carried between rows, shards or processes, and any subset reproduces the same keys."""
    u = f"((md5_number_upper('{int(seed)}:' || {id_sql}) >> 11)::DOUBLE + 0.5) / {_TWO53}"
    return f"(-ln(-ln({u})))"


def hash_gumbel(ids, seed: int) -> np.ndarray:
    """The draws of `noise_sql`, computed in Python (hashlib + libm): the independent reference."""
    import hashlib
    import math

    out = np.empty(len(ids), dtype=np.float64)
    for i, doc_id in enumerate(ids.to_pylist() if hasattr(ids, "to_pylist") else ids):
        h = int.from_bytes(hashlib.md5(f"{int(seed)}:{doc_id}".encode()).digest()[:8], "little")
        out[i] = -math.log(-math.log(((h >> 11) + 0.5) / 2.0**53))
    return out


def hash_order(score: np.ndarray, ids, recipe: Recipe) -> np.ndarray:
    """Take order with hash noise (rows in id order, ties by id): what `select` computes in SQL."""
    if recipe.strategy == "uniform":
        keys = hash_gumbel(ids, recipe.seed)
    elif recipe.strategy == "gumbel" and recipe.temperature:
        keys = score / recipe.temperature + hash_gumbel(ids, recipe.seed)
    else:
        keys = score
    return np.argsort(-keys, kind="stable")


def _double(x: float) -> str:
    """A float as a DuckDB DOUBLE literal that parses back to the same bits (0.1 alone is DECIMAL)."""
    return f"'{float(x)!r}'::DOUBLE"


def _connect(root: Path | str, work: Path, memory: str, threads: int | None):
    from assay.corpora.storage import duckdb_connect

    con = duckdb_connect(root, work / "work.duckdb")  # can read a URL root's shards
    con.execute(f"SET temp_directory = '{work / 'spill'}'")
    con.execute(f"SET memory_limit = '{memory}'")
    con.execute("SET preserve_insertion_order = false")  # every result that needs an order sorts
    con.execute("SET enable_progress_bar = false")  # long queries would draw one on stdout
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def _build_raw(con, root: Path, recipe: Recipe) -> None:
    """Views of the root in the work database, the recipe's SQL checked, and the filtered rows
    (ids, rank, strata, sizes, dedup mark) written once to the table `raw` (on disk)."""
    from assay.corpora.catalog import ident, view_statements
    from assay.pipelines.recipe import DEDUP

    for stmt in view_statements(root):
        con.execute(stmt)
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    if "annotations_stats" not in views:
        raise ValueError(f"{root}: no `stats` annotations; {STATS_HINT}")
    check_sql(recipe, con)
    names = {r[0] for r in con.execute("DESCRIBE annotations").fetchall()}
    tokens, chars = (ident(f"stats_{c}" if f"stats_{c}" in names else c) for c in ("tokens_est", "chars"))
    dup = ""
    if recipe.dedup:
        column, scorer = DEDUP[recipe.dedup]
        if column not in names:
            raise RecipeError(
                "dedup", f"the annotations have no `{column}` column; annotate with --scorer {scorer} first"
            )
        dup = f", CAST({ident(column)} AS BOOLEAN) AS __dup"
    score = f"CAST(({recipe.rank}) AS DOUBLE)" if recipe.rank else "NULL::DOUBLE"
    strata = "".join(f", CAST({ident(c)} AS VARCHAR) AS __s{i}" for i, c in enumerate(recipe.strata.columns))
    where = f" WHERE ({recipe.filter})" if recipe.filter else ""
    outer = "".join(f", __s{i}" for i in range(len(recipe.strata.columns)))

    def query(place: str, inner: str) -> str:
        return (
            f"SELECT {place}id, CASE WHEN isnan(__r) THEN NULL ELSE __r END AS __score{outer}, "
            f"__tokens, __chars{', __dup' if dup else ''} FROM (SELECT {inner}id, {score} AS __r{strata}, "
            f"{tokens} AS __tokens, {chars} AS __chars{dup} FROM annotations{where})"
        )

    # a window or subquery sees the whole view: such a recipe is evaluated on it in one query
    whole = any(_WHOLE.search(s or "") for s in (recipe.filter, recipe.rank))
    shards = None if whole or not _needs_shard_join(con, root) else _shard_views(con, root)
    if shards is None:  # where each document lies is found later, by a join with the docs shards
        con.execute(f"CREATE TABLE raw AS {query('NULL::BIGINT AS __f, NULL::BIGINT AS __row, ', '')}")
        return
    # One docs shard at a time: joining the annotation sets over the whole corpus needs hash
    # tables of every id, which under a small cap run out of memory (100M documents, 256 MB).
    # Each row keeps its docs shard (__f) and row in it (__row): no id join is needed later.
    for i, view in enumerate(shards):
        con.execute(view)
        con.execute(
            f"{'INSERT INTO raw' if i else 'CREATE TABLE raw AS'} {query('__f, __row, ', '__f, __row, ')}"
        )
    for stmt in view_statements(root):  # the whole-corpus view again, for whoever reads it next
        con.execute(stmt)


# Bytes per document and annotation set that joining the sets over the whole corpus takes in
# DuckDB's hash tables (an id and its row; a rough figure, not tuned): past half the memory cap
# the pool is joined shard by shard. Below it one query is faster, as the per-shard path runs a
# few queries per shard (at 100,000 tiny shards, minutes).
SHARD_JOIN_ROW_BYTES = 128


def _needs_shard_join(con, root: Path | str) -> bool:
    """Whether the whole-corpus join may not fit the cap, so the pool is built shard by shard."""
    from assay.corpora.ingest import parse_size
    from assay.corpora.manifest import load_manifest

    manifest = load_manifest(root)
    rows = sum(int(s.get("rows", 0)) for s in manifest["shards"])
    sets = sum(1 for e in manifest["annotations"].values() if e.get("kind") != "extractor")
    ((limit,),) = con.execute("SELECT current_setting('memory_limit')").fetchall()
    return rows * max(sets, 1) * SHARD_JOIN_ROW_BYTES > parse_size(limit.replace(" ", "")) / 2


# A recipe whose filter or rank holds one of these reads more than its own row.
_WHOLE = re.compile(r"\b(over|select)\b", re.IGNORECASE)


def _shard_views(con, root: Path | str) -> list[str] | None:
    """The `annotations` view restricted to each docs shard in turn (its docs joined with the
    same-named shard of every annotation set, which `annotate` writes for it), or None where an
    annotation shard holds an id its docs shard lacks: then only the whole-corpus join is right."""
    from assay.corpora.catalog import Sources, _parts, manifest_sources, parquet_list, view_statements
    from assay.corpora.manifest import load_manifest
    from assay.corpora.storage import join

    manifest = load_manifest(root)
    full = manifest_sources(root, manifest)
    if not full.annotations or not manifest.get("shards"):
        return None
    parts: dict[str, set] = {}
    for name, entry in manifest.get("annotations", {}).items():
        if entry.get("kind") != "extractor":
            for table in entry.get("columns") or {name: None}:
                parts[table] = set(_parts(entry, table, name))
    docs_parts = {Path(s["name"]).name for s in manifest["shards"]}
    if any(ps - docs_parts for ps in parts.values()):  # a set's shard named after no docs shard
        return None
    # the catalog's own statement, with placeholders where each shard's files go
    marks = {t: f"__assay_set_{i}__" for i, t in enumerate(full.annotations)}
    placeholder = Sources(
        docs=full.docs, annotations={t: (marks[t], cols) for t, (_, cols) in full.annotations.items()}
    )
    (template,) = [
        s for s in view_statements(root, placeholder) if s.startswith("CREATE OR REPLACE VIEW annotations AS")
    ]
    head = "CREATE OR REPLACE VIEW annotations AS SELECT d.id, "
    if template.count(" FROM docs d ") != 1 or not template.startswith(head):  # not a join known here
        return None
    base = join(root)
    index = {n: i for i, n in enumerate(_docs_files(root))}
    views = []
    for shard in manifest["shards"]:
        part = Path(shard["name"]).name
        path = f"{base}/{shard['name']}"
        docs = parquet_list([path])
        view = template.replace(" FROM docs d ", f" FROM {parquet_list([path], 'file_row_number=true')} d ")
        f = index[path]
        view = view.replace(
            head, f"{head[: -len('d.id, ')]}{f}::BIGINT AS __f, d.file_row_number AS __row, d.id, ", 1
        )
        for table, (src, _) in full.annotations.items():
            if part in parts.get(table, ()):
                ann = parquet_list([f"{base}/annotations/{table}/{part}"])
                ((stray,),) = con.execute(
                    f"SELECT count(*) FROM {ann} a ANTI JOIN {docs} d USING (id)"
                ).fetchall()
                if stray:
                    return None
            else:  # no shard of this set for these docs: its columns are NULL, as in the full join
                ann = f"(SELECT * FROM {src} LIMIT 0)"
            view = view.replace(marks[table], ann)
        views.append(view)
    return views


def _count_tokens_ooc(con, root: Path, tokenizer_path: str, batch_size: int = 512) -> None:
    """Real token counts for the pool, one docs shard at a time, into pool.tokens."""
    import pyarrow as pa
    from tokenizers import Tokenizer

    from assay.corpora.mixture import read_rows

    tok = Tokenizer.from_file(tokenizer_path)
    tok.no_truncation()
    tok.no_padding()
    con.execute("CREATE TABLE tok (id VARCHAR, tokens BIGINT)")
    for f, path in _locate(con, root, "pool", "c.id"):
        ids = _shard_rows(con, f, "id")
        if ids.num_rows == 0:
            continue
        texts = read_rows(path, ids.column("row").to_numpy(), ["text"]).column("text").to_pylist()
        counts = []
        for i in range(0, len(texts), batch_size):
            enc = tok.encode_batch([t or "" for t in texts[i : i + batch_size]], add_special_tokens=False)
            counts.extend(len(e.ids) for e in enc)
        con.register("chunk", pa.table({"id": ids.column("id"), "tokens": pa.array(counts, pa.int64())}))
        con.execute("INSERT INTO tok SELECT * FROM chunk").fetchall()  # done before the next con.sql
        con.unregister("chunk")
    con.execute("DROP TABLE loc")
    con.execute("UPDATE pool SET tokens = tok.tokens FROM tok WHERE pool.id = tok.id")


def _strata_keys(con, recipe: Recipe, keep: str) -> list[dict]:
    """The pool's distinct strata keys in the order the former planner gave them."""
    cols = [f"__s{i}" for i in range(len(recipe.strata.columns))]
    if not cols:
        return [{}]
    rows = con.execute(f"SELECT DISTINCT {', '.join(cols)} FROM raw WHERE {keep}").fetchall()
    keys = [dict(zip(recipe.strata.columns, r)) for r in rows]
    return sorted(keys, key=lambda k: [(v is not None, v or "") for v in k.values()])


def _register(con, name: str, columns: dict) -> None:
    import pyarrow as pa

    con.execute(f"DROP TABLE IF EXISTS {name}")
    con.register("__t", pa.table(columns))
    con.execute(f"CREATE TABLE {name} AS SELECT * FROM __t")
    con.unregister("__t")


def _plan_out_of_core(con, root: Path, recipe: Recipe) -> tuple[dict, dict, int]:
    """Build the table `chosen` (id, raw score, stratum, sizes, copies) from `raw`; return the
    manifest's report, the token counting note and the largest number of copies."""
    n, missing = con.execute("SELECT count(*), count(*) FILTER (__tokens IS NULL) FROM raw").fetchone()
    if n == 0:
        raise RecipeError("filter", "no document of the corpus passes it")
    if missing:
        raise ValueError(f"{missing} documents of the pool have no `stats` annotation; {STATS_HINT}")
    dropped: dict = {}
    keep = "true"
    if recipe.dedup:
        from assay.pipelines.recipe import DEDUP

        column, scorer = DEDUP[recipe.dedup]
        unmarked, removed = con.execute(
            "SELECT count(*) FILTER (__dup IS NULL), count(*) FILTER (NOT __dup) FROM raw"
        ).fetchone()
        if unmarked:
            raise ValueError(
                f"{unmarked} documents of the pool have no `{column}`; annotate with --scorer {scorer} first"
            )
        dropped["dedup"] = int(removed)
        keep = "__dup"
    if recipe.rank is not None:
        (nulls,) = con.execute(f"SELECT count(*) FROM raw WHERE {keep} AND __score IS NULL").fetchone()
        dropped["null_rank"] = int(nulls)
        keep += " AND __score IS NOT NULL"
    ranked = "__score"
    if recipe.normalize:
        mean, std = con.execute(f"SELECT avg(__score), stddev_pop(__score) FROM raw WHERE {keep}").fetchone()
        if mean is not None:
            ranked = (
                f"((__score - {_double(mean)}) / {_double(std)})"
                if std and std > 0
                else f"(__score - {_double(mean)})"
            )
    if recipe.threshold is not None:
        passing = f"({ranked} >= {_double(recipe.threshold)})"
        (below,) = con.execute(f"SELECT count(*) FROM raw WHERE {keep} AND NOT {passing}").fetchone()
        dropped["below_threshold"] = int(below)
        keep_all = f"{keep} AND {passing}"
    else:
        keep_all = keep
    (left,) = con.execute(f"SELECT count(*) FROM raw WHERE {keep_all}").fetchone()
    if left == 0:
        if dropped.get("below_threshold"):
            raise RecipeError("threshold", f"no document of the pool reaches {recipe.threshold}")
        if recipe.dedup and not dropped.get("null_rank"):
            raise RecipeError("dedup", "no document of the filtered pool is kept")
        raise RecipeError("rank", "is NULL for every document of the pool")
    keys = _strata_keys(con, recipe, keep_all)
    cols = [f"__s{i}" for i in range(len(recipe.strata.columns))]
    # the order key: descending, ties by id (the former planner's stable sort over id order)
    if recipe.strategy == "uniform":
        order_key = noise_sql(recipe.seed)
    elif recipe.strategy == "gumbel" and recipe.temperature:
        order_key = f"({ranked} / {_double(recipe.temperature)} + {noise_sql(recipe.seed)})"
    else:
        order_key = ranked
    if cols:
        _register(
            con,
            "keys",
            {
                "s": np.arange(len(keys), dtype=np.int64),
                **{c: [k[n] for k in keys] for c, n in zip(cols, recipe.strata.columns)},
            },
        )
        on = " AND ".join(f"r.{c} IS NOT DISTINCT FROM k.{c}" for c in cols)
        join, stratum = f" JOIN keys k ON {on}", "k.s"
    else:
        join, stratum = "", "0::BIGINT"
    removed_by_key = {}
    if recipe.dedup:  # per pool stratum; a key left with no document counts in pool.dropped only
        q = f"SELECT {stratum} AS s, count(*) FROM raw r{join} WHERE NOT __dup GROUP BY 1"
        removed_by_key = dict(con.execute(q).fetchall())
    # the generated names (__score, __dup, id) exist in `raw` only: no qualification needed
    con.execute(
        f"CREATE TABLE pool AS SELECT id, __score AS raw, {order_key} AS k, CAST(__tokens AS BIGINT) AS tokens, "
        f"CAST(__chars AS BIGINT) AS chars, {stratum} AS s, __f AS f, __row AS row FROM raw r{join} WHERE {keep_all}"
    )
    con.execute("DROP TABLE raw")
    if cols:
        con.execute("DROP TABLE keys")
    counting = {"method": "stats.tokens_est", "note": "UTF-8 bytes / 4 (scorers/stats.py)"}
    if recipe.tokenizer:
        from assay.corpora.shards import sha256_file

        _count_tokens_ooc(con, root, recipe.tokenizer)
        counting = {"method": "tokenizer", "path": recipe.tokenizer, "sha256": sha256_file(recipe.tokenizer)}
    budget = recipe.budget
    unit = budget.unit if budget else "docs"
    size = {"tokens": "tokens", "chars": "chars", "docs": "1"}[unit]
    agg = {
        r[0]: r[1:]
        for r in con.execute(
            f"SELECT s, count(*), sum(tokens), sum(chars), sum({size}), min(k), max(k) FROM pool GROUP BY s"
        ).fetchall()
    }
    n_strata = len(keys)
    pool_docs = np.array([agg[s][0] if s in agg else 0 for s in range(n_strata)], dtype=np.int64)
    pool_tokens = [int(agg[s][1]) if s in agg else 0 for s in range(n_strata)]
    pool_chars = [int(agg[s][2]) if s in agg else 0 for s in range(n_strata)]
    units = [int(agg[s][3]) if s in agg else 0 for s in range(n_strata)]
    unit_pool = np.array(units, dtype=np.float64)
    if budget is None:
        target, quotas, weights = None, None, unit_pool / max(unit_pool.sum(), 1)
    else:
        total = unit_pool.sum()
        target = budget.amount if budget.amount is not None else max(int(round(budget.fraction * total)), 1)
        weights = _leaf_weights(keys, recipe, unit_pool)
        quotas = largest_remainder(target, weights)
    full = np.zeros(n_strata, dtype=np.int64)
    rest = np.zeros(n_strata, dtype=np.int64)
    if quotas is None:
        full[:] = 1
    else:
        for s, key in enumerate(keys):
            _check_epochs(quotas[s], unit_pool[s], key, unit, recipe)
            if quotas[s] > 0 and units[s] > 0:
                full[s], rest[s] = divmod(int(quotas[s]), units[s])
    cut_k, cut_id = _cuts(con, agg, rest, size)
    has_cut = [s in cut_k for s in range(n_strata)]
    _register(
        con,
        "cuts",
        {
            "s": np.arange(n_strata, dtype=np.int64),
            "full": full,
            "has_cut": has_cut,
            "ck": [cut_k.get(s, 0.0) for s in range(n_strata)],
            "cid": [cut_id.get(s, "") for s in range(n_strata)],
        },
    )
    con.execute(
        f"CREATE TABLE chosen AS SELECT * FROM (SELECT p.id, p.raw, p.s, p.tokens, p.chars, p.f, p.row, {size} AS size, "
        "c.full + CASE WHEN c.has_cut AND (p.k > c.ck OR (p.k = c.ck AND p.id <= c.cid)) THEN 1 ELSE 0 END AS copies "
        "FROM pool p JOIN cuts c USING (s)) WHERE copies > 0"
    )
    con.execute("DROP TABLE pool")
    got = {
        r[0]: r[1:]
        for r in con.execute(
            "SELECT s, count(*), sum(copies), sum(tokens * copies), sum(chars * copies), sum(size * copies), "
            "count(*) FILTER (copies > 1), max(copies), min(raw), max(raw) FROM chosen GROUP BY s"
        ).fetchall()
    }
    strata_report = []
    for s, key in enumerate(keys):
        g = got.get(s, (0, 0, 0, 0, 0, 0, 0, None, None))
        item = {
            "key": key,
            "weight": round(float(weights[s]), 9),
            "quota": None if quotas is None else int(quotas[s]),
            "pool_docs": int(pool_docs[s]),
            "pool_tokens": pool_tokens[s],
            "pool_chars": pool_chars[s],
            "selected_docs": int(g[0]),
            "rows": int(g[1]),
            "tokens": int(g[2]),
            "chars": int(g[3]),
            "epochs": round(float(int(g[4]) / unit_pool[s]), 6) if unit_pool[s] else 0.0,
            "repeated_docs": int(g[5]),
            "max_copies": int(g[6]) if g[6] is not None else 0,
            "score_min": None if g[7] is None else float(g[7]),
            "score_max": None if g[8] is None else float(g[8]),
        }
        if recipe.dedup:
            item["dedup_removed"] = int(removed_by_key.get(s, 0))
        strata_report.append(item)
    sel = [sum(int(g[i]) for g in got.values()) for i in range(6)]
    max_copies = max((int(g[6]) for g in got.values()), default=0)
    report = {
        "budget": _budget_report(budget, unit, target, sel[4]),
        "pool": {
            "docs": int(pool_docs.sum()),
            "tokens": sum(pool_tokens),
            "chars": sum(pool_chars),
            "dropped": dropped,
        },
        "selected": {
            "docs": sel[0],
            "rows": sel[1],
            "tokens": sel[2],
            "chars": sel[3],
            "repeated_docs": sel[5],
            "max_copies": max_copies,
        },
        "strata": strata_report,
    }
    return report, counting, max_copies


def _cuts(con, agg: dict, rest: np.ndarray, size: str) -> tuple[dict, dict]:
    """For each stratum with a partial pass to fill (`rest` units), the last document taken:
    (its order key, its id). A histogram of units over the order key finds the bucket the cut
    falls in; only that bucket is then sorted (exact, ties by id)."""
    need = {s: int(r) for s, r in enumerate(rest) if r > 0}
    if not need:
        return {}, {}
    lo = [agg[s][4] for s in need]
    hi = [agg[s][5] for s in need]
    _register(
        con,
        "bounds",
        {
            "s": np.array(list(need), dtype=np.int64),
            "lo": np.array(lo, np.float64),
            "hi": np.array(hi, np.float64),
        },
    )
    bucket = (
        f"CASE WHEN b.hi > b.lo AND isfinite(b.hi - b.lo) AND isfinite(p.k) "
        f"THEN least({BUCKETS - 1}, floor((p.k - b.lo) / (b.hi - b.lo) * {BUCKETS}))::BIGINT ELSE 0 END"
    )
    hist = con.execute(
        f"SELECT p.s, {bucket} AS bucket, sum({size})::BIGINT FROM pool p JOIN bounds b USING (s) GROUP BY 1, 2"
    ).fetchall()
    by_s: dict = {}
    for s, b, u in hist:
        by_s.setdefault(s, []).append((b, u))
    boundary, left = {}, {}
    for s, r in need.items():
        acc = 0
        for b, u in sorted(by_s[s], reverse=True):
            if acc + u >= r:
                boundary[s], left[s] = b, r - acc
                break
            acc += u
    _register(
        con,
        "boundary",
        {
            "s": np.array(list(boundary), dtype=np.int64),
            "bucket": np.array(list(boundary.values()), dtype=np.int64),
        },
    )
    reader = con.sql(
        f"SELECT p.s, p.k, p.id, {size}::BIGINT AS size FROM pool p JOIN bounds b USING (s) "
        f"JOIN boundary c ON c.s = p.s AND c.bucket = {bucket} ORDER BY p.s, p.k DESC, p.id"
    ).to_arrow_reader(65_536)
    cut_k, cut_id = {}, {}
    acc: dict = {}
    done: set = set()
    for batch in reader:
        ss = batch.column(0).to_numpy()
        ks = batch.column(1).to_numpy()
        sizes = batch.column(3).to_numpy()
        ids = batch.column(2)
        for s in np.unique(ss).tolist():
            if s in done:
                continue
            idx = np.nonzero(ss == s)[0]
            got = acc.get(s, 0)
            # take while the running total before a row is short of what is left (take_until)
            before = got + np.cumsum(sizes[idx]) - sizes[idx]
            taken = idx[before < left[s]]
            if len(taken):
                last = int(taken[-1])
                cut_k[s], cut_id[s] = float(ks[last]), ids[last].as_py()
                acc[s] = int(got + sizes[taken].sum())
            if acc.get(s, 0) >= left[s]:
                done.add(s)
        if len(done) == len(left):
            break
    reader.close()  # the rest of the sorted bucket is not needed
    con.execute("DROP TABLE bounds")
    con.execute("DROP TABLE boundary")
    return cut_k, cut_id


def _docs_files(root: Path | str) -> list[str]:
    """The docs shards `docs_shards_sql` reads, sorted as the former `ORDER BY filename` was."""
    from assay.corpora.manifest import load_manifest
    from assay.corpora.storage import join

    return sorted(join(root, s["name"]) for s in load_manifest(root)["shards"])


def _locate(con, root: Path | str, table: str, columns: str) -> list[tuple[int, Path | str]]:
    """Write `loc` (f, row, *columns): every row of `table` (alias c) located in the docs
    shards, `f` being its shard's index in name order; return (f, shard) for every shard.
    `loc` is stored in (f, row) order, so reading one shard's rows touches its row groups only."""
    from assay.corpora.mixture import docs_shards_sql

    names = _docs_files(root)
    (unplaced,) = con.execute(f"SELECT count(*) FILTER (f IS NULL) FROM {table}").fetchone()
    # kept for this statement only: the stored order is what lets a shard's scan skip the rest
    con.execute("SET preserve_insertion_order = true")
    if not unplaced:  # built shard by shard: the places are known, no join of every id
        con.execute(f"CREATE TABLE loc AS SELECT c.f, c.row, {columns} FROM {table} c ORDER BY c.f, c.row")
    else:
        _register(con, "files", {"f": np.arange(len(names), dtype=np.int64), "filename": names})
        con.execute(
            f"CREATE TABLE loc AS SELECT f.f, d.file_row_number AS row, {columns} FROM {table} c "
            f"JOIN {docs_shards_sql(root)} d USING (id) JOIN files f USING (filename) ORDER BY f.f, row"
        )
        con.execute("DROP TABLE files")
    con.execute("SET preserve_insertion_order = false")
    # fetchall, not fetchone: a result left open would block the con.sql reads that follow
    ((found,),) = con.execute("SELECT count(*) FROM loc").fetchall()
    ((wanted,),) = con.execute(f"SELECT count(*) FROM {table}").fetchall()
    if found != wanted:
        raise ValueError(f"{wanted - found} selected ids are not in the docs shards of {root}")
    return [(i, n if "://" in n else Path(n)) for i, n in enumerate(names)]  # URL shards stay URLs


def _shard_rows(con, f: int, columns: str, where: str = "true"):
    """One docs shard's rows of `loc` (ascending) with `columns`, as an Arrow table: one query
    per shard, so this process holds one shard's selection at a time, whatever the corpus."""
    return con.sql(
        f"SELECT row, {columns} FROM loc WHERE f = {int(f)} AND {where} ORDER BY row"
    ).to_arrow_table()


def _pieces(con, root: Path | str, max_copies: int):
    """(docs shard, rows, scores, copy) for the mixture writer: every chosen document located
    once in the docs shards, then streamed pass by pass in (shard, row) order."""
    files = _locate(con, root, "chosen", "c.copies, c.raw")
    con.execute("DROP TABLE chosen")
    # the most copies in each shard: a pass skips the shards it has nothing left to take from
    most = dict(con.execute("SELECT f, max(copies) FROM loc GROUP BY f").fetchall())

    def stream():
        for copy in range(max_copies):
            for f, path in files:
                if most.get(f, 0) > copy:
                    t = _shard_rows(con, f, "raw", f"copies > {copy}")
                    yield (
                        path,
                        t.column("row").to_numpy(),
                        t.column("raw").to_numpy(zero_copy_only=False),
                        copy,
                    )

    return stream()


def select(
    root: str | Path,
    recipe: Recipe,
    name: str,
    recipe_text: str | None = None,
    force: bool = False,
    memory: str | None = None,
    threads: int | None = None,
) -> dict:
    """Check everything, choose documents, then write `mixtures/<name>/`; returns its manifest.
    A mixture of this name selected with the same recipe from the corpus as it is now is not
    selected again: its manifest comes back with `already_selected` (`force` reselects).

    Out of core: the filtered pool goes to a DuckDB file under `.assay/tmp/`, per-stratum cuts
    come from histograms plus one sorted boundary bucket, and the chosen documents stream to the
    writer one docs shard at a time. DuckDB holds at most `memory` (else the recipe's `memory`,
    else DEFAULT_MEMORY) and spills to that folder beyond it; `threads` caps its threads."""
    import shutil
    import uuid

    import duckdb

    from assay.corpora.manifest import load_manifest, local_state_dir, require_root
    from assay.corpora.mixture import check_name, write_mixture_pieces
    from assay.pipelines.recipe import DEFAULT_MEMORY, check_memory

    root = require_root(root)  # a URL root (s3://) is read in place: ids, scores, then chosen rows
    corpus = load_manifest(root)  # read once: the manifest records the state this run selects from
    if not force and (done := _already_selected(root, name, recipe, corpus)) is not None:
        return done
    started = time.time()
    check_name(root, name, force)
    memory = check_memory(memory, "--memory") if memory is not None else (recipe.memory or DEFAULT_MEMORY)
    base = local_state_dir(root) / "tmp"  # ROOT/.assay/tmp; for a URL root under $ASSAY_CACHE
    for stale in base.glob(f"select-{name}-*"):  # left by a killed run of this name
        shutil.rmtree(stale, ignore_errors=True)
    work = base / f"select-{name}-{uuid.uuid4().hex[:8]}"
    (work / "spill").mkdir(parents=True)
    try:
        con = _connect(root, work, memory, threads)
        try:
            _build_raw(con, root, recipe)
            report, counting, max_copies = _plan_out_of_core(con, root, recipe)
            manifest = _manifest(root, name, recipe, counting, report, started, corpus)
            return write_mixture_pieces(
                root, name, _pieces(con, root, max_copies), manifest, recipe_text, force
            )
        except duckdb.OutOfMemoryException as exc:
            raise ValueError(
                f"selection ran out of memory under the {memory} cap ({str(exc).splitlines()[0]}); "
                "raise --memory or the recipe's `memory`"
            ) from None
        except duckdb.Error as exc:  # e.g. a rank that fails on some row: one line, not a traceback
            raise ValueError(f"selection failed in DuckDB: {str(exc).splitlines()[0]}") from None
        finally:
            con.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
