"""`stats`: size counts of every document (characters, bytes, words, lines, estimated tokens)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc

# Estimated tokens = UTF-8 bytes / 4, rounded up: the usual rule of thumb for byte-level BPE
# tokenizers on English web text (GPT-2/Llama-style vocabularies give 3.6-4.5 bytes per token).
# Selection uses a real tokenizer when the recipe names one; this column is the fallback.
BYTES_PER_TOKEN = 4.0


@dataclass
class StatsScorer:
    """Characters, bytes, whitespace-separated words, lines, and estimated tokens."""

    name: ClassVar[str] = "stats"
    version: ClassVar[str] = "1"

    def output_schema(self) -> pa.Schema:
        return pa.schema(
            [
                ("chars", pa.int64()),
                ("bytes", pa.int64()),
                ("words", pa.int64()),
                ("lines", pa.int64()),
                ("tokens_est", pa.int64()),
            ]
        )

    def score(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        text = pc.fill_null(batch.column("text"), "")
        chars = pc.utf8_length(text).cast(pa.int64())
        nbytes = pc.binary_length(text).cast(pa.int64())
        words = pc.count_substring_regex(text, r"\S+").cast(pa.int64())
        newlines = pc.count_substring(text, "\n").cast(pa.int64())
        # a last line without a trailing newline still counts
        ends_open = pc.and_(pc.greater(nbytes, 0), pc.invert(pc.ends_with(text, "\n")))
        lines = pc.add(newlines, pc.cast(ends_open, pa.int64()))
        tokens = pc.cast(pc.ceil(pc.divide(pc.cast(nbytes, pa.float64()), BYTES_PER_TOKEN)), pa.int64())
        return pa.RecordBatch.from_arrays([chars, nbytes, words, lines, tokens], schema=self.output_schema())
