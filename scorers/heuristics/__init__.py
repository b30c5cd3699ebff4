"""Heuristic quality signals: Gopher quality and repetition, C4, FineWeb, RedPajama-V2.

One column per signal, and one boolean per rule set (``gopher_quality_keep``,
``gopher_repetition_keep``, ``c4_keep``, ``fineweb_keep``) that reproduces the decision of
datatrove's filter with its default settings. Beside each boolean, a reason column
(``gopher_quality_reason``, ``gopher_repetition_reason``, ``c4_reason``, ``fineweb_reason``)
holds the reason string that filter returns for a drop (its first failing rule), null when the
document is kept. A batch is cut once into lines and words (``heuristics.doc``), and every
signal is computed for the whole batch with polars and numpy kernels. No Python loop runs over
documents: only the n-grams a document repeats are walked in Python (datatrove's
duplicate-n-gram scan is sequential), and word chunks of unusual shape go to spaCy's tokenizer
once per distinct chunk. A document's columns depend on its text alone, never on the other
documents of its batch.

Words are spaCy's English tokens, as datatrove uses for English. A ratio whose denominator is
zero (no words, no lines, an empty text) is null; the keep columns are false for an empty or
null text, as every filter drops it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import polars as pl
import pyarrow as pa

from assay.scorers.heuristics import c4, fineweb, gopher, redpajama, repetition
from assay.scorers.heuristics.doc import ParsedBatch

FAMILIES = (gopher, repetition, c4, fineweb, redpajama)


@dataclass
class HeuristicsScorer:
    """Rule-based quality signals and the keep decisions of four standard filters."""

    name: ClassVar[str] = "heuristics"
    version: ClassVar[str] = "2"  # 2: reason columns; words no longer depend on batch peers
    # The kernels hold a few dozen bytes per character of text at once: larger batches are
    # scored in slices of about this many characters (one document never splits).
    slice_chars: int = 1_000_000

    def output_schema(self) -> pa.Schema:
        return pa.schema([pa.field(name, dtype) for family in FAMILIES for name, dtype in family.COLUMNS])

    def score(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        texts = pl.Series("text", batch.column("text")).cast(pl.String).fill_null("")
        ends = np.cumsum(texts.str.len_chars().to_numpy().astype(np.int64))
        slices, start = [], 0
        while start < len(texts) or not slices:
            base = ends[start - 1] if start else 0
            stop = max(int(np.searchsorted(ends, base + self.slice_chars, side="right")), start + 1)
            slices.append(self._score_slice(texts.slice(start, stop - start)))
            start = stop
        if len(slices) == 1:
            return slices[0]
        return pa.Table.from_batches(slices).combine_chunks().to_batches()[0]

    def _score_slice(self, texts: pl.Series) -> pa.RecordBatch:
        doc = ParsedBatch(texts)
        values: dict[str, np.ndarray] = {}
        for family in FAMILIES:
            values.update(family.signals(doc))
        schema = self.output_schema()
        arrays = []
        for field in schema:
            v = np.asarray(values[field.name])
            missing = np.isnan(v) if v.dtype.kind == "f" else None
            arrays.append(pa.array(v, type=field.type, mask=missing))
        return pa.RecordBatch.from_arrays(arrays, schema=schema)
