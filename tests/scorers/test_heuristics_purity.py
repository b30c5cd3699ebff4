"""A document's heuristics columns are a function of its text alone, never of its batch.

The word splitter hands the unusual chunks of a whole batch to spaCy in one call. spaCy
matches special cases (emoticons above all) across single spaces; joined by spaces, chunks of
different documents once matched each other there, so a document's words, and its keep
decisions, changed with its neighbours. Within one text that matching is real (datatrove's
spaCy does it), so random texts are also checked word for word against datatrove.
"""

from __future__ import annotations

import math

import polars as pl
import pyarrow as pa
from datatrove.data import Document
from datatrove.pipeline.filters import GopherQualityFilter
from datatrove.utils.text import split_into_words
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay.scorers.heuristics import HeuristicsScorer
from assay.scorers.heuristics.words import split_words

# Pieces spaCy treats specially or splits by context: emoticons, abbreviations, contractions,
# punctuation runs, quotes, dashes, URLs, units, numbers, scripts, emoji, invisible characters.
TRICKY = [":-)", "(:", ":(", ":()", ":((", ":)", ";)", ":p", ":D", "=(", "<3", "^_^", "o.O", "xD"]
TRICKY += ["e.g.", "i.e.", "U.S.", "Mr.", "Dr.", "St.", "a.", "'s", "’s", "n't", "Im", "dont", "can't"]
TRICKY += ["won't", "gonna", "—", "–", "-", "--", "...", "…", ")))", "(((", "(", ")", "[", "]", "{", "}"]
TRICKY += [":", ";", ",", ".", "!", "?", "!?", '"', "'", "“", "”", "‘", "’", "«", "»", "#", "*", "&", "%"]
TRICKY += ["$", "€", "http://example.com/a?b=c", "www.example.org", "me@example.com", "10km", "5kg"]
TRICKY += ["3.5", "1,000", "12:30", "1990-2000", "2nd", "e-mail", "x-ray", "über", "naïve", "日本語"]
TRICKY += ["Σίσυφος", "😀", "👍🏽", "🇫🇷", "\u200b", "\u00ad"]
WORDS = ["the", "and", "of", "to", "with", "that", "have", "be", "cat", "dog", "Word", "WORD", "lorem"]
WORDS += ["ipsum", "javascript", "cookie", "policy"]
# "" glues pieces into one chunk ("that:(", ")))e.g."), where the context-dependent splits live
GLUED = [":(", ":)", ":-)", "(:", ":", "(", ")", ")))", "'s", ".", "...", "e.g.", "Mr.", "😀", "—", '"']
SEPARATORS = ["", "", " ", " ", " ", "  ", "\n", "\n\n", "\t", "\r\n", "\u00a0", "\u2028", " \n "]
# long enough for the Gopher rules past the word count, so that the keep decisions vary
PROSE = (
    "The rain did not stop for the whole day, and the roads to the farm were full of water. We "
    "stayed in with the dog and the cat, read old books and waited for the sun to come back. It "
    "came out at last in the evening, and the children ran outside to play in the fields.\n"
)

pieces = (
    st.sampled_from(TRICKY + WORDS)
    | st.builds(str.__add__, st.sampled_from(WORDS + TRICKY), st.sampled_from(GLUED))
    | st.text(max_size=3)
)
# a batch puts one text's last chunk beside the next one's first: texts often start or end with a mark
EDGES = st.sampled_from(["", "", ")", ")))", "(", ":", "-)", ":(", "I:(", "that:(", "'s", "e.g.", "😀", "”"])
texts = st.builds(
    lambda head, prose, parts, tail: (
        head + (PROSE if prose else "") + "".join(p + s for p, s in parts) + tail
    ),
    EDGES,
    st.booleans(),
    st.lists(st.tuples(pieces, st.sampled_from(SEPARATORS)), max_size=30),
    EDGES,
)
# no example database: it would write .hypothesis/ into the working tree
PROPERTY = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def word_lists(batch: list[str]) -> list[list[tuple[str, bool]]]:
    frame = split_words(pl.Series(batch, dtype=pl.String), with_gaps=True)
    out: list[list[tuple[str, bool]]] = [[] for _ in batch]
    for row, word, ws in zip(frame["row"].to_list(), frame["word"].to_list(), frame["ws_before"].to_list()):
        out[row].append((word, ws))
    return out


def rows(batch: list[str], slice_chars: int = 1_000_000) -> list[dict]:
    table = HeuristicsScorer(slice_chars=slice_chars).score(pa.RecordBatch.from_pydict({"text": batch}))
    return table.to_pylist()


def same(a, b) -> bool:
    """Exact equality, NaN equal to NaN (a null column value is None on both sides)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def assert_same_row(got: dict, want: dict, text: str) -> None:
    differ = {k: (got[k], want[k]) for k in want if not same(got[k], want[k])}
    assert not differ, f"{text!r}: columns differ in a batch (batch, alone): {differ}"


@settings(PROPERTY, max_examples=150)
@given(st.lists(texts, min_size=1, max_size=8))
def test_words_of_a_text_do_not_depend_on_its_batch(batch):
    """Alone or in a batch, a text's words (and whitespace marks) are the same, and its words
    are datatrove's."""
    together = word_lists(batch)
    for text, words in zip(batch, together):
        alone = word_lists([text])[0]
        assert words == alone, text
        assert [w for w, _ in alone] == split_into_words(text), text


@settings(PROPERTY, max_examples=40)
@given(st.lists(texts, min_size=1, max_size=5), st.data())
def test_columns_of_a_document_do_not_depend_on_its_batch(batch, data):
    """Every column of every document: alone, in a random batch, in that batch reordered, and
    in a batch scored in small slices, all equal."""
    alone = [rows([t])[0] for t in batch]
    order = data.draw(st.permutations(range(len(batch))), label="order")
    slice_chars = data.draw(st.sampled_from([1_000_000, 100]), label="slice_chars")
    for i, got in enumerate(rows(batch)):
        assert_same_row(got, alone[i], batch[i])
    for i, got in zip(order, rows([batch[i] for i in order], slice_chars)):
        assert_same_row(got, alone[i], batch[i])


# Found before the fix: "that:(" followed, in the next document, by a chunk starting with ")"
# read as the emoticon ":()" across the two, which split ":(" into ":" "(" in the first.
EMOTICON_DOC = (
    "The rain did not stop for the whole day, and the roads to the farm were full of water. "
    "We stayed in with the dog and the cat, read old books and waited for the sun to come back, "
    "hour 1 hour 2, hour 3, hour 4. "
    "It came out at last in the evening, and that was that:("
)
PEER_DOC = ") said the reply, and that was all."


def test_an_emoticon_keeps_its_tokens_beside_a_peer():
    assert word_lists(["I:(", ")"])[0] == [("I", False), (":(", False)]
    alone = rows([EMOTICON_DOC])[0]
    assert alone["gopher_token_count"] == len(split_into_words(EMOTICON_DOC)) == 68
    # 55 of 68 tokens hold a letter: 0.809, just over the 0.8 the filter needs; one more token drops it
    assert alone["gopher_quality_keep"] is GopherQualityFilter().filter(Document(text=EMOTICON_DOC, id="a"))
    for batch in ([EMOTICON_DOC, PEER_DOC], [PEER_DOC, EMOTICON_DOC, PEER_DOC]):
        assert_same_row(rows(batch)[batch.index(EMOTICON_DOC)], alone, EMOTICON_DOC)
