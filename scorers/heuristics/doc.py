"""One batch of texts cut the ways the rule sets read them: lines, newline pieces, words.

Each cut is made once per batch, flattened across documents (one row per line, piece or word,
with the index of its document), and shared by every rule set that reads it.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import polars as pl
import pyarrow as pa

from assay.scorers.heuristics.text import split_newlines, splitlines
from assay.scorers.heuristics.words import split_words


class ParsedBatch:
    """The texts of a batch (a null text reads as empty) and their flattened cuts."""

    def __init__(self, texts: pa.Array | pa.ChunkedArray | pl.Series):
        series = texts if isinstance(texts, pl.Series) else pl.Series("text", texts)
        self.texts = series.cast(pl.String).fill_null("")
        self.n = len(self.texts)

    @cached_property
    def chars(self) -> np.ndarray:
        """len(text) of every document, in code points."""
        return self.texts.str.len_chars().to_numpy().astype(np.int64)

    @cached_property
    def _lines(self) -> tuple[pl.Series, np.ndarray]:
        return splitlines(self.texts)

    @property
    def lines(self) -> pl.Series:
        """``text.splitlines()`` of every document, flattened."""
        return self._lines[0]

    @property
    def line_doc(self) -> np.ndarray:
        """Document index of each line."""
        return self._lines[1]

    @cached_property
    def words(self) -> pl.DataFrame:
        """spaCy English words, in order: ``line`` (index into ``lines``), ``word``, ``ws_before``.

        Words are cut per line: line breaks are whitespace, so a document's words are its
        lines' words, and the C4 rules, which count sentences per line, reuse them."""
        return split_words(self.lines, with_gaps=True).rename({"row": "line"})

    @cached_property
    def word_doc(self) -> np.ndarray:
        """Document index of each word."""
        return self.line_doc[self.words["line"].to_numpy()]

    @cached_property
    def _pieces(self) -> tuple[pl.Series, np.ndarray, np.ndarray]:
        return split_newlines(self.texts)

    @property
    def pieces(self) -> pl.Series:
        """``text.split("\\n")`` of every document, flattened (empty pieces included)."""
        return self._pieces[0]

    @property
    def piece_doc(self) -> np.ndarray:
        return self._pieces[1]

    @property
    def piece_index(self) -> np.ndarray:
        """Position of each piece within its document."""
        return self._pieces[2]
