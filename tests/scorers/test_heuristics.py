"""The heuristics scorer against datatrove's filters and RedPajama's definitions, on real text.

The fixture (tests/fixtures/heuristics, see SOURCE.md) holds Common Crawl pages from dolma and
public-domain NLTK texts in many languages and scripts. The reference values are computed per
document, the slow way, from datatrove's own tokenizer and helpers and from the written-out
RedPajama definitions; the scorer computes them for the whole batch at once.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import string
import unicodedata
from collections import Counter

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from datatrove.data import Document
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.pipeline.filters.c4_filters import CITATION_REGEX, END_PUNCTUATION, POLICY_SUBSTRINGS
from datatrove.pipeline.filters.gopher_quality_filter import STOP_WORDS
from datatrove.pipeline.filters.gopher_repetition_filter import (
    find_all_duplicate,
    find_duplicates,
    find_top_duplicate,
    get_n_grams,
)
from datatrove.utils.text import PUNCTUATION_SET, TERMINAL_PUNCTUATION, split_into_sentences, split_into_words

from assay.scorers.base import Scorer, check_scored
from assay.scorers.heuristics import HeuristicsScorer
from assay.scorers.heuristics.words import PREFIX_MARKS, SUFFIX_MARKS, split_words

KEEPS = ("gopher_quality_keep", "gopher_repetition_keep", "c4_keep", "fineweb_keep")
REASONS = ("gopher_quality_reason", "gopher_repetition_reason", "c4_reason", "fineweb_reason")
FILTERS = {
    "gopher_quality": GopherQualityFilter,
    "gopher_repetition": GopherRepetitionFilter,
    "c4": C4QualityFilter,
    "fineweb": FineWebQualityFilter,
}


def datatrove_decisions(texts: list[str]) -> dict[str, list]:
    """Each filter's ``filter(doc)`` as keep and reason columns: it returns True, False, or
    (False, reason); a bare False would read as reason "False" and fail the comparison."""
    out = {}
    for prefix, cls in FILTERS.items():
        f = cls()
        results = [f.filter(Document(text=t, id=str(i))) for i, t in enumerate(texts)]
        out[f"{prefix}_keep"] = [bool(r[0] if isinstance(r, tuple) else r) for r in results]
        out[f"{prefix}_reason"] = [
            r[1] if isinstance(r, tuple) else (None if r else "False") for r in results
        ]
    return out


def score(texts: list[str | None], **settings) -> dict[str, list]:
    batch = pa.RecordBatch.from_pydict({"id": [str(i) for i in range(len(texts))], "text": texts})
    scorer = HeuristicsScorer(**settings)
    out = scorer.score(batch)
    assert check_scored(batch, out, scorer) is out
    return out.to_pydict()


@pytest.fixture(scope="module")
def docs(fixtures) -> list[str]:
    with gzip.open(fixtures / "heuristics" / "docs.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


@pytest.fixture(scope="module")
def scored(docs) -> dict[str, list]:
    return score(docs)


@pytest.fixture(scope="module")
def reference(docs) -> dict[str, list]:
    return datatrove_decisions(docs)


@pytest.fixture(scope="module")
def words(docs) -> list[list[str]]:
    return [split_into_words(t) for t in docs]


def close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def assert_column(scored: dict, name: str, expected: list) -> None:
    bad = [
        (i, got, want) for i, (got, want) in enumerate(zip(scored[name], expected)) if not close(got, want)
    ]
    assert not bad, f"{name}: {len(bad)} documents differ, first: {bad[:3]}"


def test_is_a_scorer_with_named_columns():
    scorer = HeuristicsScorer()
    assert isinstance(scorer, Scorer) and scorer.name == "heuristics"
    names = scorer.output_schema().names
    assert len(names) == len(set(names)) == 53
    assert all(re.fullmatch(r"(gopher|c4|fineweb|rp)_[a-z0-9_]+", n) for n in names)
    assert set(KEEPS) <= set(names) and set(REASONS) <= set(names)
    assert all(scorer.output_schema().field(k).type == pa.bool_() for k in KEEPS)
    assert all(scorer.output_schema().field(r).type == pa.string() for r in REASONS)


def test_keep_columns_agree_with_datatrove_filters(docs, scored, reference):
    for column in KEEPS:
        agree = np.mean(np.array(scored[column]) == np.array(reference[column]))
        assert agree >= 0.995, f"{column}: {agree:.2%} agreement"
        # both outcomes occur in the fixture, so the comparison means something
        assert 0 < sum(reference[column]) < len(docs), column


def test_reasons_are_the_ones_datatrove_returns(docs, scored, reference):
    """Each reason column is what the filter's ``filter(doc)`` returns for the same document:
    its first failing rule, in its own words, and null where it keeps the document."""
    for column in REASONS:
        bad = [
            (i, got, want)
            for i, (got, want) in enumerate(zip(scored[column], reference[column]))
            if got != want
        ]
        assert not bad, f"{column}: {len(bad)} documents differ, first: {bad[:3]}"
        # more than one reason occurs in the fixture, so the order of the rules is exercised
        assert len({r for r in reference[column] if r is not None}) >= 2, column


def test_reason_is_null_exactly_when_kept(scored):
    """``GROUP BY <reason>`` explains every drop: a reason for each dropped document, none for a kept one."""
    for keep, reason in zip(KEEPS, REASONS):
        assert all((r is None) == k for k, r in zip(scored[keep], scored[reason])), reason


def test_words_are_spacys_words(docs, words):
    frame = split_words(pl.Series(docs))
    ours = [[] for _ in docs]
    for row, word in zip(frame["row"].to_list(), frame["word"].to_list()):
        ours[row].append(word)
    assert ours == words


def test_shaped_chunks_split_as_spacy_splits_them():
    """Every prefix mark, core shape and suffix sequence the vectorised path claims, checked
    against spaCy itself (and special cases such as "Mr." or "dont," left to spaCy)."""
    cores = ["word", "Word", "WORD", "a", "I", "s", "US", "Mr", "dont", "Im", "über", "naïve", "日本", "Σ"]
    cores += ["2019", "1,000", "3.5", "12:30", "1990-2000", "e-mail", "post-Brexit", "x-ray-like", "8"]
    tails = ["", ".", "'s", "’s", "'s.", ").", ".)", '."', ',"', "...", "!?", ":)", "'", ".”", ");"]
    tails += list(SUFFIX_MARKS)
    chunks = [p + c + t for p in ["", *PREFIX_MARKS] for c in cores for t in tails]
    frame = split_words(pl.Series(chunks))
    ours = [[] for _ in chunks]
    for row, word in zip(frame["row"].to_list(), frame["word"].to_list()):
        ours[row].append(word)
    expected = [split_into_words(c) for c in chunks]
    wrong = [(c, o, e) for c, o, e in zip(chunks, ours, expected) if o != e]
    assert not wrong, wrong[:5]


def test_gopher_quality_signals(docs, words, scored):
    def symbol(w):
        return all(ch in PUNCTUATION_SET for ch in w)

    word_counts, means, hashes, alphas, stops, bullets = [], [], [], [], [], []
    for text, ws in zip(docs, words):
        kept = [w for w in ws if not symbol(w)]
        word_counts.append(len(kept))
        means.append(float(np.mean([len(w) for w in kept])) if kept else None)
        hashes.append(text.count("#") / len(ws) if ws else None)
        alphas.append(sum(any(c.isalpha() for c in w) for w in ws) / len(ws) if ws else None)
        stops.append(len(set(STOP_WORDS) & set(ws)))
        lines = text.splitlines()
        bullets.append(sum(s.lstrip().startswith(("•", "-")) for s in lines) / len(lines) if lines else None)
    assert_column(scored, "gopher_word_count", word_counts)
    assert_column(scored, "gopher_token_count", [len(ws) for ws in words])
    assert_column(scored, "gopher_mean_word_length", means)
    assert_column(scored, "gopher_hash_word_ratio", hashes)
    assert_column(scored, "gopher_alpha_words_frac", alphas)
    assert_column(scored, "gopher_stop_word_count", stops)
    assert_column(scored, "gopher_bullet_lines_frac", bullets)


def test_gopher_repetition_signals(docs, words, scored):
    for n in (2, 3, 4):
        expected = []
        for text, ws in zip(docs, words):
            grams = get_n_grams(ws, n)
            expected.append(find_top_duplicate(grams) / len(text) if grams else (0.0 if text else None))
        assert_column(scored, f"gopher_top_{n}gram_char_frac", expected)
    for n in range(5, 11):
        expected = [find_all_duplicate(ws, n) / len(t) if t else None for t, ws in zip(docs, words)]
        assert_column(scored, f"gopher_dup_{n}gram_char_frac", expected)
    lines = [find_duplicates(re.split("\n+", t)) for t in docs]
    assert_column(
        scored, "gopher_dup_line_frac", [d / len(re.split("\n+", t)) for (d, _), t in zip(lines, docs)]
    )
    assert_column(
        scored, "gopher_dup_line_char_frac", [c / len(t) if t else None for (_, c), t in zip(lines, docs)]
    )
    paras = [re.split(r"\n{2,}", t.strip()) for t in docs]
    assert_column(scored, "gopher_dup_para_frac", [find_duplicates(p)[0] / len(p) for p in paras])


def test_fineweb_signals(docs, words, scored):
    punct, dup, lists = [], [], []
    for text, ws in zip(docs, words):
        lines = [line for line in text.split("\n") if line.strip()]
        if not lines:
            punct.append(None)
            dup.append(None)
        else:
            punct.append(sum(line.endswith(tuple(TERMINAL_PUNCTUATION)) for line in lines) / len(lines))
            dup.append(find_duplicates(lines)[1] / len(text.replace("\n", "")))
        lists.append(text.count("\n") / len(ws) if ws else None)
    assert_column(scored, "fineweb_line_punct_ratio", punct)
    assert_column(scored, "fineweb_char_dup_ratio", dup)
    assert_column(scored, "fineweb_list_ratio", lists)


def test_c4_sentence_count(docs, scored):
    """Sentences in the lines C4 keeps, counted with datatrove's own sentence splitter."""
    expected = []
    for text in docs:
        count = 0
        for line in text.splitlines():
            line = line.strip()
            n_words = len(line.split())
            if any(len(w) > 1000 for w in line.split()):
                continue
            line = CITATION_REGEX.sub("", line)
            low = line.lower()
            if not line.endswith(END_PUNCTUATION) or line.endswith("...") or n_words < 3:
                continue
            if (
                "lorem ipsum" in low
                or "javascript" in low
                or "{" in line
                or any(p in low for p in POLICY_SUBSTRINGS)
            ):
                continue
            count += len(split_into_sentences(line))
        expected.append(count)
    assert_column(scored, "c4_sentence_count", expected)


def rp_normalize(text: str) -> str:
    """RedPajama-Data v2's normalisation: ASCII punctuation out, lower case, whitespace, NFD."""
    text = text.translate(str.maketrans("", "", string.punctuation)).lower().strip()
    return unicodedata.normalize("NFD", re.sub(r"\s+", " ", text))


def test_redpajama_signals(docs, scored):
    expected: dict[str, list] = {name: [] for name in scored if name.startswith("rp_")}
    for text in docs:
        words = rp_normalize(text).split()
        # NLTK's WordPunctTokenizer pattern under Python's re, as RedPajama ran it (NLTK >= 3.10
        # compiles it with the regex module, whose \w leaves out numerals such as "½")
        raw = re.findall(r"\w+|[^\w\s]+", text)
        lines = re.findall(r"[^\n]*\n|[^\n]+$", text)
        norm_lines = [rp_normalize(line) for line in lines]
        counts = Counter(words)
        e = expected
        e["rp_word_count"].append(len(words))
        e["rp_mean_word_length"].append(sum(map(len, words)) / len(words) if words else None)
        e["rp_frac_unique_words"].append(len(counts) / len(words) if words else None)
        entropy = -sum(c / len(words) * math.log(c / len(words)) for c in counts.values())
        e["rp_unigram_entropy"].append(entropy if words else None)
        alpha = sum(re.search("[a-zA-Z]", w) is not None for w in raw)
        e["rp_frac_no_alph_words"].append(1 - alpha / len(raw) if raw else None)
        e["rp_num_sentences"].append(len(re.findall(r"\b[^.!?]+[.!?]*", text)))
        ends = sum(line.rstrip().endswith((".", "!", "?", "”")) for line in lines)
        e["rp_lines_ending_with_terminal_punct"].append(ends / len(lines) if lines else None)
        norm_chars = sum(map(len, norm_lines))
        numeric = sum(c.isnumeric() for line in norm_lines for c in line)
        e["rp_numerical_chars_fraction"].append(numeric / norm_chars if norm_chars else None)
        e["rp_uppercase_letter_fraction"].append(sum(map(str.isupper, text)) / len(text) if text else None)
        for n in (2, 3):
            grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1)).most_common(1)
            top = 0.0
            if grams and grams[0][1] > 1:
                top = sum(map(len, grams[0][0])) * grams[0][1] / sum(map(len, words))
            e[f"rp_frac_chars_top_{n}gram"].append(top)
    for name, values in expected.items():
        assert_column(scored, name, values)


def test_edge_cases_match_datatrove():
    texts = [
        "",
        " ",
        "\n",
        "\n\n\n",
        "...",
        "#",
        "\r\n\r\n",
        "One line\r\nTwo line\x0bthree\x0cfour\u2028five\x85six\n",
        "x" * 1200 + " is a very long word. It is followed by more words here. And more.",
        "See the note [1]. It has words. [edit]\nAnother line here ends [citation needed].",
        "A line with a { bracket in it. Yes.\nThe privacy policy is here. Yes it is.",
        "Enable JavaScript to see this. Please do.\nLorem ipsum dolor sit amet, it says.",
    ]
    ours = score(texts)
    reference = datatrove_decisions(texts)
    for column in KEEPS + REASONS:
        assert ours[column] == reference[column], column


def test_null_and_empty_text_do_not_crash():
    out = score([None, "", "  \n "])
    assert out["gopher_word_count"] == [0, 0, 0]
    assert out["gopher_mean_word_length"] == [None, None, None]
    assert out["rp_num_sentences"] == [0, 0, 0]
    for column in KEEPS:  # every filter drops an empty text; a blank one passes only the repetition rules
        assert out[column] == [False, False, column == "gopher_repetition_keep"]
    assert out["gopher_quality_reason"] == ["gopher_short_doc"] * 3
    assert out["gopher_repetition_reason"] == ["empty", "empty", None]
    assert out["c4_reason"] == ["too_few_sentences"] * 3
    assert out["fineweb_reason"] == ["empty"] * 3


def test_slices_give_the_same_columns(docs, scored):
    """A batch scored in many small slices equals the batch scored at once."""
    sliced = score(docs[:60], slice_chars=20_000)
    for name, values in sliced.items():
        assert_column({name: values}, name, scored[name][:60])


@pytest.mark.slow
def test_agreement_on_the_shared_corpora(shared_data):
    """The bench's check on every real document in ../shared/data/corpora (about a CPU minute)."""
    texts = []
    sources = [shared_data / "corpora" / "web_trafilatura_eval" / "trafilatura_eval_pages.jsonl.gz"]
    sources += sorted((shared_data / "corpora" / "misc").glob("dolma_cc_en_head-*.jsonl.gz"))
    for path in sources:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f]
    assert len(texts) >= 1000
    ours, reference = score(texts), datatrove_decisions(texts)
    for column in KEEPS + REASONS:
        agree = np.mean([a == b for a, b in zip(ours[column], reference[column])])
        assert agree >= 0.995, f"{column}: {agree:.2%} agreement"
