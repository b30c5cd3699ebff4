"""Gopher quality rules (Rae et al. 2021, App. A.1.1) as datatrove's GopherQualityFilter applies them.

Words are spaCy's English tokens. A token made only of punctuation (datatrove's
``PUNCTUATION_SET``) is a symbol, not a word: the word count and the mean word length use the
other tokens; the ratios divide by all tokens, as the filter does.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from assay.scorers.heuristics.doc import ParsedBatch
from assay.scorers.heuristics.lists import (
    GOPHER_BULLETS,
    GOPHER_ELLIPSES,
    GOPHER_STOP_WORDS,
    datatrove_punctuation,
)
from assay.scorers.heuristics.text import (
    char_class,
    first_failure,
    per_row,
    python_class,
    ratio,
    whitespace,
)

# datatrove GopherQualityFilter defaults (from Gopher A.1.1).
MIN_WORDS, MAX_WORDS = 50, 100_000
MIN_MEAN_WORD_LENGTH, MAX_MEAN_WORD_LENGTH = 3, 10
MAX_SYMBOL_WORD_RATIO = 0.1
MAX_BULLET_LINES = 0.9
MAX_ELLIPSIS_LINES = 0.3
MIN_ALPHA_WORDS = 0.8
MIN_STOP_WORDS = 2

COLUMNS = [
    ("gopher_word_count", pa.int64()),
    ("gopher_token_count", pa.int64()),
    ("gopher_mean_word_length", pa.float64()),
    ("gopher_hash_word_ratio", pa.float64()),
    ("gopher_ellipsis_word_ratio", pa.float64()),
    ("gopher_bullet_lines_frac", pa.float64()),
    ("gopher_ellipsis_lines_frac", pa.float64()),
    ("gopher_alpha_words_frac", pa.float64()),
    ("gopher_stop_word_count", pa.int64()),
    ("gopher_quality_keep", pa.bool_()),
    ("gopher_quality_reason", pa.string()),  # datatrove's reason for the drop; null when kept
]


def signals(doc: ParsedBatch) -> dict[str, np.ndarray]:
    n = doc.n
    words, word_doc = doc.words["word"], doc.word_doc
    symbols, _ = datatrove_punctuation()
    is_word = words.str.contains(char_class(symbols, negate=True)).to_numpy()
    word_len = words.str.len_chars().to_numpy()
    n_tokens = per_row(word_doc, n)
    n_words = per_row(word_doc[is_word], n)
    mean_len = ratio(per_row(word_doc[is_word], n, word_len[is_word]), n_words)
    has_alpha = words.str.contains(python_class("isalpha")).to_numpy()

    hashes = doc.texts.str.count_matches("#", literal=True).to_numpy()
    ellipses = sum(doc.texts.str.count_matches(e, literal=True).to_numpy() for e in GOPHER_ELLIPSES)

    lines, line_doc = doc.lines, doc.line_doc
    n_lines = per_row(line_doc, n)
    starts = lines.str.strip_chars_start(whitespace())
    bullet = np.zeros(len(lines), dtype=bool)
    for b in GOPHER_BULLETS:
        bullet |= starts.str.starts_with(b).to_numpy()
    ends = lines.str.strip_chars_end(whitespace())
    ellipsis_end = np.zeros(len(lines), dtype=bool)
    for e in GOPHER_ELLIPSES:
        ellipsis_end |= ends.str.ends_with(e).to_numpy()

    stop = words.is_in(pl.Series(GOPHER_STOP_WORDS).implode()).to_numpy()
    stop_seen = pl.DataFrame({"doc": word_doc[stop], "word": words.filter(stop)}).unique()
    stop_count = per_row(stop_seen["doc"].to_numpy(), n)

    out = {
        "gopher_word_count": n_words.astype(np.int64),
        "gopher_token_count": n_tokens.astype(np.int64),
        "gopher_mean_word_length": mean_len,
        "gopher_hash_word_ratio": ratio(hashes, n_tokens),
        "gopher_ellipsis_word_ratio": ratio(ellipses, n_tokens),
        "gopher_bullet_lines_frac": ratio(per_row(line_doc[bullet], n), n_lines),
        "gopher_ellipsis_lines_frac": ratio(per_row(line_doc[ellipsis_end], n), n_lines),
        "gopher_alpha_words_frac": ratio(per_row(word_doc[has_alpha], n), n_tokens),
        "gopher_stop_word_count": stop_count.astype(np.int64),
    }
    out["gopher_quality_keep"], out["gopher_quality_reason"] = first_failure(rules(out), n)
    return out


def rules(s: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """GopherQualityFilter's rules in its order, as (its reason string, fails). A NaN ratio
    (no words, no lines) only occurs where "gopher_short_doc" already failed."""
    with np.errstate(invalid="ignore"):
        return [
            ("gopher_short_doc", s["gopher_word_count"] < MIN_WORDS),
            ("gopher_long_doc", s["gopher_word_count"] > MAX_WORDS),
            ("gopher_below_avg_threshold", s["gopher_mean_word_length"] < MIN_MEAN_WORD_LENGTH),
            ("gopher_above_avg_threshold", s["gopher_mean_word_length"] > MAX_MEAN_WORD_LENGTH),
            ("gopher_too_many_hashes", s["gopher_hash_word_ratio"] > MAX_SYMBOL_WORD_RATIO),
            ("gopher_too_many_ellipsis", s["gopher_ellipsis_word_ratio"] > MAX_SYMBOL_WORD_RATIO),
            ("gopher_too_many_bullets", s["gopher_bullet_lines_frac"] > MAX_BULLET_LINES),
            ("gopher_too_many_end_ellipsis", s["gopher_ellipsis_lines_frac"] > MAX_ELLIPSIS_LINES),
            ("gopher_below_alpha_threshold", s["gopher_alpha_words_frac"] < MIN_ALPHA_WORDS),
            ("gopher_enough_stop_words", s["gopher_stop_word_count"] < MIN_STOP_WORDS),
        ]
