"""FineWeb quality rules (Penedo et al. 2024, §3.3) as datatrove's FineWebQualityFilter applies them.

Lines are ``text.split("\\n")`` without the blank ones. The list ratio divides the number of
newlines by the number of spaCy words.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from assay.scorers.heuristics.doc import ParsedBatch
from assay.scorers.heuristics.lists import datatrove_punctuation
from assay.scorers.heuristics.text import char_class, first_failure, per_row, python_class, ratio, repeated

# datatrove FineWebQualityFilter defaults.
MIN_LINE_PUNCT = 0.12
MAX_SHORT_LINES = 0.67
SHORT_LINE_CHARS = 30
MAX_CHAR_DUP = 0.01
MAX_NEWLINE_WORD_RATIO = 0.3

COLUMNS = [
    ("fineweb_line_punct_ratio", pa.float64()),
    ("fineweb_short_line_ratio", pa.float64()),
    ("fineweb_char_dup_ratio", pa.float64()),
    ("fineweb_list_ratio", pa.float64()),
    ("fineweb_keep", pa.bool_()),
    ("fineweb_reason", pa.string()),  # datatrove's reason for the drop; null when kept
]


def signals(doc: ParsedBatch) -> dict[str, np.ndarray]:
    n = doc.n
    pieces, piece_doc = doc.pieces, doc.piece_doc
    filled = pieces.str.contains(python_class("isspace", negate=True)).to_numpy()
    lines, line_doc = pieces.filter(filled), piece_doc[filled]
    n_lines = per_row(line_doc, n)
    _, terminal = datatrove_punctuation()
    punct_end = lines.str.contains(char_class(terminal) + "$").to_numpy()
    short = lines.str.len_chars().to_numpy() <= SHORT_LINE_CHARS
    dup, _ = repeated(lines, line_doc)
    dup_chars = per_row(line_doc[dup], n, lines.str.len_chars().to_numpy()[dup])
    newlines = doc.texts.str.count_matches("\n", literal=True).to_numpy()
    out = {
        "fineweb_line_punct_ratio": ratio(per_row(line_doc[punct_end], n), n_lines),
        "fineweb_short_line_ratio": ratio(per_row(line_doc[short], n), n_lines),
        "fineweb_char_dup_ratio": ratio(dup_chars, doc.chars - newlines),
        "fineweb_list_ratio": ratio(newlines, per_row(doc.word_doc, n)),
    }
    # FineWebQualityFilter's rules in its order; the ratios are NaN only where "empty" failed
    with np.errstate(invalid="ignore"):
        rules = [
            ("empty", n_lines == 0),
            ("line_punct_ratio", out["fineweb_line_punct_ratio"] < MIN_LINE_PUNCT),
            ("short_line_ratio", out["fineweb_short_line_ratio"] > MAX_SHORT_LINES),
            ("char_dup_ratio", out["fineweb_char_dup_ratio"] > MAX_CHAR_DUP),
            ("list_ratio", out["fineweb_list_ratio"] > MAX_NEWLINE_WORD_RATIO),
        ]
    out["fineweb_keep"], out["fineweb_reason"] = first_failure(rules, n)
    return out
