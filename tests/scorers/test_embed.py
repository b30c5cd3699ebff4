"""embed: real all-MiniLM-L6-v2 vectors from the wheel, pure per document, sampled by id, float16."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FIXTURES, REPO

from assay.corpora.catalog import run_query
from assay.corpora.ingest import IngestOptions
from assay.pipelines.annotate import annotate
from assay.pipelines.ingest import ingest
from assay.scorers.embed import EmbeddingScorer, id_hashes
from assay.scorers.registry import make_scorer

BETR = FIXTURES / "betr"


def real_texts() -> list[str]:
    """Benchmark questions, web pages and speeches: 5 to 256+ tokens, many distinct lengths."""
    texts = [json.loads(line)["question"] for line in open(BETR / "gsm8k_test.jsonl")]
    texts += [json.loads(line)["query"] for line in open(BETR / "arc_easy.jsonl")][:20]
    with gzip.open(REPO / "sample/web/dolma_cc_en_head-0091.jsonl.gz", "rt") as f:
        texts += [json.loads(line)["text"] for line in f]
    with gzip.open(REPO / "sample/speeches/inaugural.jsonl.gz", "rt") as f:
        texts += [json.loads(line)["text"][: 200 + 37 * i] for i, line in zip(range(10), f)]
    return texts


@pytest.fixture(scope="module")
def scorer() -> EmbeddingScorer:
    return EmbeddingScorer()


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return real_texts()


def test_a_document_gets_the_same_float16_vector_alone_or_in_any_batch(scorer, texts):
    together = scorer.embed_texts(texts)
    alone = np.stack([scorer.embed_texts([t])[0] for t in texts])
    assert together.dtype == np.float16
    assert np.array_equal(alone, together)  # exact: no tolerance
    rng = np.random.default_rng(0)
    order = rng.permutation(len(texts))
    shuffled = np.zeros_like(together)
    for part in np.array_split(order, 5):
        shuffled[part] = scorer.embed_texts([texts[i] for i in part])
    assert np.array_equal(shuffled, together)
    small = EmbeddingScorer(batch_tokens=300)  # other batch sizes, same vectors
    assert np.array_equal(small.embed_texts(texts), together)


def test_vectors_are_sentence_transformers_own_up_to_float16(scorer, texts):
    model = scorer._load()
    raw = model.encode(texts, batch_size=32, normalize_embeddings=True)
    ours = scorer.embed_texts(texts, as_float16=False)
    assert np.abs(ours - raw).max() < 1e-5  # float32, before rounding: padding bits only
    cos = (scorer.embed_texts(texts).astype(np.float32) * raw).sum(axis=1)
    assert cos.min() > 0.9999
    norms = np.linalg.norm(scorer.embed_texts(texts).astype(np.float32), axis=1)
    assert np.abs(norms - 1).max() < 2e-3


def test_score_writes_float16_fixed_size_lists_and_nulls_empty_text(scorer):
    batch = pa.record_batch(
        {"id": ["a", "b", "c", "d"], "text": ["A question about ants.", "", None, "  \n"]}
    )
    out = scorer.score(batch)
    assert out.schema.field("embedding").type == pa.list_(pa.float16(), 384)
    assert out.column(0).is_valid().to_pylist() == [True, False, False, False]
    first = np.array(out.column(0)[0].as_py(), dtype=np.float16)
    assert np.array_equal(first, scorer.embed_texts(["A question about ants."])[0])


def _corpus(tmp_path) -> list[str]:
    """Fixture documents: GSM8K test problems, ARC-Easy questions, web pages from the sample."""
    path = tmp_path / "bench_docs.jsonl"
    with open(path, "w") as f:
        for i, line in enumerate(open(BETR / "gsm8k_test.jsonl")):
            r = json.loads(line)
            f.write(json.dumps({"id": f"gsm8k-test-{i}", "text": f"{r['question']} {r['answer']}"}) + "\n")
        for i, line in enumerate(open(BETR / "arc_easy.jsonl")):
            r = json.loads(line)
            f.write(json.dumps({"id": f"arc-{i}", "text": f"{r['query']} {r['choices'][r['gold']]}"}) + "\n")
    return [str(path), str(REPO / "sample/web")]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    work = tmp_path_factory.mktemp("embed")
    root = work / "root"
    ingest(_corpus(work), root, IngestOptions(shard_rows=40), quiet=True)
    return root


def test_annotate_a_sample_by_id_hash_then_cluster_the_vectors(root):
    annotate(root, ["embed:sample=30,max_tokens=64"], quiet=True)
    rows = run_query(root, "SELECT id, embedding FROM annotations ORDER BY id").to_pylist()
    with_vector = [r["id"] for r in rows if r["embedding"] is not None]
    assert len(with_vector) == 30  # exactly N documents: the 30 smallest id hashes
    ids = [r["id"] for r in rows]
    assert sorted(with_vector) == sorted(np.array(ids)[np.argsort(id_hashes(ids))[:30]].tolist())
    parts = sorted((root / "annotations" / "embed").glob("part-*.parquet"))
    assert len(parts) == len(list((root / "docs").glob("part-*.parquet"))) == 5
    assert pq.read_schema(parts[0]).field("embedding").type == pa.list_(pa.float16(), 384)
    # the same sample whatever the batch size: the sample is a function of the id alone
    scorer = make_scorer("embed:sample=30,max_tokens=64", root)
    docs = pq.read_table(sorted((root / "docs").glob("part-*.parquet"))[0])
    assert scorer.chosen(docs.to_batches(7)[0]).tolist() == scorer.chosen(docs.to_batches()[0]).tolist()[:7]

    # cluster reads the float16 fixed-size lists (null rows get a null cluster)
    annotate(root, ["cluster:k=3,embeddings=embed:embedding"], quiet=True)
    clusters = run_query(root, "SELECT embedding IS NULL AS none, cluster FROM annotations").to_pylist()
    assert all((r["cluster"] is None) == r["none"] for r in clusters)
    assert {r["cluster"] for r in clusters if not r["none"]} == {0, 1, 2}


def test_fractions_and_the_version(root, tmp_path):
    a = make_scorer("embed:sample=0.25,max_tokens=64", root)
    assert a.version.startswith(f"1-{a.identity.short}-float32-t64-s")
    ids = [f"doc-{i}" for i in range(4000)]
    share = a.chosen(pa.record_batch({"id": ids, "text": ["x"] * len(ids)})).mean()
    assert 0.22 < share < 0.28
    assert make_scorer("embed", root).version == f"1-{a.identity.short}-float32-t256"
    assert make_scorer("embed:max_tokens=128", root).version != make_scorer("embed", root).version
    # a different model folder is a different version
    wheel = a.model_path
    copy = tmp_path / "minilm"
    shutil.copytree(wheel, copy, ignore=shutil.ignore_patterns("model.safetensors"))
    (copy / "model.safetensors").symlink_to(wheel / "model.safetensors")
    (copy / "config_sentence_transformers.json").write_text('{"similarity_fn_name": "cosine"}')
    assert make_scorer(f"embed:{copy}", root).version != make_scorer("embed", root).version


@pytest.mark.parametrize(
    "spec, message",
    [
        ("embed:colour=red", "unknown option"),
        ("embed:sample=0", "sample must be"),
        ("embed:sample=1.5", "fraction must be in"),
        ("embed:sample=ten", "sample must be"),
        ("embed:max_tokens=0", "max_tokens must be"),
        ("embed:model=no/such-model", "never downloads"),
        ("embed:dtype=int8", "dtype must be"),
    ],
)
def test_bad_specs_are_one_clear_error(root, spec, message):
    with pytest.raises(ValueError, match=message):
        make_scorer(spec, root)


def test_vectors_of_reads_sql_lists_and_refuses_ragged():
    import pyarrow as pa

    from assay.scorers.embed import vectors_of

    # DuckDB reads the stored fixed-size lists back as FLOAT[]: the same vectors either way
    sql = pa.array([[0.5, -0.25], None, [1.0, 0.0]], pa.list_(pa.float32()))
    stored = pa.FixedSizeListArray.from_arrays(
        pa.array([0.5, -0.25, 0, 0, 1.0, 0.0], pa.float16()), 2, mask=pa.array([False, True, False])
    )
    (a, va), (b, vb) = vectors_of(sql), vectors_of(stored)
    assert a.tolist() == b.tolist() == [[0.5, -0.25], [1.0, 0.0]] and va.tolist() == vb.tolist()
    with pytest.raises(ValueError, match="different lengths"):
        vectors_of(pa.array([[1.0], [1.0, 2.0]], pa.list_(pa.float32())))
