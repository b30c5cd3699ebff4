"""Gopher repetition rules (Rae et al. 2021, App. A.1.1, Table A1) as datatrove's
GopherRepetitionFilter applies them.

Paragraphs are ``re.split(r"\\n{2,}", text.strip())``, lines ``re.split("\\n+", text)``; a
duplicate is an exact repeat of an earlier paragraph or line. The n-gram fractions divide
characters by ``len(text)``: the top 2-4-gram counts ``len(" ".join(ngram)) * occurrences``; the
duplicate 5-10-gram fraction counts ``"".join(ngram)`` lengths along datatrove's left-to-right scan.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from assay.scorers.heuristics.doc import ParsedBatch
from assay.scorers.heuristics.ngrams import WordHashes, repeated_chars, top_ngram, windows
from assay.scorers.heuristics.text import explode, first_failure, per_row, ratio, repeated, whitespace

# Gopher Table A1, datatrove GopherRepetitionFilter defaults.
MAX_DUP_LINES, MAX_DUP_PARAGRAPHS = 0.3, 0.3
MAX_DUP_LINE_CHARS, MAX_DUP_PARAGRAPH_CHARS = 0.2, 0.2
MAX_TOP_NGRAM = {2: 0.20, 3: 0.18, 4: 0.16}
MAX_DUP_NGRAM = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
PARAGRAPH = r"[^\n]+(?:\n[^\n]+)*"  # a maximal run without a blank line

COLUMNS = [
    ("gopher_dup_para_frac", pa.float64()),
    ("gopher_dup_para_char_frac", pa.float64()),
    ("gopher_dup_line_frac", pa.float64()),
    ("gopher_dup_line_char_frac", pa.float64()),
    *[(f"gopher_top_{n}gram_char_frac", pa.float64()) for n in MAX_TOP_NGRAM],
    *[(f"gopher_dup_{n}gram_char_frac", pa.float64()) for n in MAX_DUP_NGRAM],
    ("gopher_repetition_keep", pa.bool_()),
    ("gopher_repetition_reason", pa.string()),  # datatrove's reason for the drop; null when kept
]


def _duplicates(values: pl.Series, rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per document: number of values, of repeated values, and characters in repeated values."""
    seen, _ = repeated(values, rows)
    lengths = values.str.len_chars().to_numpy()
    return per_row(rows, n), per_row(rows[seen], n), per_row(rows[seen], n, lengths[seen])


def signals(doc: ParsedBatch) -> dict[str, np.ndarray]:
    n, chars = doc.n, doc.chars
    out: dict[str, np.ndarray] = {}

    paragraphs, para_doc = explode(doc.texts.str.strip_chars(whitespace()).str.extract_all(PARAGRAPH), "p")
    total, dups, dup_chars = _duplicates(paragraphs, para_doc, n)
    total = np.maximum(total, 1)  # a blank text is one empty paragraph
    out["gopher_dup_para_frac"] = ratio(dups, total)
    out["gopher_dup_para_char_frac"] = ratio(dup_chars, chars)

    # re.split("\n+") keeps the empty first and last pieces, and no empty piece in between
    pieces, piece_doc, index = doc.pieces, doc.piece_doc, doc.piece_index
    counts = per_row(piece_doc, n)
    last = index == counts[piece_doc] - 1
    keep = (pieces.str.len_bytes().to_numpy() > 0) | (index == 0) | last
    total, dups, dup_chars = _duplicates(pieces.filter(keep), piece_doc[keep], n)
    out["gopher_dup_line_frac"] = ratio(dups, total)
    out["gopher_dup_line_char_frac"] = ratio(dup_chars, chars)

    words, word_doc = doc.words["word"], doc.word_doc
    hashes = WordHashes(words)
    cum = np.concatenate(([0], np.cumsum(words.str.len_chars().to_numpy().astype(np.int64))))
    for k in MAX_TOP_NGRAM:
        top = np.zeros(n, dtype=np.int64)
        starts = windows(word_doc, k)
        if len(starts):  # no n-grams: datatrove skips the rule
            count, first = top_ngram(hashes.sequences(k), starts, word_doc, n)
            has = first >= 0
            top[has] = (cum[first[has] + k] - cum[first[has]] + k - 1) * count[has]
        out[f"gopher_top_{k}gram_char_frac"] = ratio(top, chars)
    for k in MAX_DUP_NGRAM:
        dup = np.zeros(n, dtype=np.int64)
        starts = windows(word_doc, k)
        if len(starts):
            dup = repeated_chars(hashes.strings(k), starts, word_doc, cum[k:] - cum[:-k], k, n)
        out[f"gopher_dup_{k}gram_char_frac"] = ratio(dup, chars)

    out["gopher_repetition_keep"], out["gopher_repetition_reason"] = first_failure(rules(out, chars), n)
    return out


def rules(s: dict[str, np.ndarray], chars: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """GopherRepetitionFilter's rules in its order, as (its reason string, fails). The
    fractions are NaN only for an empty text, which "empty" already drops."""
    with np.errstate(invalid="ignore"):
        return [
            ("empty", chars == 0),
            ("dup_para_frac", s["gopher_dup_para_frac"] > MAX_DUP_PARAGRAPHS),
            ("dup_para_char_frac", s["gopher_dup_para_char_frac"] > MAX_DUP_PARAGRAPH_CHARS),
            ("dup_line_frac", s["gopher_dup_line_frac"] > MAX_DUP_LINES),
            ("dup_line_char_frac", s["gopher_dup_line_char_frac"] > MAX_DUP_LINE_CHARS),
            *[(f"top_{k}_gram", s[f"gopher_top_{k}gram_char_frac"] > v) for k, v in MAX_TOP_NGRAM.items()],
            *[
                (f"duplicated_{k}_n_grams", s[f"gopher_dup_{k}gram_char_frac"] > v)
                for k, v in MAX_DUP_NGRAM.items()
            ],
        ]
