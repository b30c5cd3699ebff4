"""Fact sets and the catalog's fact counts: formats, subsets, mixtures, partial annotation, CLI."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import FIXTURES

from assay.corpora.catalog import run_query
from assay.corpora.facts import add_fact_set, list_fact_sets, read_facts
from assay.corpora.ingest import IngestOptions
from assay.pipelines.annotate import annotate
from assay.pipelines.cli import main
from assay.pipelines.ingest import ingest

CORPUS = FIXTURES / "facts" / "corpus.jsonl.gz"
TREX = FIXTURES / "facts" / "trex"
COLUMNS = [
    "fact_set",
    "fact_id",
    "subj",
    "rel",
    "obj",
    "n_docs",
    "n_subj",
    "n_obj",
    "n_both",
    "s1o0",
    "s0o1",
    "s0o0",
]


def docs_by_id() -> dict[str, dict]:
    return {d["id"]: d for d in map(json.loads, gzip.open(CORPUS, "rt", encoding="utf-8"))}


def reference(texts: list[str], facts: list[dict]) -> dict[int, tuple[int, int, int, int]]:
    """(n_docs, n_subj, n_obj, n_both) per fact over `texts` (a document may appear twice)."""
    out = {}
    for f in facts:
        s = [(" " + f["subj"]) in t for t in texts]
        o = [(" " + f["obj"]) in t for t in texts]
        out[f["fact_id"]] = (len(texts), sum(s), sum(o), sum(a and b for a, b in zip(s, o)))
    return out


def cells(rows: list[dict]) -> dict[int, tuple[int, int, int, int]]:
    return {r["fact_id"]: (r["n_docs"], r["n_subj"], r["n_obj"], r["n_both"]) for r in rows}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fact_counts") / "root"
    ingest([str(CORPUS)], root, IngestOptions(shard_rows=120), quiet=True)  # three docs shards
    add_fact_set(root, "trex", TREX)
    annotate(root, ["facts:trex"], quiet=True)
    return root


@pytest.fixture(scope="module")
def trex_facts(root) -> list[dict]:
    return run_query(root, "SELECT fact_id, subj, obj FROM facts WHERE fact_set = 'trex'").to_pylist()


def test_reading_the_trex_layout():
    t = read_facts(TREX)
    assert t.num_rows == 929 and t.column_names == ["fact_id", "subj", "rel", "obj", "source_id"]
    assert t.column("fact_id").to_pylist() == list(range(929))  # no integer id in T-REx: row order
    rels = set(t.column("rel").to_pylist())
    assert rels == {p.stem for p in TREX.glob("P*.jsonl")}
    first = json.loads((TREX / "P103.jsonl").read_text(encoding="utf-8").splitlines()[0])
    row = t.slice(0, 1).to_pylist()[0]
    assert (row["subj"], row["obj"], row["source_id"], row["rel"]) == (
        first["sub_label"],
        first["obj_label"],
        first["uuid"],
        "P103",
    )


def test_csv_parquet_and_pararel_layouts_give_the_same_facts(tmp_path):
    t = read_facts(TREX)
    rows = t.to_pylist()
    with open(tmp_path / "f.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["subject", "relation", "object"])
        w.writerows((r["subj"], r["rel"], r["obj"]) for r in rows)
    pq.write_table(
        pa.table({"Subject": t["subj"], "Relation": t["rel"], "Object": t["obj"]}), tmp_path / "f.parquet"
    )
    arr = [{"idx": 1000 + i, "subj": r["subj"], "rel": r["rel"], "obj": r["obj"]} for i, r in enumerate(rows)]
    with gzip.open(tmp_path / "f.json.gz", "wt", encoding="utf-8") as f:
        json.dump(arr, f)
    triples = [(r["subj"], r["rel"], r["obj"]) for r in rows]
    for name in ("f.csv", "f.parquet", "f.json.gz"):
        got = read_facts(tmp_path / name).to_pylist()
        assert [(r["subj"], r["rel"], r["obj"]) for r in got] == triples, name
    pararel = read_facts(tmp_path / "f.json.gz").column("fact_id").to_pylist()
    assert pararel == [1000 + i for i in range(len(rows))]  # the source's own integer id is kept


def test_bad_inputs_name_the_problem(tmp_path, root):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sub_label": "Paris", "obj_label": "France"}\n{"sub_label": "", "obj_label": "x"}\n')
    with pytest.raises(ValueError, match="row 2: sub_label is ''"):
        read_facts(bad)
    with pytest.raises(ValueError, match="lowercase"):
        add_fact_set(root, "T-Rex", TREX)
    with pytest.raises(ValueError, match="already registered"):
        add_fact_set(root, "trex", TREX)


def test_fact_counts_columns_and_whole_corpus_counts(root, trex_facts):
    table = run_query(root, "SELECT * FROM fact_counts WHERE fact_set = 'trex'")
    assert table.column_names == COLUMNS and table.num_rows == 929
    docs = docs_by_id()
    rows = table.to_pylist()
    assert cells(rows) == reference([d["text"] for d in docs.values()], trex_facts)
    for r in rows:
        assert r["s1o0"] + r["s0o1"] + r["s0o0"] + r["n_both"] == r["n_docs"] == len(docs)


def test_fact_counts_where_counts_only_the_selected_documents(root, trex_facts):
    docs = docs_by_id()
    selected = [d["text"] for d in docs.values() if d["source"] in ("qa_wikidata", "inaugural")]
    rows = run_query(
        root,
        "SELECT * FROM fact_counts_where('source IN (''qa_wikidata'', ''inaugural'')') WHERE fact_set = 'trex'",
    ).to_pylist()
    assert cells(rows) == reference(selected, trex_facts)
    assert rows[0]["n_docs"] == 287
    none = run_query(root, "SELECT max(n_docs), max(n_subj) FROM fact_counts_where('false')").to_pylist()[0]
    assert list(none.values()) == [0, 0]


def test_fact_counts_mixture_counts_repeated_documents_each_time(root, trex_facts):
    docs_table = pq.read_table(root / "docs").sort_by("id")
    ids = docs_table.column("id").to_pylist()
    take = list(range(0, len(ids), 3)) + list(range(0, 60, 3))  # the first 20 picks appear twice
    folder = root / "mixtures" / "Web Mix"
    folder.mkdir(parents=True)
    pq.write_table(docs_table.take(take), folder / "part-00000.parquet")
    try:
        docs = docs_by_id()
        rows = run_query(
            root, "SELECT * FROM fact_counts_mixture('Web Mix') WHERE fact_set = 'trex'"
        ).to_pylist()
        assert cells(rows) == reference([docs[ids[i]]["text"] for i in take], trex_facts)
        assert rows[0]["n_docs"] == len(take)
    finally:
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()


def test_macros_work_read_only_from_another_directory(root, tmp_path):
    code = (
        "import duckdb, sys\n"
        f"con = duckdb.connect({str(root / 'catalog.duckdb')!r}, read_only=True)\n"
        "print(con.sql(\"SELECT sum(n_both) FROM fact_counts_where('source = ''dolma-cc''')\").fetchall()[0][0])\n"
        "print(con.sql('SELECT sum(n_both) FROM fact_counts').fetchall()[0][0])\n"
    )
    run_query(root, "SELECT 1")  # the catalog is current
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    web, whole = map(int, out.stdout.split())
    assert 0 < web < whole


def test_counts_are_null_until_every_shard_is_annotated(root):
    part = sorted((root / "triples" / "facts_trex").glob("part-*.parquet"))[1]
    saved = part.read_bytes()
    part.unlink()
    try:
        row = run_query(root, "SELECT count(n_subj) AS c, max(n_docs) AS n FROM fact_counts").to_pylist()[0]
        assert row == {"c": 0, "n": 329}
        assert list_fact_sets(root)[0]["substring"] == "2/3 shards"
    finally:
        part.write_bytes(saved)
    assert run_query(root, "SELECT count(n_subj) FROM fact_counts").column(0)[0].as_py() == 929


def test_cli_add_list_and_sql(tmp_path):
    root = tmp_path / "root"
    ingest([str(CORPUS)], root, quiet=True)
    runner = CliRunner()
    res = runner.invoke(main, ["facts", "add", "trex", str(TREX), "--root", str(root)])
    assert res.exit_code == 0, res.output
    assert "929 facts" in res.output and f"assay annotate --root {root} --scorer facts:trex" in res.output
    res = runner.invoke(main, ["facts", "list", "--root", str(root)])
    assert "trex: 929 facts" in res.output and "substring: 0/1 shards" in res.output
    res = runner.invoke(main, ["annotate", "--root", str(root), "--scorer", "facts:trex"])
    assert res.exit_code == 0, res.output
    query = "SELECT sum(n_both) AS b FROM fact_counts_where('source = ''qa_wikidata''')"
    res = runner.invoke(main, ["sql", query, "--root", str(root), "--format", "csv"])
    assert res.exit_code == 0, res.output
    assert int(res.output.split()[1]) > 0
    res = runner.invoke(main, ["facts", "add", "trex", str(TREX), "--root", str(root)])
    assert res.exit_code != 0 and "--replace" in res.output


def test_replacing_a_set_drops_its_stale_mentions(tmp_path):
    root = tmp_path / "root"
    ingest([str(CORPUS)], root, quiet=True)
    add_fact_set(root, "geo", TREX / "P36.jsonl")
    annotate(root, ["facts:geo"], quiet=True)
    before = run_query(root, "SELECT sum(n_subj) FROM fact_counts").column(0)[0].as_py()
    add_fact_set(root, "geo", TREX / "P30.jsonl", replace=True)
    assert not (root / "triples" / "facts_geo").exists()
    assert run_query(root, "SELECT count(n_subj) FROM fact_counts").column(0)[0].as_py() == 0
    annotate(root, ["facts:geo"], quiet=True)
    after = run_query(root, "SELECT count(*), sum(n_subj) FROM fact_counts").to_pylist()[0]
    n_p30 = len((TREX / "P30.jsonl").read_text(encoding="utf-8").splitlines())
    assert after["count_star()"] == n_p30 and after["sum(n_subj)"] != before
    # a stock DuckDB client sees the same views (no Assay code involved)
    con = duckdb.connect(str(root / "catalog.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM facts").fetchone()[0] == n_p30
    finally:
        con.close()
