"""Distilled raters: a cheap fastText / embedding model learns an annotation column and scores the pool.

The expensive column is a real one: a fastText classifier (Shakespeare vs State of the Union,
trained on 60 documents a class) written by `assay annotate` as ``src_p_positive``.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import FIXTURES

from assay.pipelines.cli import main
from assay.scorers import rater


def _ok(res):
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rater") / "root"
    runner = CliRunner()
    files = [str(FIXTURES / "fasttext" / f) for f in ("shakespeare.jsonl", "state_union.jsonl")]
    _ok(runner.invoke(main, ["ingest", *files, "--root", str(root)]))
    model = root / "models" / "src.bin"
    _ok(
        runner.invoke(
            main,
            ["train", "fasttext", "--root", str(root), "--positive", "id LIKE 'shakespeare%'"]
            + ["--negative", "id LIKE 'sotu%'", "--max-docs", "60", "--out", str(model)],
        )
    )
    _ok(runner.invoke(main, ["annotate", "--root", str(root), "--scorer", f"fasttext:{model}"]))
    return root


def _column(root, folder, column):
    table = pa.concat_tables(
        pq.read_table(p) for p in sorted((root / "annotations" / folder).glob("part-*.parquet"))
    )
    return dict(zip(table.column("id").to_pylist(), table.column(column).to_pylist()))


def test_a_fasttext_rater_learns_the_column_and_scores_every_document(root):
    runner = CliRunner()
    args = ["train", "rater", "src", "--root", str(root), "--target", "src_p_positive", "--kind", "fasttext"]
    out = _ok(runner.invoke(main, args))
    assert "Spearman" in out and "level 0" in out
    folder = root / "models" / "rater_src"
    record = json.loads((folder / "rater.json").read_text())
    held = record["heldout"]
    assert held["spearman"] >= 0.7, held
    assert len(held["levels"]) == len(record["level_values"]) >= 2
    assert record["sample"] == {"rated": 500, "sample": 500, "train": 450, "heldout": 50, "seed": 0}
    first = hashlib.sha256((folder / "rater.bin").read_bytes()).hexdigest()
    _ok(runner.invoke(main, args))  # seeded, one thread: the same model again
    assert hashlib.sha256((folder / "rater.bin").read_bytes()).hexdigest() == first

    _ok(runner.invoke(main, ["annotate", "--root", str(root), "--scorer", "rater:src"]))
    scores = _column(root, "rater_src", "rater_src")
    assert len(scores) == 500
    # the expected value of the label distribution, computed here from fastText itself
    from assay.scorers.fasttext_classifier import classifier_line
    from assay.scorers.fasttext_text import load_model

    model = load_model(folder / "rater.bin")
    docs = [json.loads(line) for line in open(FIXTURES / "fasttext" / "shakespeare.jsonl")][:5]
    values = np.array(record["level_values"])
    for doc in docs:
        labels, probs = model.predict(classifier_line(doc["text"]), k=len(values))
        k = [int(lab.removeprefix("__label__")) for lab in labels]
        expected = float(np.dot(probs, values[k]) / np.sum(probs))
        assert scores[doc["id"]] == pytest.approx(expected, rel=1e-5)
    target = _column(root, "fasttext_src", "src_p_positive")
    shakespeare = np.mean([scores[i] for i in scores if i.startswith("shakespeare")])
    sotu = np.mean([scores[i] for i in scores if i.startswith("sotu")])
    assert shakespeare > sotu and min(target.values()) <= min(scores.values()) <= max(scores.values()) <= max(
        target.values()
    )


def test_an_embedding_rater_is_ridge_on_the_embed_vectors(root):
    record = rater.train(root, "emb", "src_p_positive", kind="embedding", sample=30, device="cpu")
    assert record["sample"]["train"] == 27 and record["ridge"]["vectors"] == "embedded"
    assert record["heldout"]["spearman"] is not None and record["heldout"]["documents"] == 3
    scorer = rater.RaterScorer(root / "models" / "rater_emb", device="cpu")
    texts = ["To be, or not to be, that is the question.", "The state of our Union is strong.", " "]
    out = scorer.score(pa.record_batch({"id": ["a", "b", "c"], "text": texts}))
    assert out.schema.field("rater_emb").type == pa.float32() and out.column(0)[2].as_py() is None
    from safetensors.numpy import load_file

    head = load_file(str(root / "models" / "rater_emb" / "rater.safetensors"))
    x = scorer._load()[0].embed_texts(texts[:2])  # the same encoder, loaded once.astype(np.float64)
    np.testing.assert_allclose(
        out.column(0).to_numpy(zero_copy_only=False)[:2], x @ head["weight"] + head["bias"][0], rtol=1e-5
    )
    alone = scorer.score(pa.record_batch({"id": ["b"], "text": texts[1:2]}))
    assert alone.column(0)[0].as_py() == out.column(0)[1].as_py()


def test_levels_keep_ratings_and_cut_continuous_targets_at_quantiles():
    edges, values = rater.quantise(np.array([1, 2, 2, 3, 5, 5, 4, 1.0]), 5)
    assert values.tolist() == [1, 2, 3, 4, 5] and edges.tolist() == [1.5, 2.5, 3.5, 4.5]
    y = np.arange(100, dtype=float)
    edges, values = rater.quantise(y, 4)
    assert np.bincount(rater.level_of(y, edges)).tolist() == [25, 25, 25, 25]
    assert values.tolist() == [12.0, 37.0, 62.0, 87.0]
    result = rater.agreement(
        np.array([1.2, 1.9, 3.0, 4.9]),
        np.array([1.0, 2.0, 3.0, 5.0]),
        np.array([1.0, 2, 3, 5]),
        np.array([1.5, 2.5, 4.0]),
    )
    assert result["spearman"] == pytest.approx(1.0) and result["level_accuracy"] == 1.0
    result = rater.agreement(
        np.array([2.0, 1.0]), np.array([1.0, 2.0]), np.array([1.0, 2.0]), np.array([1.5])
    )
    assert [lv["accuracy"] for lv in result["levels"]] == [0.0, 0.0]


def test_bad_targets_name_the_column(root):
    with pytest.raises(ValueError, match="no annotation column 'nosuch'"):
        rater.train(root, "x", "nosuch")
    with pytest.raises(ValueError, match="not a rater name"):
        rater.train(root, "Bad Name", "src_p_positive")
    with pytest.raises(ValueError, match="no rater in"):
        rater.RaterScorer.from_spec("missing", root)
