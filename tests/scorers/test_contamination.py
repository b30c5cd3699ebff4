"""The contamination scorer: planted benchmark examples are found, paraphrases and short texts are not."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pyarrow as pa
import pytest
from click.testing import CliRunner
from conftest import FIXTURES, REPO

from assay.corpora.catalog import run_query
from assay.corpora.targets import add_targets, load_targets
from assay.pipelines.cli import main
from assay.pipelines.cli.targets import contamination_table
from assay.scorers.contamination import ContaminationScorer, words

GSM8K = FIXTURES / "targets" / "gsm8k" / "test.jsonl"
MMLU = FIXTURES / "targets" / "mmlu"
WEB = REPO / "sample" / "web" / "dolma_cc_en_head-0091.jsonl.gz"
# A rewording of the first GSM8K test question: the same facts, no run of 13 words in common.
PARAPHRASE = (
    "Every day the ducks owned by Janet produce 16 eggs. Three of them she has for breakfast and four "
    "go into muffins she bakes for friends; whatever remains is sold at the farmers' market, $2 an egg. "
    "What are her daily earnings there? 16 - 3 - 4 = 9 eggs sold, 9 * 2 = 18 dollars."
)
# MMLU astronomy row 3 is 12 words (row 5: 10): shorter than 13, so neither has a 13-gram.
SHORT = "Why is the sky blue? Because the atmosphere preferentially scatters short wavelengths."


def invoke(*args: str) -> str:
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def pages() -> list[str]:
    with gzip.open(WEB, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def targets() -> list[dict]:
    return load_targets([GSM8K, MMLU]).to_pylist()


def planted(page: str, example: str) -> str:
    """The example inside a real page, between two of its paragraphs."""
    cut = page.find("\n", len(page) // 2)
    return page[:cut] + "\n" + example + "\n" + page[cut:]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A corpus of real web pages: one holds GSM8K test:3, one two examples, one a paraphrase."""
    tmp = tmp_path_factory.mktemp("contam")
    web, ex = pages(), targets()
    docs = [
        {"id": "planted", "text": planted(web[0], ex[2]["text"])},
        {"id": "two", "text": planted(web[1], ex[5]["text"] + "\n" + ex[1]["text"])},
        {"id": "paraphrase", "text": web[2] + "\n" + PARAPHRASE},
        {"id": "short", "text": SHORT},
        *({"id": f"page{i}", "text": t} for i, t in enumerate(web[3:10])),
    ]
    corpus = tmp / "web.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    root = tmp / "root"
    invoke("ingest", str(corpus), "--root", str(root))
    invoke("targets", "add", "evals", str(GSM8K), str(MMLU), "--root", str(root))
    invoke("annotate", "--root", str(root), "--scorer", "contamination:evals", "--scorer", "stats")
    return root


def annotations(root: Path) -> dict[str, dict]:
    q = "SELECT id, contam_frac, contam_benchmark, contam_example_id, contam_matches FROM annotations"
    return {r["id"]: r for r in run_query(root, q).to_pylist()}


def test_normalisation_is_datatrove_simplify_text():
    from datatrove.utils.text import PUNCTUATION, simplify_text

    from assay.scorers.contamination import PUNCTUATION as OURS

    assert OURS == PUNCTUATION
    texts = [*pages(), *(t["text"] for t in targets()), "Ça coûte 3,50 € — n'est-ce pas?\u2028Ünïcödé  ½ ١٢٣"]
    flat, rows = words(pl.Series(texts))
    got = [[] for _ in texts]
    for row, word in zip(rows.tolist(), flat.to_list()):
        got[row].append(word)
    assert got == [simplify_text(t).split() for t in texts]


def test_planted_example_is_found_with_its_id(root):
    got = annotations(root)
    assert got["planted"]["contam_frac"] == 1.0
    assert (got["planted"]["contam_benchmark"], got["planted"]["contam_example_id"]) == ("gsm8k", "test:3")
    assert got["planted"]["contam_matches"] == [{"benchmark": "gsm8k", "example_id": "test:3", "frac": 1.0}]
    for doc in ("paraphrase", "page0", "page5"):
        assert got[doc]["contam_frac"] == 0.0, doc
        assert got[doc]["contam_benchmark"] is None and got[doc]["contam_example_id"] is None
        assert got[doc]["contam_matches"] == []


def test_a_document_with_two_examples_lists_both(root):
    got = annotations(root)["two"]
    # both complete: the tie goes to the example that comes first in the set (gsm8k test:2)
    assert (got["contam_frac"], got["contam_example_id"]) == (1.0, "test:2")
    assert [m["example_id"] for m in got["contam_matches"]] == ["test:2", "astronomy_test:1"]


def test_short_documents_and_examples(root, tmp_path):
    """Fewer than n words: no n-grams, so no overlap (datatrove's rule); at n=8 the same text matches."""
    got = annotations(root)["short"]
    assert (got["contam_frac"], got["contam_example_id"]) == (0.0, None)
    scorer = ContaminationScorer.from_spec("evals:n=8", root)
    out = scorer.score(pa.RecordBatch.from_pydict({"id": ["s"], "text": [SHORT]})).to_pylist()[0]
    assert (out["contam_frac"], out["contam_example_id"]) == (1.0, "astronomy_test:3")
    assert scorer.name == "contamination_evals_n8"


def test_report_counts_every_example_found(root):
    rows = {r["benchmark"]: r for r in contamination_table(root, "evals")}
    # mmlu astronomy_test:1 is found although its document's best example is gsm8k test:2
    assert rows["gsm8k"] == {"benchmark": "gsm8k", "examples": 5, "too_short": 0, "found": 2, "docs": 2}
    assert rows["mmlu"] == {"benchmark": "mmlu", "examples": 5, "too_short": 2, "found": 1, "docs": 1}
    out = invoke("contamination", "report", "evals", "--root", str(root))
    assert "gsm8k" in out and "too_short" in out


def test_report_in_a_decontaminated_mixture(root, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "filter: contam_frac < 0.5\nstrategy: uniform\nbudget:\n  fraction_of_docs: 1.0\nseed: 1\n"
    )
    invoke("select", "--recipe", str(recipe), "--name", "clean", "--root", str(root))
    rows = {r["benchmark"]: r for r in contamination_table(root, "evals", mixture="clean")}
    assert rows["gsm8k"]["found"] == 2 and rows["gsm8k"]["found_mixture"] == 0
    assert rows["gsm8k"]["docs_mixture"] == 0 and rows["mmlu"]["found_mixture"] == 0
    out = invoke("contamination", "report", "evals", "--mixture", "clean", "--root", str(root))
    assert "found_mixture" in out


def test_scores_do_not_depend_on_batch_peers(root):
    scorer = ContaminationScorer.from_spec("evals", root)
    texts = [d["text"] for d in run_query(root, "SELECT text FROM docs ORDER BY id").to_pylist()]
    whole = scorer.score(pa.RecordBatch.from_pydict({"id": list(map(str, texts)), "text": texts})).to_pylist()
    alone = [
        scorer.score(pa.RecordBatch.from_pydict({"id": ["x"], "text": [t]})).to_pylist()[0] for t in texts
    ]
    assert whole == alone
    again = pickle.loads(pickle.dumps(scorer))  # as sent to a worker: the index is rebuilt there
    assert (
        again._index is None
        and again.score(pa.RecordBatch.from_pydict({"id": ["x"], "text": texts[:1]})).to_pylist() == whole[:1]
    )
    empty = scorer.score(pa.RecordBatch.from_pydict({"id": ["e", "n"], "text": ["", None]})).to_pylist()
    assert [r["contam_frac"] for r in empty] == [0.0, 0.0]


def test_version_follows_the_targets_and_settings(root, tmp_path):
    base = ContaminationScorer.from_spec("evals", root)
    assert base.version.startswith("1.n13.floor0.2.")
    assert ContaminationScorer.from_spec("evals:n=8,floor=0.1", root).version.startswith("1.n8.floor0.1.")
    add_targets(root, "evals", [GSM8K], replace=True)  # other content: another version
    assert ContaminationScorer.from_spec("evals", root).version != base.version
    with pytest.raises(ValueError, match="stale"):
        contamination_table(root, "evals")
    add_targets(root, "evals", [GSM8K, MMLU], replace=True)  # the same content again
    assert ContaminationScorer.from_spec("evals", root).version == base.version
    with pytest.raises(ValueError, match="option 'k=3'"):
        ContaminationScorer.from_spec("evals:k=3", root)
    with pytest.raises(ValueError, match="no targets set 'nosuch'"):
        ContaminationScorer.from_spec("nosuch", root)
    with pytest.raises(ValueError, match=r"--threshold 0.1: use a fraction in \[0.2, 1\]"):
        contamination_table(root, "evals", threshold=0.1)


def test_agrees_with_datatrove_ngram_filter(root, tmp_path):
    """datatrove's own index hashes (all n-grams of each example, NGramsDecontIndexer.compute_hashes)
    and its NGramsDecontFilter drop exactly the documents that share an n-gram with the set."""
    import numpy as np
    from datatrove.data import Document
    from datatrove.pipeline.decont.n_grams import NGramsDecontConfig, NGramsDecontFilter, NGramsDecontIndexer
    from datatrove.utils.hashing import create_hash_func
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    config = NGramsDecontConfig(n_grams=13)
    indexer = SimpleNamespace(  # the indexer's class needs lighteval to be built; its method does not
        tokenizer=load_word_tokenizer("en"), config=config, hash_func=create_hash_func(config.hash_config)
    )
    hashes = {h for t in targets() for h in NGramsDecontIndexer.compute_hashes(indexer, t["text"])}
    np.array(sorted(hashes), dtype=np.uint64).tofile(tmp_path / "evals.index.hashes")
    decont = NGramsDecontFilter(str(tmp_path), config=config)
    docs = run_query(root, "SELECT id, text FROM docs").to_pylist()
    dropped = {d["id"] for d in docs if decont.filter(Document(text=d["text"], id=d["id"])) is not True}
    ours = {i for i, r in annotations(root).items() if r["contam_frac"] > 0}
    assert dropped == ours == {"planted", "two"}


def test_arc_easy_question_inside_a_real_page(shared_data, tmp_path):
    """An ARC-Easy example pasted into a trafilatura page, as a quiz site would show it."""
    arc = shared_data / "benchmarks" / "llm_foundry_local_data" / "world_knowledge" / "arc_easy.jsonl"
    record = json.loads(arc.read_text().splitlines()[41])  # line 42: example id arc_easy:42
    question = record["query"].removeprefix("Question: ")
    quiz = f"Quiz time!\n{question}\nAnswer: {record['choices'][record['gold']]}"
    pages_path = shared_data / "corpora" / "web_trafilatura_eval" / "trafilatura_eval_pages.jsonl.gz"
    with gzip.open(pages_path, "rt", encoding="utf-8") as f:
        real = [json.loads(line) for line, _ in zip(f, range(40))]
    real = [r for r in real if r["lang"] == "en"][:5]
    docs = [
        {"id": "quiz", "text": planted(real[0]["text"], quiz)},
        *({"id": r["id"], "text": r["text"]} for r in real),
    ]
    corpus = tmp_path / "pages.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    root = tmp_path / "root"
    invoke("ingest", str(corpus), "--root", str(root))
    invoke("targets", "add", "arc", str(arc), "--split", "test", "--root", str(root))
    invoke("annotate", "--root", str(root), "--scorer", "contamination:arc")
    got = annotations(root)
    assert got["quiz"]["contam_example_id"] == "arc_easy:42" and got["quiz"]["contam_frac"] >= 0.5
    assert all(got[r["id"]]["contam_frac"] == 0.0 for r in real)
    [row] = contamination_table(root, "arc")
    assert (row["found"], row["docs"]) == (1, 1)
