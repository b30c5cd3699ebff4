"""Fact-mention extractor: exact agreement with the SMI paper's loop, word mode, both engines.

The fixture corpus and the T-REx cut are committed (tests/fixtures/facts/SOURCE.md). The SMI
paper's 12,671 ParaRel facts are read from ../shared (no license: never copied) and that test
skips without it.
"""

from __future__ import annotations

import gzip
import json
import re

import pyarrow as pa
import pytest
from conftest import FIXTURES

from assay.corpora.catalog import run_query
from assay.corpora.facts import add_fact_set, load_fact_set, pattern_strings
from assay.pipelines.annotate import annotate
from assay.pipelines.ingest import ingest
from assay.scorers.facts import FactMentionExtractor, word_bounded

CORPUS = FIXTURES / "facts" / "corpus.jsonl.gz"
TREX = FIXTURES / "facts" / "trex"
CELLS = ("n_docs", "n_subj", "n_obj", "n_both", "s1o0", "s0o1", "s0o0")


def corpus_docs() -> list[dict]:
    return [json.loads(line) for line in gzip.open(CORPUS, "rt", encoding="utf-8")]


def paper_loop(texts: list[str], facts: list[dict]) -> dict[int, tuple]:
    """The SMI paper's search, written out: per document, per fact, two substring tests."""
    cells = {f["fact_id"]: [0, 0, 0, 0, 0, 0, 0] for f in facts}
    probes = [(f["fact_id"], " " + f["subj"], " " + f["obj"]) for f in facts]
    for text in texts:
        for fid, subj, obj in probes:
            s = subj in text
            o = obj in text
            c = cells[fid]
            c[0] += 1
            c[1] += s
            c[2] += o
            c[3] += s and o
            c[4] += s and not o
            c[5] += o and not s
            c[6] += not s and not o
    return {k: tuple(v) for k, v in cells.items()}


def catalog_cells(root, fact_set: str) -> dict[int, tuple]:
    rows = run_query(root, f"SELECT * FROM fact_counts WHERE fact_set = '{fact_set}'").to_pylist()
    return {r["fact_id"]: tuple(r[c] for c in CELLS) for r in rows}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("facts") / "root"
    ingest([str(CORPUS)], root, quiet=True)
    add_fact_set(root, "trex", TREX)
    annotate(root, ["facts:trex", "facts:trex:word"], quiet=True)
    return root


def test_trex_counts_equal_the_paper_loop(root):
    texts = [d["text"] for d in corpus_docs()]
    facts = run_query(root, "SELECT fact_id, subj, obj FROM facts WHERE fact_set = 'trex'").to_pylist()
    assert len(facts) == 929
    expected = paper_loop(texts, facts)
    got = catalog_cells(root, "trex")
    assert got == expected
    assert sum(v[3] for v in got.values()) > 50  # the test means something: many co-occurrences


def test_side_table_holds_exactly_the_documents_with_mentions(root):
    docs = corpus_docs()
    patterns = pattern_strings(load_fact_set(root, "trex"))
    expected = {}
    for d in docs:
        found = [i for i, p in enumerate(patterns) if p in d["text"]]
        if found:
            expected[d["id"]] = found
    rows = run_query(root, "SELECT doc_id, patterns FROM facts_trex").to_pylist()
    assert {r["doc_id"]: r["patterns"] for r in rows} == expected
    assert 0 < len(rows) < len(docs)  # documents without a mention take no row


def test_overlapping_patterns_are_all_found(root):
    """The trap of leftmost-longest engines: " Niger" found only inside " Nigeria" must count."""
    patterns = pattern_strings(load_fact_set(root, "trex"))
    rows = run_query(
        root, "SELECT d.text, m.patterns FROM docs d JOIN facts_trex m ON m.doc_id = d.id"
    ).to_pylist()
    only_inside = 0
    for r in rows:
        found = {patterns[i] for i in r["patterns"]}
        for long in found:
            for short in patterns:
                if short != long and short in long:
                    assert short in found, (short, long)
                    only_inside += short not in r["text"].replace(long, "")
    assert only_inside > 0  # the fixture really has patterns that occur only inside longer ones


def test_word_mode_equals_a_regex_reference(root):
    texts = [d["text"] for d in corpus_docs()]
    facts = run_query(root, "SELECT fact_id, subj, obj FROM facts WHERE fact_set = 'trex'").to_pylist()
    got = catalog_cells(root, "trex:word")
    cache: dict[str, re.Pattern] = {}

    def hit(p: str, text: str) -> bool:
        rx = cache.setdefault(p, re.compile(re.escape(p) + r"(?!\w)"))
        return rx.search(text) is not None

    for f in facts:
        s = [hit(" " + f["subj"], t) for t in texts]
        o = [hit(" " + f["obj"], t) for t in texts]
        both = sum(a and b for a, b in zip(s, o))
        assert got[f["fact_id"]][1:4] == (sum(s), sum(o), both), f
    substring = catalog_cells(root, "trex")
    assert sum(v[2] for v in got.values()) < sum(v[2] for v in substring.values())  # word mode is stricter


def test_word_bounded_examples():
    text = "He moved to Paris. Parisians say Paris's parks"
    assert word_bounded(text, " Paris")
    assert word_bounded("in Paris", " Paris")  # end of text
    assert not word_bounded("the Parisians", " Paris")
    assert not word_bounded("the Paris_2024 games", " Paris")
    assert not word_bounded("Perón, Perónismo", " Perón")  # the only " Perón" runs on into a word


def test_engines_agree_on_sliced_batches_with_nulls(root):
    docs = corpus_docs()
    texts = [d["text"] for d in docs]
    texts[3] = None  # a null text has no mention
    batch = pa.RecordBatch.from_pydict({"id": [d["id"] for d in docs], "text": texts}).slice(2, 200)
    facts = load_fact_set(root, "trex")
    hs = FactMentionExtractor("trex", pattern_strings(facts), engine="hyperscan").extract(batch)
    aho = FactMentionExtractor("trex", pattern_strings(facts), engine="aho").extract(batch)
    assert hs.equals(aho)
    assert docs[3]["id"] not in hs.column("doc_id").to_pylist()
    ref = run_query(root, "SELECT doc_id, patterns FROM facts_trex").to_pylist()
    ref = {r["doc_id"]: r["patterns"] for r in ref if r["doc_id"] in set(batch.column("id").to_pylist())}
    ref.pop(docs[3]["id"], None)
    assert dict(zip(hs.column("doc_id").to_pylist(), hs.column("patterns").to_pylist())) == ref


@pytest.mark.parametrize("text_type", [pa.large_string(), pa.string_view()])
def test_other_string_layouts_give_the_same_rows(root, text_type):
    docs = corpus_docs()[:150]
    ids, texts = [d["id"] for d in docs], [d["text"] for d in docs]
    x = FactMentionExtractor.from_spec("trex", root)
    plain = x.extract(pa.RecordBatch.from_pydict({"id": ids, "text": texts}))
    other = x.extract(pa.RecordBatch.from_pydict({"id": ids, "text": pa.array(texts, text_type)}))
    assert other.equals(plain) and plain.num_rows > 10


def test_compiled_database_is_cached_and_a_bad_cache_is_rebuilt(root):
    caches = sorted((root / ".assay" / "cache").glob("hyperscan-*.db"))
    assert len(caches) == 1  # annotate compiled once and saved it; both match modes share it
    batch = pa.RecordBatch.from_pylist(corpus_docs()[:120])
    cached = FactMentionExtractor.from_spec("trex", root).extract(batch)
    caches[0].write_bytes(b"not a database")
    rebuilt = FactMentionExtractor.from_spec("trex", root).extract(batch)
    assert rebuilt.equals(cached) and cached.num_rows > 10
    assert caches[0].stat().st_size > 1000  # compiled again and saved over the bad file


def test_unknown_fact_set_and_bad_mode_say_what_to_do(root):
    with pytest.raises(ValueError, match="assay facts add nope"):
        FactMentionExtractor.from_spec("nope", root)
    with pytest.raises(ValueError, match="match mode"):
        FactMentionExtractor.from_spec("trex:fuzzy", root)
    with pytest.raises(ValueError, match="needs a fact set"):
        FactMentionExtractor.from_spec(None, root)


def test_pararel_exactness_every_fact_every_cell(tmp_path, shared_data):
    """The SMI paper's full 12,671-fact ParaRel set on the fixture corpus: identical 2x2 tables."""
    pararel = shared_data / "eval_results" / "smi" / "search" / "pararel_15classes.json.gz"
    if not pararel.exists():
        pytest.skip(f"needs {pararel}")
    root = tmp_path / "root"
    ingest([str(CORPUS)], root, quiet=True)
    add_fact_set(root, "pararel", pararel)
    annotate(root, ["facts:pararel"], quiet=True)
    facts = json.load(gzip.open(pararel, "rt", encoding="utf-8"))
    expected = paper_loop([d["text"] for d in corpus_docs()], [dict(f, fact_id=f["idx"]) for f in facts])
    got = catalog_cells(root, "pararel")
    assert len(got) == 12_671 and got == expected
    assert sum(v[3] for v in got.values()) > 50
