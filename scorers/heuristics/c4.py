"""C4 rules (Raffel et al. 2020, §2.2) as datatrove's C4QualityFilter applies them.

Each line (``str.splitlines``, stripped, citations such as "[1]" removed) is kept when it ends in
terminal punctuation, has at least three words, no word over 1000 characters, and mentions
neither "javascript" nor a cookie/terms phrase. A document is dropped when a line that got that
far contains "lorem ipsum" or "{", or when its kept lines hold fewer than five sentences.
Sentences are counted as spaCy's sentencizer counts them on each kept line: a sentence starts
at the first non-punctuation token after a sentence-final mark. Annotating never rewrites the
text: the kept lines only decide ``c4_keep`` and ``c4_sentence_count``.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from assay.scorers.heuristics.doc import ParsedBatch
from assay.scorers.heuristics.lists import (
    C4_CITATION,
    C4_END_MARKS,
    C4_POLICY_PHRASES,
    sentence_end_chars,
    unicode_punctuation,
)
from assay.scorers.heuristics.text import (
    char_class,
    first_failure,
    per_row,
    python_class,
    ratio,
    whitespace,
)
from assay.scorers.heuristics.words import split_words

# datatrove C4QualityFilter defaults (TensorFlow Datasets c4_utils.py).
MIN_SENTENCES = 5
MIN_WORDS_PER_LINE = 3
MAX_WORD_CHARS = 1000

COLUMNS = [
    ("c4_terminal_punct_lines_frac", pa.float64()),
    ("c4_short_lines_frac", pa.float64()),
    ("c4_has_javascript", pa.bool_()),
    ("c4_has_lorem_ipsum", pa.bool_()),
    ("c4_has_curly_bracket", pa.bool_()),
    ("c4_has_policy_phrase", pa.bool_()),
    ("c4_kept_lines_frac", pa.float64()),
    ("c4_sentence_count", pa.int64()),
    ("c4_keep", pa.bool_()),
    ("c4_reason", pa.string()),  # datatrove's reason for the drop; null when kept
]

# token classes for the sentencizer: ends a sentence, punctuation (no effect), anything else
END, PUNCT, OTHER = 0, 1, 2


def signals(doc: ParsedBatch) -> dict[str, np.ndarray]:
    n = doc.n
    lines, line_doc = doc.lines, doc.line_doc
    stripped = lines.str.strip_chars(whitespace())
    chunk = python_class("isspace", negate=True) + "+"
    n_words = stripped.str.count_matches(chunk).to_numpy()
    long_word = np.zeros(len(lines), dtype=bool)
    maybe = np.flatnonzero(stripped.str.len_chars().to_numpy() > MAX_WORD_CHARS)
    if len(maybe):
        longest = (
            stripped.gather(maybe).str.extract_all(chunk).list.eval(pl.element().str.len_chars()).list.max()
        )
        long_word[maybe] = longest.fill_null(0).to_numpy() > MAX_WORD_CHARS

    cleaned = stripped.str.replace_all(C4_CITATION, "")
    terminal = np.zeros(len(lines), dtype=bool)
    for mark in C4_END_MARKS:
        terminal |= cleaned.str.ends_with(mark).to_numpy()
    terminal &= ~cleaned.str.ends_with("...").to_numpy()
    lower = cleaned.str.to_lowercase()
    lorem = lower.str.contains("lorem ipsum", literal=True).to_numpy()
    javascript = lower.str.contains("javascript", literal=True).to_numpy()
    curly = cleaned.str.contains("{", literal=True).to_numpy()
    policy = lower.str.contains_any(list(C4_POLICY_PHRASES)).to_numpy()

    # the filter's order: line rules first, then the document rules on lines that got that far
    reached = ~long_word & terminal & (n_words >= MIN_WORDS_PER_LINE)
    fails_doc = reached & (lorem | (~javascript & curly))
    kept = reached & ~lorem & ~javascript & ~curly & ~policy
    sentences = per_row(line_doc, n, _sentences(doc, stripped, cleaned, kept))

    n_lines = per_row(line_doc, n)
    out = {
        "c4_terminal_punct_lines_frac": ratio(per_row(line_doc[terminal], n), n_lines),
        "c4_short_lines_frac": ratio(per_row(line_doc[n_words < MIN_WORDS_PER_LINE], n), n_lines),
        "c4_has_javascript": per_row(line_doc[javascript], n) > 0,
        "c4_has_lorem_ipsum": per_row(line_doc[lorem], n) > 0,
        "c4_has_curly_bracket": doc.texts.str.contains("{", literal=True).to_numpy(),
        "c4_has_policy_phrase": per_row(line_doc[policy], n) > 0,
        "c4_kept_lines_frac": ratio(per_row(line_doc[kept], n), n_lines),
        "c4_sentence_count": sentences.astype(np.int64),
    }
    # the filter stops at the first line that drops the whole document: that line names the reason
    failing = np.flatnonzero(fails_doc)
    docs, at = np.unique(line_doc[failing], return_index=True)
    first_is_lorem = lorem[failing[at]]
    lorem_first = np.zeros(n, dtype=bool)
    lorem_first[docs[first_is_lorem]] = True
    curly_first = np.zeros(n, dtype=bool)
    curly_first[docs[~first_is_lorem]] = True
    rules = [
        ("lorem_ipsum", lorem_first),
        ("curly_bracket", curly_first),
        ("too_few_sentences", sentences < MIN_SENTENCES),
    ]
    out["c4_keep"], out["c4_reason"] = first_failure(rules, n)
    return out


def _sentences(doc: ParsedBatch, stripped: pl.Series, cleaned: pl.Series, kept: np.ndarray) -> np.ndarray:
    """Sentences in each kept line (0 for the other lines)."""
    words = doc.words
    # a removed citation changes the line's tokens: cut those lines again
    changed = np.flatnonzero(kept & (cleaned != stripped).to_numpy())
    kept_unchanged = kept.copy()
    kept_unchanged[changed] = False
    parts = [words.filter(pl.Series(kept_unchanged[words["line"].to_numpy()]))]
    if len(changed):
        recut = split_words(cleaned.gather(changed), with_gaps=True)
        parts.append(recut.with_columns(line=pl.Series(changed[recut["row"].to_numpy()])).drop("row"))
    tokens = pl.concat(parts, how="diagonal").select("line", "word", "ws_before")
    if len(changed):
        tokens = tokens.sort("line", maintain_order=True)
    line = tokens["line"].to_numpy()
    word = tokens["word"]
    cls = np.full(len(word), OTHER, dtype=np.int8)
    punct_only = "^" + char_class(unicode_punctuation()) + "+$"
    cls[word.str.contains(punct_only).to_numpy()] = PUNCT
    cls[word.is_in(pl.Series(sorted(sentence_end_chars())).implode()).to_numpy()] = END
    # spaCy's whitespace token before a word is an OTHER token; punctuation tokens change nothing
    ws = tokens["ws_before"].to_numpy()
    slot_cls = np.stack([np.full(len(word), OTHER, dtype=np.int8), cls], axis=1).ravel()
    slot_on = np.stack([ws, cls != PUNCT], axis=1).ravel()
    ev_cls = slot_cls[slot_on]
    ev_line = np.repeat(line, 2)[slot_on]
    start = (ev_cls[1:] == OTHER) & (ev_cls[:-1] == END) & (ev_line[1:] == ev_line[:-1])
    counts = np.zeros(len(kept), dtype=np.int64)
    counts[kept] = 1
    counts += np.bincount(ev_line[1:][start], minlength=len(kept))
    return counts
