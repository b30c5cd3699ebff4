"""Fact sets: the (subject, relation, object) probes a corpus is searched for, as in the SMI paper.

`assay facts add NAME FILE` stores a set as ``facts/NAME.parquet``, one row per fact:

    fact_id       int64   the source's own integer id (``idx`` in the SMI ParaRel file), else the
                          0-based row number in reading order (stable for the same input)
    subj, rel, obj string  exactly as the source spells them (no trimming: matching is exact)
    source_id     string  the source's own id as text (the T-REx ``uuid``), null when it has none
    subj_pattern, obj_pattern  int32  ids of the search strings ``" " + subj`` and ``" " + obj``

The search strings are the distinct values of ``" " + subj`` and ``" " + obj`` (SMI paper,
arXiv 2502.04066, code ``search/``: a case-sensitive substring test with a leading space), sorted
by code point; a pattern id is its position in that order. The fact-mention extractor
(`scorers.facts`) writes, per docs shard, ``triples/facts_NAME/part-NNNNN.parquet`` with one row
per document that contains at least one pattern: ``doc_id`` and the sorted ``list<int32>`` of the
pattern ids found. ``--scorer facts:NAME:word`` (word-bounded matching) writes ``facts_NAME_word``.
The catalog turns these into per-fact document counts (`corpora.fact_counts`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa

FACTS_DIR = "facts"
FORMATS = ("auto", "pararel", "trex", "csv", "parquet")
MATCH_MODES = ("substring", "word")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")

FACT_SCHEMA = pa.schema(
    [
        ("fact_id", pa.int64()),
        ("subj", pa.string()),
        ("rel", pa.string()),
        ("obj", pa.string()),
        ("source_id", pa.string()),
        ("subj_pattern", pa.int32()),
        ("obj_pattern", pa.int32()),
    ]
)
MENTION_SCHEMA = pa.schema([("doc_id", pa.string()), ("patterns", pa.list_(pa.int32()))])

# Column names accepted for each field, in order of preference (ParaRel/SMI, T-REx/LAMA, tables).
_ALIASES = {
    "subj": ("subj", "subject", "sub_label", "sub_surface", "head"),
    "rel": ("rel", "relation", "predicate_id", "predicate", "pred"),
    "obj": ("obj", "object", "obj_label", "obj_surface", "tail"),
    "id": ("fact_id", "idx", "id", "uuid"),
}


def check_name(name: str) -> str:
    """Fact-set names become folder and view names: lowercase letters, digits and underscores."""
    if not _NAME_RE.match(name or ""):
        raise ValueError(f"fact set name {name!r}: use lowercase letters, digits and _ (e.g. pararel)")
    if name.endswith("_word"):
        raise ValueError(f"fact set name {name!r}: names may not end in _word (reserved for --match word)")
    return name


def fact_set_path(root: str | Path, name: str) -> Path:
    return Path(root) / FACTS_DIR / f"{name}.parquet"


def mention_table_name(fact_set: str, match: str = "substring") -> str:
    """The folder under triples/ (and the catalog view) holding a set's mentions in one match mode."""
    if match not in MATCH_MODES:
        raise ValueError(f"match mode {match!r}: use one of {', '.join(MATCH_MODES)}")
    return f"facts_{fact_set}" if match == "substring" else f"facts_{fact_set}_word"


def counted_label(fact_set: str, match: str = "substring") -> str:
    """`fact_set` value in fact_counts: the name for the paper's matching, NAME:word otherwise."""
    return fact_set if match == "substring" else f"{fact_set}:word"


# ---- reading sources ----------------------------------------------------------------------------
def _open_text(path: Path):
    return (
        gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz") else open(path, encoding="utf-8")
    )


def _json_rows(path: Path) -> list[dict]:
    """A JSON array (the SMI file), an object of objects keyed by id, or JSON lines; .gz is fine."""
    with _open_text(path) as f:
        text = f.read()
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None  # JSON lines (a second value follows the first)
    if isinstance(whole, list):
        return whole
    if isinstance(whole, dict):
        if whole and all(isinstance(v, dict) for v in whole.values()):
            return [dict(v, idx=int(k) if k.isdigit() else k) for k, v in whole.items()]
        return [whole]
    rows = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
    return rows


def _detect_format(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir():
        return "trex"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz")):
        return "csv"
    if name.endswith((".jsonl", ".jsonl.gz")):
        return "trex"
    if name.endswith((".json", ".json.gz")):
        return "pararel"
    raise ValueError(f"{path}: cannot tell the format from the name; pass --format pararel|trex|csv|parquet")


def _read_source(path: Path, fmt: str) -> tuple[dict[str, list], list[str | None]]:
    """Columns of the source (by their own names) and, per row, the relation from its file name."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return {c: table.column(c).to_pylist() for c in table.column_names}, [None] * table.num_rows
    if fmt == "csv":
        import pyarrow.csv as pacsv

        opts = pacsv.ParseOptions(delimiter="\t" if ".tsv" in path.name.lower() else ",")
        table = pacsv.read_csv(path, parse_options=opts)
        return {c: table.column(c).to_pylist() for c in table.column_names}, [None] * table.num_rows
    files = (
        sorted(p for p in path.iterdir() if p.name.endswith((".jsonl", ".jsonl.gz")))
        if path.is_dir()
        else [path]
    )
    if not files:
        raise ValueError(f"{path}: no .jsonl files in this folder (expected the T-REx layout P*.jsonl)")
    rows, file_rel = [], []
    for f in files:
        part = _json_rows(f)
        rows.extend(part)
        # T-REx/LAMA files carry no relation field: the file is named after it (P17.jsonl)
        file_rel.extend([re.sub(r"\.jsonl?(\.gz)?$", "", f.name)] * len(part))
    keys = list(dict.fromkeys(k for r in rows[:1000] for k in r)) if rows else []
    return {k: [r.get(k) for r in rows] for k in keys}, file_rel


def _pick(columns: dict[str, list], field: str) -> str | None:
    lower = {c.lower(): c for c in columns}
    return next((lower[a] for a in _ALIASES[field] if a in lower), None)


def read_facts(path: str | Path, fmt: str = "auto") -> pa.Table:
    """A fact file as (fact_id, subj, rel, obj, source_id) rows, validated; errors name the row."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such fact file")
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    fmt = _detect_format(path) if fmt == "auto" else fmt
    columns, file_rel = _read_source(path, fmt)
    subj_col, obj_col, rel_col, id_col = (_pick(columns, f) for f in ("subj", "obj", "rel", "id"))
    if subj_col is None or obj_col is None:
        raise ValueError(
            f"{path}: no subject/object columns among {sorted(columns)}; expected subj/obj (ParaRel), "
            "sub_label/obj_label (T-REx) or subject/relation/object"
        )
    subj, obj = columns[subj_col], columns[obj_col]
    rel = [None if v is None else str(v) for v in columns[rel_col]] if rel_col else file_rel
    for i, (s, o) in enumerate(zip(subj, obj)):
        for field, value in ((subj_col, s), (obj_col, o)):
            if not isinstance(value, str) or value == "":
                raise ValueError(
                    f"{path}: row {i + 1}: {field} is {value!r}; every fact needs a non-empty string"
                )
    raw_ids = columns[id_col] if id_col else None
    if raw_ids is not None and all(isinstance(v, int) and not isinstance(v, bool) for v in raw_ids):
        fact_ids = list(raw_ids)
    else:
        fact_ids = list(range(len(subj)))
    if len(set(fact_ids)) != len(fact_ids):
        dup = Counter(fact_ids).most_common(1)[0][0]
        raise ValueError(f"{path}: {id_col} {dup} appears more than once; fact ids must be unique")
    source_ids = (
        [None if v is None else str(v) for v in raw_ids] if raw_ids is not None else [None] * len(subj)
    )
    return pa.table(
        {"fact_id": fact_ids, "subj": subj, "rel": rel, "obj": obj, "source_id": source_ids},
        schema=pa.schema(list(FACT_SCHEMA)[:5]),
    )


def with_patterns(facts: pa.Table) -> pa.Table:
    """Add subj_pattern / obj_pattern: ids of the distinct strings " " + subj and " " + obj."""
    subj = [" " + s for s in facts.column("subj").to_pylist()]
    obj = [" " + o for o in facts.column("obj").to_pylist()]
    index = {p: i for i, p in enumerate(sorted(set(subj) | set(obj)))}
    facts = facts.append_column("subj_pattern", pa.array([index[p] for p in subj], pa.int32()))
    return facts.append_column("obj_pattern", pa.array([index[p] for p in obj], pa.int32()))


def pattern_strings(facts: pa.Table) -> list[str]:
    """The search string of every pattern id of a stored fact set."""
    out: dict[int, str] = {}
    for col, pat in (("subj", "subj_pattern"), ("obj", "obj_pattern")):
        for s, i in zip(facts.column(col).to_pylist(), facts.column(pat).to_pylist()):
            out[i] = " " + s
    return [out[i] for i in range(len(out))]


# ---- registering and listing --------------------------------------------------------------------
def add_fact_set(
    root: str | Path, name: str, path: str | Path, fmt: str = "auto", replace: bool = False
) -> dict[str, Any]:
    """Read a fact file into ``facts/NAME.parquet``; replacing a set drops its stale mention tables."""
    from assay.corpora.catalog import refresh_catalog
    from assay.corpora.manifest import require_root
    from assay.corpora.shards import write_table_atomic

    root = require_root(root)
    check_name(name)
    target = fact_set_path(root, name)
    if target.exists() and not replace:
        raise ValueError(
            f"fact set {name!r} is already registered ({target}); pass --replace to overwrite it"
        )
    fmt = _detect_format(Path(path)) if fmt == "auto" and Path(path).exists() else fmt
    facts = with_patterns(read_facts(path, fmt))
    digest = hashlib.sha256(json.dumps(pattern_strings(facts)).encode()).hexdigest()
    meta = {"source": str(Path(path).resolve()), "format": fmt, "patterns_sha256": digest}
    facts = facts.replace_schema_metadata({"assay.facts": json.dumps(meta)})
    old_digest = read_meta(target).get("patterns_sha256") if target.exists() else None
    write_table_atomic(facts, target)
    if old_digest != digest:  # pattern ids changed: mention tables of the old set would be miscounted
        for match in MATCH_MODES:
            shutil.rmtree(root / "triples" / mention_table_name(name, match), ignore_errors=True)
    if (root / "manifest.json").exists():
        refresh_catalog(root)
    n_patterns = len(pattern_strings(facts))
    return {"name": name, "path": str(target), "facts": facts.num_rows, "patterns": n_patterns, **meta}


def read_meta(path: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    raw = (pq.read_schema(path).metadata or {}).get(b"assay.facts")
    return json.loads(raw) if raw else {}


def registered_sets(root: str | Path) -> dict[str, Path]:
    """Registered fact sets by name (files whose names are valid set names)."""
    base = Path(root) / FACTS_DIR
    if not base.is_dir():
        return {}
    out = {}
    for p in sorted(base.glob("*.parquet")):
        if not p.name.startswith(".") and _NAME_RE.match(p.stem) and not p.stem.endswith("_word"):
            out[p.stem] = p
    return out


def load_fact_set(root: str | Path, name: str) -> pa.Table:
    import pyarrow.parquet as pq

    path = fact_set_path(root, check_name(name))
    if not path.exists():
        known = ", ".join(registered_sets(root)) or "none"
        raise ValueError(
            f"{path}: no fact set {name!r} (registered: {known}); run `assay facts add {name} FILE --root {root}`"
        )
    return pq.read_table(path)


def annotated_shards(root: Path, folder: str) -> tuple[int, int]:
    """(docs shards with a mention file, docs shards) for one triples/ folder."""
    docs = {p.name for p in (root / "docs").glob("part-*.parquet")}
    done = {p.name for p in (root / "triples" / folder).glob("part-*.parquet")} if docs else set()
    return len(docs & done), len(docs)


def list_fact_sets(root: str | Path) -> list[dict[str, Any]]:
    """One entry per set: facts, patterns, source and how far each match mode is annotated."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    root = Path(root)
    out = []
    for name, path in registered_sets(root).items():
        meta = read_meta(path)
        table = pq.read_table(path, columns=["subj_pattern", "obj_pattern"])
        n_patterns = max(pc.max(table.column(c)).as_py() or 0 for c in table.column_names) + 1
        annotated = {}
        for match in MATCH_MODES:
            done, total = annotated_shards(root, mention_table_name(name, match))
            if done or match == "substring":
                annotated[match] = f"{done}/{total} shards"
        out.append(
            {
                "name": name,
                "facts": table.num_rows,
                "patterns": n_patterns,
                "source": meta.get("source"),
                **annotated,
            }
        )
    return out


# ---- catalog: fact_counts and its subset macros -------------------------------------------------
_EMPTY_FACTS = (
    "SELECT NULL::VARCHAR AS fact_set, NULL::BIGINT AS fact_id, NULL::VARCHAR AS subj, NULL::VARCHAR AS rel, "
    "NULL::VARCHAR AS obj, NULL::VARCHAR AS source_id, NULL::INTEGER AS subj_pattern, "
    "NULL::INTEGER AS obj_pattern WHERE false"
)
_EMPTY_MENTIONS = (
    "SELECT NULL::VARCHAR AS fact_set, NULL::VARCHAR AS doc_id, NULL::INTEGER[] AS patterns WHERE false"
)
# a document repeated k times in a mixture is seen k times by the model, so it counts k times
_MIXTURE_DOCS = (
    "SELECT id, count(*) AS w FROM query_table('mixture_' || regexp_replace(lower(mixture_name), "
    "'[^a-z0-9_]', '_', 'g')) GROUP BY id"
)
_MIXTURE_N = "SELECT count(*) FROM query_table('mixture_' || regexp_replace(lower(mixture_name), '[^a-z0-9_]', '_', 'g'))"


def _counts_sql(counted: str, docs: str | None, n_docs: str) -> str:
    """Per-fact 2x2 document table over the documents `docs` (id, w) yields, or every document.

    n_subj / n_obj: documents whose pattern list holds the fact's subject / object pattern;
    n_both: those holding both. Facts of a set whose mentions are not complete get null counts.
    """
    weighted = (
        f"sel AS ({docs}), m AS (SELECT fm.fact_set, fm.patterns, sel.w FROM fact_mentions fm "
        "JOIN sel ON sel.id = fm.doc_id)"
        if docs
        else "m AS (SELECT fact_set, patterns, 1 AS w FROM fact_mentions)"
    )
    cell = "CASE WHEN f.counted THEN coalesce({}.n, 0) END::BIGINT"
    return f"""
WITH f AS ({counted}),
{weighted},
u AS (SELECT fact_set, patterns, w, unnest(patterns) AS p FROM m),
per_pattern AS (SELECT fact_set, p, sum(w) AS n FROM u GROUP BY fact_set, p),
both_cell AS (
  SELECT f.fact_set, f.fact_id, sum(u.w) AS n FROM u
  JOIN f ON f.fact_set = u.fact_set AND f.subj_pattern = u.p
  WHERE list_contains(u.patterns, f.obj_pattern)
  GROUP BY f.fact_set, f.fact_id),
c AS (
  SELECT f.fact_set, f.fact_id, f.subj, f.rel, f.obj, ({n_docs})::BIGINT AS n_docs,
    {cell.format("s")} AS n_subj, {cell.format("o")} AS n_obj, {cell.format("b")} AS n_both
  FROM f
  LEFT JOIN per_pattern s ON s.fact_set = f.fact_set AND s.p = f.subj_pattern
  LEFT JOIN per_pattern o ON o.fact_set = f.fact_set AND o.p = f.obj_pattern
  LEFT JOIN both_cell b ON b.fact_set = f.fact_set AND b.fact_id = f.fact_id)
SELECT fact_set, fact_id, subj, rel, obj, n_docs, n_subj, n_obj, n_both,
  n_subj - n_both AS s1o0, n_obj - n_both AS s0o1, n_docs - n_subj - n_obj + n_both AS s0o0
FROM c ORDER BY fact_set, fact_id"""


def catalog_statements(root: Path) -> list[str]:
    """Views `facts`, `fact_mentions`, `fact_counts` and the macros `fact_counts_where(sql)` and
    `fact_counts_mixture(name)` (a catalog extension: see CATALOG_EXTENSIONS in corpora.catalog).

    `fact_counts` has one row per fact of every registered set (and per set annotated with
    ``facts:NAME:word``, labelled ``NAME:word``); counts are null until every docs shard has its
    mention file, so a half-annotated corpus never passes for a smaller one.
    """
    from assay.corpora.catalog import parquet_glob, sql_literal

    root = Path(root).resolve()
    facts, counted, mentions = [], [], []
    for name, path in registered_sets(root).items():
        src = f"read_parquet({sql_literal(str(path.resolve()))})"
        cols = "fact_id, subj, rel, obj"
        facts.append(
            f"SELECT {sql_literal(name)} AS fact_set, {cols}, source_id, subj_pattern, obj_pattern FROM {src}"
        )
        for match in MATCH_MODES:
            folder = mention_table_name(name, match)
            done, total = annotated_shards(root, folder)
            if match != "substring" and not done:
                continue
            label = sql_literal(counted_label(name, match))
            complete = total > 0 and done == total
            counted.append(
                f"SELECT {label} AS fact_set, {cols}, subj_pattern, obj_pattern, {complete} AS counted FROM {src}"
            )
            if complete:
                mentions.append(
                    f"SELECT {label} AS fact_set, doc_id, patterns FROM {parquet_glob(root / 'triples' / folder)}"
                )
    # a root without fact sets still has the views (empty), so queries on them never fail
    union = " UNION ALL ".join(counted) or f"SELECT *, NULL::BOOLEAN AS counted FROM ({_EMPTY_FACTS})"
    where_docs = "SELECT id, 1 AS w FROM query('SELECT id FROM annotations WHERE ' || where_sql)"
    return [
        "CREATE OR REPLACE VIEW facts AS " + (" UNION ALL ".join(facts) or _EMPTY_FACTS),
        "CREATE OR REPLACE VIEW fact_mentions AS " + (" UNION ALL ".join(mentions) or _EMPTY_MENTIONS),
        "CREATE OR REPLACE VIEW fact_counts AS " + _counts_sql(union, None, "SELECT count(*) FROM docs"),
        "CREATE OR REPLACE MACRO fact_counts_where(where_sql) AS TABLE "
        + _counts_sql(union, where_docs, f"SELECT count(*) FROM ({where_docs})"),
        "CREATE OR REPLACE MACRO fact_counts_mixture(mixture_name) AS TABLE "
        + _counts_sql(union, _MIXTURE_DOCS, _MIXTURE_N),
    ]


def read_fact_counts(root: str | Path, facts: str, where: str | None = None, mixture: str | None = None):
    """The fact_counts rows of one fact set: whole corpus, a SQL selection of documents, or a mixture."""
    import duckdb

    from assay.corpora.catalog import open_catalog, sql_literal

    catalog = Path(root) / "catalog.duckdb"
    if where is not None:
        source = f"fact_counts_where({sql_literal(where)})"
    elif mixture is not None:
        source = f"fact_counts_mixture({sql_literal(mixture)})"
    else:
        source = "fact_counts"
    con = open_catalog(root, read_only=True)  # rebuilds stale views first, like every catalog reader
    try:
        counts = con.sql(f"SELECT * FROM {source} WHERE fact_set = $facts", params={"facts": facts}).pl()
    except duckdb.Error as e:
        raise ValueError(f"{catalog}: {str(e).splitlines()[0]}\n  FROM {source}") from None
    finally:
        con.close()
    if counts.height == 0:
        raise ValueError(f"no facts of set {facts!r} in {source}; `assay facts list` shows the sets")
    return counts
