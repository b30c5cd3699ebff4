"""User-trained fastText classifiers: training, the sidecar, scoring, versions, and the CLI end to end."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assay.scorers.base import Scorer, check_scored
from assay.scorers.fasttext_classifier import (
    NEGATIVE,
    POSITIVE,
    FastTextClassifierScorer,
    classifier_line,
    sidecar_path,
    train_classifier,
)

# small-data settings: a few hundred short documents need more passes than fastText's defaults,
# and a small n-gram hash space keeps the model file at ~3 MB instead of ~800 MB
SMALL = dict(lr=0.5, epoch=10, dim=32, bucket=20_000)


def _texts(fixtures: Path, name: str) -> list[str]:
    with open(fixtures / "fasttext" / name, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


@pytest.fixture(scope="module")
def styles(fixtures) -> tuple[list[str], list[str]]:
    """Shakespeare speeches (positive) and State of the Union paragraphs (negative), 250 each."""
    return _texts(fixtures, "shakespeare.jsonl"), _texts(fixtures, "state_union.jsonl")


@pytest.fixture(scope="module")
def trained(styles, tmp_path_factory) -> tuple[Path, list[str], list[str]]:
    """A model trained on the first 200 of each class; the last 50 of each it never sees."""
    shakespeare, sotu = styles
    out = tmp_path_factory.mktemp("model") / "Shakespeare-vs-SOTU.v1.bin"
    meta = {"positive": "source = 'shakespeare'", "negative": "source = 'sotu'"}
    train_classifier(shakespeare[:200], sotu[:200], out_path=out, metadata=meta, **SMALL)
    return out, shakespeare[200:], sotu[200:]


def _batch(texts: list[str | None]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {"id": [f"d{i}" for i in range(len(texts))], "text": pa.array(texts, pa.string())}
    )


def test_training_lines_are_one_line_and_never_a_label():
    assert classifier_line("To be,\nor not to be") == "To be, or not to be"
    assert classifier_line("__label__1 leaks\n__label__0 twice") == "label__1 leaks label__0 twice"
    assert classifier_line("keep a__label__b inside a word") == "keep a__label__b inside a word"


def test_learns_a_real_split_and_generalises(trained):
    path, held_shakespeare, held_sotu = trained
    scorer = FastTextClassifierScorer(path)
    assert isinstance(scorer, Scorer)
    batch = _batch(held_shakespeare + held_sotu)
    p = check_scored(batch, scorer.score(batch), scorer).column(scorer.column).to_numpy()
    truth = np.array([True] * len(held_shakespeare) + [False] * len(held_sotu))
    accuracy = ((p >= 0.5) == truth).mean()
    assert accuracy >= 0.9, accuracy
    assert p[truth].mean() > 0.75 and p[~truth].mean() < 0.25
    assert ((0.0 <= p) & (p <= 1.0)).all()


def test_sidecar_records_how_the_model_was_made(trained):
    path, _, _ = trained
    record = json.loads(sidecar_path(path).read_text())
    assert record == FastTextClassifierScorer(path).training_record()
    assert record["hyperparameters"] == {
        "lr": 0.5,
        "epoch": 10,
        "dim": 32,
        "word_ngrams": 2,
        "min_count": 1,
        "bucket": 20_000,
        "loss": "softmax",
        "balance": False,
        "seed": 0,
        "thread": 1,
        "holdout": 0.1,
    }
    assert record["data"] == {"positive": "source = 'shakespeare'", "negative": "source = 'sotu'"}
    assert record["labels"] == {"positive": POSITIVE, "negative": NEGATIVE}
    counts = record["counts"]
    assert (counts["positive_read"], counts["positive_train"], counts["positive_heldout"]) == (200, 180, 20)
    assert (counts["negative_read"], counts["negative_train"], counts["negative_heldout"]) == (200, 180, 20)
    assert record["heldout_accuracy"] >= 0.85
    assert record["binding"].startswith("fasttext-community")
    assert FastTextClassifierScorer(path).version == record["sha256"][:12]


def test_names_come_from_the_model_file(trained):
    scorer = FastTextClassifierScorer(trained[0])
    assert scorer.name == "fasttext_shakespeare_vs_sotu_v1"
    assert scorer.column == "shakespeare_vs_sotu_v1_p_positive"
    assert scorer.output_schema() == pa.schema([(scorer.column, pa.float32())])


def test_scores_equal_raw_fasttext_predict(trained, styles):
    import fasttext

    path = trained[0]
    texts = styles[0][:30] + styles[1][:30]
    out = FastTextClassifierScorer(path, batch_size=8).score(_batch(texts)).column(0).to_pylist()
    raw = fasttext.load_model(str(path))
    for text, p in zip(texts, out):
        labels, probs = raw.predict(classifier_line(text), k=2)
        expected = min(float(probs[list(labels).index(POSITIVE)]), 1.0)
        assert np.float32(p) == np.float32(expected)


def test_missing_text_gives_nulls_in_place(trained, styles):
    scorer = FastTextClassifierScorer(trained[0])
    out = scorer.score(_batch([styles[0][0], None, "", "  \n ", styles[1][0]])).column(0).to_pylist()
    assert [v is None for v in out] == [False, True, True, True, False]
    assert out[0] > 0.5 > out[4]


def test_same_data_same_model_any_order_other_settings_new_version(styles, tmp_path):
    shakespeare, sotu = styles[0][:120], styles[1][:120]
    shuffled = shakespeare[:]
    random.Random(7).shuffle(shuffled)
    a = train_classifier(shakespeare, sotu, out_path=tmp_path / "a" / "m.bin", **SMALL)
    b = train_classifier(shuffled, sotu, out_path=tmp_path / "b" / "m.bin", **SMALL)
    c = train_classifier(shakespeare, sotu, out_path=tmp_path / "c" / "m.bin", **{**SMALL, "epoch": 11})
    va, vb, vc = (FastTextClassifierScorer(p) for p in (a, b, c))
    assert a.read_bytes() == b.read_bytes()  # thread=1 and key-ordered input: repeatable
    assert va.version == vb.version
    assert vc.version != va.version and vc.name == va.name  # retrained: same set, new version


def test_balance_downsamples_the_larger_class(styles, tmp_path):
    out = train_classifier(
        styles[0][:250], styles[1][:100], out_path=tmp_path / "m.bin", balance=True, **SMALL
    )
    counts = json.loads(sidecar_path(out).read_text())["counts"]
    assert counts["positive_read"] == 250
    assert (counts["positive_train"], counts["negative_train"]) == (90, 90)
    assert (counts["positive_heldout"], counts["negative_heldout"]) == (10, 10)


def test_two_threads_train_without_nan(styles, tmp_path):
    out = train_classifier(styles[0], styles[1], out_path=tmp_path / "m.bin", thread=2, **SMALL)
    p = FastTextClassifierScorer(out).score(_batch(styles[0][:20] + styles[1][:20])).column(0).to_numpy()
    assert np.isfinite(p).all()
    assert json.loads(sidecar_path(out).read_text())["heldout_accuracy"] >= 0.85


def test_label_words_in_documents_do_not_become_labels(styles, tmp_path):
    import fasttext

    poisoned = [t + " __label__9" for t in styles[0][:50]]
    out = train_classifier(poisoned, styles[1][:50], out_path=tmp_path / "m.bin", **SMALL)
    assert sorted(fasttext.load_model(str(out)).get_labels()) == [NEGATIVE, POSITIVE]


def test_a_sidecar_for_another_file_is_not_trusted(trained, tmp_path):
    copy = tmp_path / "copy.bin"
    copy.write_bytes(trained[0].read_bytes())
    assert FastTextClassifierScorer(copy).training_record() is None  # no sidecar
    sidecar_path(copy).write_text(json.dumps({"sha256": "0" * 64}))
    assert FastTextClassifierScorer(copy).training_record() is None  # a sidecar of another model


def test_every_class_keeps_a_training_document(styles, tmp_path):
    out = train_classifier(styles[0][:2], styles[1][:2], out_path=tmp_path / "m.bin", holdout=0.9, **SMALL)
    counts = json.loads(sidecar_path(out).read_text())["counts"]
    assert (counts["positive_train"], counts["positive_heldout"]) == (1, 1)
    assert FastTextClassifierScorer(out).score(_batch(["words"])).column(0).to_pylist()[0] is not None


def test_refuses_to_score_with_a_file_replaced_underneath(styles, tmp_path):
    path = train_classifier(styles[0][:50], styles[1][:50], out_path=tmp_path / "m.bin", **SMALL)
    scorer = FastTextClassifierScorer(path)
    scorer.score(_batch(["a line"]))
    train_classifier(styles[0][:50], styles[1][:50], out_path=path, **{**SMALL, "epoch": 3})
    with pytest.raises(RuntimeError, match="changed after"):
        scorer.score(_batch(["a line"]))
    assert FastTextClassifierScorer(path).version != scorer.version


def test_clear_errors(styles, tmp_path):
    with pytest.raises(ValueError, match="no negative documents"):
        train_classifier(styles[0][:10], [None, "", " "], out_path=tmp_path / "m.bin", **SMALL)
    assert not (tmp_path / "m.bin").exists()
    with pytest.raises(FileNotFoundError, match="assay train fasttext"):
        FastTextClassifierScorer(tmp_path / "absent.bin")
    with pytest.raises(ValueError, match="needs a model"):
        FastTextClassifierScorer.from_spec(None, tmp_path)


def test_arxiv_vs_shakespeare_from_shared_data(shared_data, tmp_path):
    """Real text the fixtures do not hold: paragraphs of 20 arXiv papers vs tinyshakespeare.

    Held out by source: the classifier never sees the last 5 papers or the last fifth of the play text.
    """
    misc = shared_data / "corpora" / "misc"
    with open(misc / "llm_foundry_arxiv_sample.jsonl", encoding="utf-8") as f:
        papers = [json.loads(line)["text"] for line in f]

    def paragraphs(text: str) -> list[str]:
        return [p for p in text.split("\n\n") if 200 <= len(p) <= 2000]

    arxiv_train = [p for paper in papers[:15] for p in paragraphs(paper)]
    arxiv_test = [p for paper in papers[15:] for p in paragraphs(paper)]
    play = (misc / "tinyshakespeare.txt").read_text(encoding="utf-8")
    cut = int(len(play) * 0.8)
    chunks = [play[i : i + 600] for i in range(0, len(play), 600)]
    play_train = [c for c in chunks if play.index(c) < cut][: len(arxiv_train)]
    play_test = [play[i : i + 600] for i in range(cut, len(play) - 600, 600)][: len(arxiv_test)]
    assert len(arxiv_train) > 300 and len(arxiv_test) > 50

    out = train_classifier(arxiv_train, play_train, out_path=tmp_path / "arxiv.bin", **SMALL)
    scorer = FastTextClassifierScorer(out)
    p = scorer.score(_batch(arxiv_test + play_test)).column(0).to_numpy()
    truth = np.array([True] * len(arxiv_test) + [False] * len(play_test))
    assert ((p >= 0.5) == truth).mean() >= 0.95


def test_cli_trains_from_sql_and_retraining_marks_annotations_stale(fixtures, tmp_path):
    """assay ingest -> train fasttext (SQL) -> annotate -> retrain -> annotate recomputes the set."""
    from click.testing import CliRunner

    from assay.pipelines.cli import main

    runner = CliRunner()
    root, model = tmp_path / "root", tmp_path / "models" / "style.bin"
    inputs = [str(fixtures / "fasttext" / n) for n in ("shakespeare.jsonl", "state_union.jsonl")]
    result = runner.invoke(main, ["ingest", "--root", str(root), *inputs])
    assert result.exit_code == 0, result.output

    small = ["--epoch", "10", "--lr", "0.5", "--dim", "32", "--bucket", "20000"]

    def train(*extra: str) -> None:
        args = ["train", "fasttext", "--root", str(root), "--out", str(model), *small, *extra]
        args += ["--positive", "source LIKE 'shakespeare%'"]
        args += ["--negative", "SELECT text FROM docs WHERE source LIKE 'state_union%'"]
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
        assert "held-out accuracy" in result.output

    def annotate() -> tuple[str, dict]:
        # a fresh process per run, as a user runs it (pipelines.annotate caches scorers per process)
        assay = Path(sys.executable).with_name("assay")
        cmd = [str(assay), "annotate", "--root", str(root), "--scorer", f"fasttext:{model}"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        table = pq.read_table(root / "annotations" / "fasttext_style").to_pydict()
        return done.stdout, dict(zip(table["id"], table["style_p_positive"]))

    train()
    record = json.loads(sidecar_path(model).read_text())
    assert record["data"]["positive"] == "source LIKE 'shakespeare%'"
    assert "JOIN docs" in record["data"]["positive_sql"]
    assert record["counts"]["positive_read"] == record["counts"]["negative_read"] == 250
    _, first = annotate()
    assert len(first) == 500
    shakespeare_ids = {i for i in first if i.startswith("shakespeare")}
    assert np.mean([first[i] for i in shakespeare_ids]) > 0.8

    train("--max-docs", "120")  # a new model file: a new version, so the old annotations are stale
    record = json.loads(sidecar_path(model).read_text())
    assert record["counts"]["positive_read"] == record["counts"]["negative_read"] == 120
    output, second = annotate()
    assert "stale" in output and "fasttext_style" in output
    assert second.keys() == first.keys() and second != first


def test_small_training_sets_get_small_models_and_chance_is_flagged(fixtures, tmp_path):
    from click.testing import CliRunner

    from assay.pipelines.cli import main
    from assay.scorers.fasttext_classifier import auto_bucket

    assert auto_bucket(10_000, 2) == 4096 and auto_bucket(10**10, 2) == 2_000_000
    runner = CliRunner()
    root, model = tmp_path / "root", tmp_path / "m.bin"
    src = fixtures / "fasttext" / "shakespeare.jsonl"
    assert runner.invoke(main, ["ingest", "--root", str(root), str(src)]).exit_code == 0
    # two halves of the same source: nothing to learn, and a 36-document model, not 800 MB
    args = ["train", "fasttext", "--root", str(root), "--out", str(model), "--max-docs", "18"]
    args += ["--positive", "id < 'shakespeare-2'", "--negative", "id >= 'shakespeare-2'"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert model.stat().st_size < 5_000_000
    assert json.loads(sidecar_path(model).read_text())["hyperparameters"]["bucket"] == 4096
    record = json.loads(sidecar_path(model).read_text())
    assert record["heldout_accuracy"] == 0.5 and "is at chance" in result.output
