"""minhash and exact_dup: signatures estimate Jaccard on real text, keys follow the normalisation."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pytest
from conftest import REPO

from assay.scorers.exact_dup import ExactDupScorer, text_keys
from assay.scorers.minhash import MinHashScorer, normalise
from assay.scorers.registry import make_scorer


def speeches(n: int = 25) -> list[str]:
    with gzip.open(REPO / "sample" / "speeches" / "state_union.jsonl.gz", "rt") as f:
        return [json.loads(line)["text"] for line in f][:n]


def shingles(text: str, n: int = 5) -> set:
    words = normalise(pa.array([text])).to_pylist()[0].split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def test_signatures_estimate_jaccard_on_real_text():
    rng = np.random.default_rng(0)
    docs = speeches()
    copies = []
    for text in docs:
        words = text.split()
        for i in rng.choice(len(words), size=len(words) // 20, replace=False):
            words[i] = "qqq" + str(i)
        copies.append(" ".join(words))
    sig = MinHashScorer().signatures(pa.array(docs + copies))
    estimate = (sig[: len(docs)] == sig[len(docs) :]).mean(axis=1)
    true = np.array(
        [len(shingles(a) & shingles(b)) / len(shingles(a) | shingles(b)) for a, b in zip(docs, copies)]
    )
    # 112 permutations: the standard error of one estimate is sqrt(J(1-J)/112) ~ 0.045 here
    assert abs(estimate.mean() - true.mean()) < 0.02
    assert np.abs(estimate - true).mean() < 0.06
    # unrelated speeches share almost no 5-word shingles
    assert (sig[0] == sig[1]).mean() < 0.1


def test_band_keys_depend_on_the_document_alone():
    docs = speeches(12)
    scorer = MinHashScorer()
    together, has = scorer.band_keys(pa.array(docs))
    alone = np.vstack([scorer.band_keys(pa.array([d]))[0] for d in reversed(docs)])[::-1]
    assert has.all() and (together == alone).all()
    # punctuation, case, digits and diacritics are normalised away before shingling
    a, b = scorer.band_keys(
        pa.array(["Café, au lait: 12 cups. One two three four", "cafe au lait 7 cups one two THREE four"])
    )[0]
    assert (a == b).all()


def test_short_documents_have_no_signature():
    keys, has = MinHashScorer().band_keys(
        pa.array(["four words only here", "", None, "five words are just enough"])
    )
    assert has.tolist() == [False, False, False, True]


def test_options_and_version():
    s = make_scorer("minhash:bands=20,rows=5", REPO)
    assert (s.bands, s.rows, s.ngram, s.seed) == (20, 5, 5, 1)
    assert "b20r5n5s1" in s.version and make_scorer("minhash", REPO).version != s.version
    for bad in ("minhash:bands=x", "minhash:width=3", "minhash:rows=0"):
        with pytest.raises(ValueError, match="minhash option"):
            make_scorer(bad, REPO)
    with pytest.raises(ValueError, match="corpus-level"):
        s.score(pa.record_batch({"id": ["a"], "text": ["x"]}))


def test_exact_keys_follow_the_documented_normalisation():
    k = text_keys(
        pa.array(["The  ﬁle\tIS here\n", "the file is here", "The file, is here", "Ｔｈｅ file is here"])
    )
    keys = k.to_pylist()
    assert keys[0] == keys[1] == keys[3]  # NFKC (ligature, full-width), case, whitespace
    assert keys[2] != keys[1]  # punctuation is kept
    assert all(len(x) == 32 for x in keys)
    with pytest.raises(ValueError, match="takes no options"):
        ExactDupScorer.from_spec("x", REPO)
