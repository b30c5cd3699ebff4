"""The 11 RedPajama-V2 natural-language signals Meta-rater uses (Meta-rater §3, dataset card of
opendatalab/SlimPajama-Meta-rater), defined as in RedPajama-Data v2 (app/src/core).

Normalised words: ASCII punctuation removed, lower-cased, NFD, split on whitespace. Raw words:
NLTK's WordPunctTokenizer pattern ``\\w+|[^\\w\\s]+`` with Python ``re``'s ``\\w`` (alphanumeric
or "_"), as RedPajama ran it; NLTK 3.10 compiles that pattern with the ``regex`` module, whose
``\\w`` leaves out numerals such as "½". Lines: the text cut after each newline. Three
signals are per line in RedPajama (terminal punctuation, numerical and upper-case fractions);
here they are per document: the fraction of lines ending in a terminal mark, and the numerical
and upper-case characters over all characters of the lines. RedPajama rounds to 8 decimals;
these columns are not rounded.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from assay.scorers.heuristics.doc import ParsedBatch
from assay.scorers.heuristics.lists import RP_PUNCTUATION, RP_TERMINAL_MARKS
from assay.scorers.heuristics.ngrams import WordHashes, top_ngram, windows
from assay.scorers.heuristics.text import (
    char_class,
    explode,
    per_row,
    python_chars,
    python_class,
    ratio,
    whitespace,
)

COLUMNS = [
    ("rp_word_count", pa.int64()),
    ("rp_mean_word_length", pa.float64()),
    ("rp_frac_unique_words", pa.float64()),
    ("rp_unigram_entropy", pa.float64()),
    ("rp_frac_no_alph_words", pa.float64()),
    ("rp_num_sentences", pa.int64()),
    ("rp_lines_ending_with_terminal_punct", pa.float64()),
    ("rp_numerical_chars_fraction", pa.float64()),
    ("rp_uppercase_letter_fraction", pa.float64()),
    ("rp_frac_chars_top_2gram", pa.float64()),
    ("rp_frac_chars_top_3gram", pa.float64()),
]


def _word_class(negate: bool = False) -> str:
    """Python's ``\\w`` for str patterns: alphanumeric characters and the underscore."""
    return char_class(python_chars("isalnum") + "_", negate)


def _normalized_words(doc: ParsedBatch) -> tuple[pl.Series, np.ndarray, np.ndarray]:
    """Normalised words, their document, and their line (the piece of ``split("\\n")``)."""
    lowered = doc.pieces.str.replace_all(char_class(RP_PUNCTUATION), "").str.to_lowercase()
    nfd = pl.Series(pc.utf8_normalize(lowered.to_arrow(), form="NFD"))
    words, piece = explode(nfd.str.extract_all(python_class("isspace", negate=True) + "+"), "word")
    return words, doc.piece_doc[piece], piece


def signals(doc: ParsedBatch) -> dict[str, np.ndarray]:
    n, texts = doc.n, doc.texts
    words, word_doc, word_piece = _normalized_words(doc)
    lengths = words.str.len_chars().to_numpy().astype(np.int64)
    n_words = per_row(word_doc, n)
    word_chars = per_row(word_doc, n, lengths)
    # groups in order of first occurrence: each document's entropy terms are then summed in its
    # own word order, whatever the batch (polars' default group order varies from run to run)
    counts = pl.DataFrame({"doc": word_doc, "word": words}).group_by("doc", "word", maintain_order=True).len()
    c_doc, c = counts["doc"].to_numpy(), counts["len"].to_numpy().astype(np.float64)
    p = c / n_words[c_doc]
    entropy = per_row(c_doc, n, -p * np.log(p))

    w, s = _word_class(), python_class("isspace")
    raw_words = texts.str.count_matches(f"{w}+|[^{w[1:-1]}{s[1:-1]}]+").to_numpy()
    alpha_words = texts.str.count_matches(f"{w}*[a-zA-Z]{w}*").to_numpy()
    # re.findall(r"\b[^.!?]+[.!?]*") finds one sentence per stretch between runs of ".!?" that
    # holds a word character: it starts at that stretch's first word character
    sentences = texts.str.count_matches(f"{w}[^.!?]*").to_numpy()

    # lines: the pieces of split("\n"), less a final empty one
    pieces, piece_doc, index = doc.pieces, doc.piece_doc, doc.piece_index
    last = index == per_row(piece_doc, n)[piece_doc] - 1
    is_line = ~(last & (pieces.str.len_bytes().to_numpy() == 0))
    ends = pieces.str.strip_chars_end(whitespace())
    terminal = np.zeros(len(pieces), dtype=bool)
    for mark in RP_TERMINAL_MARKS:
        terminal |= ends.str.ends_with(mark).to_numpy()
    # a normalised line is its words joined by single spaces
    lines_with_words = per_row(np.unique(word_piece), len(pieces)) > 0
    norm_chars = word_chars + n_words - per_row(piece_doc[lines_with_words], n)
    numeric = per_row(word_doc, n, words.str.count_matches(python_class("isnumeric")).to_numpy())
    upper = texts.str.count_matches(python_class("isupper")).to_numpy()

    out = {
        "rp_word_count": n_words.astype(np.int64),
        "rp_mean_word_length": ratio(word_chars, n_words),
        "rp_frac_unique_words": ratio(per_row(c_doc, n), n_words),
        "rp_unigram_entropy": np.where(n_words > 0, entropy, np.nan),
        "rp_frac_no_alph_words": 1.0 - ratio(alpha_words, raw_words),
        "rp_num_sentences": sentences.astype(np.int64),
        "rp_lines_ending_with_terminal_punct": ratio(
            per_row(piece_doc[terminal & is_line], n), per_row(piece_doc[is_line], n)
        ),
        "rp_numerical_chars_fraction": ratio(numeric, norm_chars),
        "rp_uppercase_letter_fraction": ratio(upper, doc.chars),
    }
    hashes = WordHashes(words)
    cum = np.concatenate(([0], np.cumsum(lengths)))
    for k in (2, 3):
        top = np.zeros(n)
        starts = windows(word_doc, k)
        if len(starts):
            count, first = top_ngram(hashes.sequences(k), starts, word_doc, n)
            has = count > 1  # RedPajama scores a top n-gram seen once as 0
            top[has] = (cum[first[has] + k] - cum[first[has]]) * count[has]
        out[f"rp_frac_chars_top_{k}gram"] = np.nan_to_num(ratio(top, word_chars))  # no n-gram: 0
    return out
