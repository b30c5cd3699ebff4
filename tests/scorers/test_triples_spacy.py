"""spaCy triples and entities: the extraction rule, English-only skipping, offsets, SQL examples."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pytest
from conftest import FIXTURES

from assay.corpora.catalog import run_query
from assay.pipelines.annotate import annotate
from assay.pipelines.ingest import ingest
from assay.scorers.triples_spacy import SpacyTripleExtractor, doc_rows

CORPUS = FIXTURES / "facts" / "corpus.jsonl.gz"

# The README's examples (kept here so the tests run them).
TOP_RELATIONS = (
    "SELECT relation, count(*) AS n FROM triples GROUP BY relation ORDER BY n DESC, relation LIMIT 10"
)
TOP_SUBJECTS = (
    "SELECT subject, subject_label, count(*) AS n FROM triples WHERE subject_label IS NOT NULL "
    "GROUP BY ALL ORDER BY n DESC, subject LIMIT 10"
)
CO_OCCURRENCE = """
SELECT a.text AS entity_a, b.text AS entity_b, count(DISTINCT a.doc_id) AS docs
FROM entities a JOIN entities b ON a.doc_id = b.doc_id AND a.text < b.text
WHERE a.label IN ('PERSON', 'ORG', 'GPE') AND b.label IN ('PERSON', 'ORG', 'GPE')
GROUP BY ALL ORDER BY docs DESC, entity_a, entity_b LIMIT 10"""


@pytest.fixture(scope="module")
def extractor() -> SpacyTripleExtractor:
    return SpacyTripleExtractor()


def test_rule_on_known_sentences(extractor):
    text = (
        "Barack Obama was born in Honolulu. He moved to Chicago in 1985. "
        "Marie Curie discovered polonium and radium. Apple acquired Beats Electronics."
    )
    triples, entities = doc_rows(extractor.nlp()(text))
    got = {(t[1], t[3], t[4]) for t in triples}
    assert ("Barack Obama", "bear in", "Honolulu") in got
    assert {("Marie Curie", "discover", "polonium"), ("Marie Curie", "discover", "radium")} <= got
    assert not any(s == "He" for s, _, _ in got)  # pronoun arguments are dropped
    assert ("Barack Obama", "PERSON") in {(e[1], e[2]) for e in entities}
    for sent, subj, _, _, obj, _, s0, s1, o0, o1 in triples:
        assert text[s0:s1] == subj and text[o0:o1] == obj and sent >= 0


def test_without_language_annotations_every_document_is_parsed(extractor):
    batch = pa.RecordBatch.from_pydict(
        {"id": ["a", "b", "c"], "text": ["The Senate passed the bill.", None, "   "]}
    )
    out = extractor.extract(batch)
    stats = out["triples_stats"].to_pylist()[0]
    assert stats["docs"] == 3 and stats["parsed"] == 1 and stats["skipped_language"] == 0
    assert out["triples"].column("doc_id").to_pylist() == ["a"]
    assert out["triples"].column("relation").to_pylist() == ["pass"]


def test_spec_settings_and_errors(tmp_path):
    x = SpacyTripleExtractor.from_spec("n_process=2,languages=en+de,max_chars=5000", tmp_path, device="cpu")
    assert (x.n_process, x.languages, x.max_chars, x.use_lang) == (2, ("en", "de"), 5000, False)
    assert x.input_columns == ("id", "text")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        SpacyTripleExtractor.from_spec("threads=2", tmp_path)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    docs = [json.loads(line) for line in gzip.open(CORPUS, "rt", encoding="utf-8")]
    english = [d for d in docs if d["source"] == "dolma-cc"][:3] + [
        d for d in docs if d["source"] == "qa_wikidata"
    ][:3]
    other = [d for d in docs if d["id"] in ("udhr/Czech-UTF8", "udhr/Russian-UTF8")]
    src = tmp_path_factory.mktemp("triples") / "in.jsonl"
    src.write_text("".join(json.dumps(d) + "\n" for d in english + other), encoding="utf-8")
    root = src.parent / "root"
    ingest([str(src)], root, quiet=True)
    annotate(root, ["language"], quiet=True)
    annotate(root, ["triples"], quiet=True)
    return root


def test_english_only_with_skip_counts(root):
    langs = {r["id"]: r["lang"] for r in run_query(root, "SELECT id, lang FROM annotations").to_pylist()}
    n_en = sum(v == "en" for v in langs.values())
    assert n_en == 6 and len(langs) == 8
    stats = run_query(
        root, "SELECT sum(docs) d, sum(parsed) p, sum(skipped_language) s FROM triples_stats"
    ).to_pylist()
    assert stats[0] == {"d": 8, "p": 6, "s": 2}
    for table in ("triples", "entities"):
        ids = {r["doc_id"] for r in run_query(root, f"SELECT DISTINCT doc_id FROM {table}").to_pylist()}
        assert ids and all(langs[i] == "en" for i in ids), table


def test_offsets_point_into_the_document_text(root):
    texts = {r["id"]: r["text"] for r in run_query(root, "SELECT id, text FROM docs").to_pylist()}
    rows = run_query(root, "SELECT * FROM triples").to_pylist()
    assert len(rows) > 20
    for r in rows:
        t = texts[r["doc_id"]]
        assert t[r["subject_start"] : r["subject_end"]] == r["subject"]
        assert t[r["object_start"] : r["object_end"]] == r["object"]
    for r in run_query(root, "SELECT * FROM entities").to_pylist():
        assert texts[r["doc_id"]][r["start"] : r["end"]] == r["text"]


def test_readme_sql_examples(root):
    top = run_query(root, TOP_RELATIONS).to_pylist()
    assert top and top[0]["n"] >= top[-1]["n"] and top[0]["relation"] == top[0]["relation"].lower()
    subjects = run_query(root, TOP_SUBJECTS).to_pylist()
    assert subjects and all(s["subject_label"] for s in subjects)
    pairs = run_query(root, CO_OCCURRENCE).to_pylist()
    assert pairs and all(p["entity_a"] < p["entity_b"] and p["docs"] >= 1 for p in pairs)
