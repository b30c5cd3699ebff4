"""The contract every scorer and extractor follows.

A scorer sees one Arrow record batch of documents (at least the columns ``id`` and ``text``)
and returns one row per input row, in the same order, with the columns of ``output_schema()``.
An extractor returns any number of rows, each carrying ``doc_id``. Scorers know nothing of
shards, executors, the catalog or the CLI: ``pipelines`` brings those.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import pyarrow as pa


@runtime_checkable
class Scorer(Protocol):
    """One annotation set: ``name`` is the folder under ``annotations/`` it writes."""

    name: str
    version: str

    def output_schema(self) -> pa.Schema: ...

    def score(self, batch: pa.RecordBatch) -> pa.RecordBatch: ...


@runtime_checkable
class Extractor(Protocol):
    """A side table (triples, fact mentions): ``name`` is the folder under ``triples/``."""

    name: str
    version: str
    kind: str  # always "extractor"; lets pipelines tell the two apart without isinstance games

    def output_schema(self) -> pa.Schema: ...

    def extract(self, batch: pa.RecordBatch) -> pa.Table: ...


def check_scored(batch: pa.RecordBatch, out: pa.RecordBatch, scorer: Scorer) -> pa.RecordBatch:
    """Fail loudly when a scorer breaks the same-rows contract or its declared schema."""
    if out.num_rows != batch.num_rows:
        raise ValueError(f"scorer {scorer.name!r} returned {out.num_rows} rows for {batch.num_rows}")
    expected = scorer.output_schema()
    if not out.schema.equals(expected, check_metadata=False):
        out = pa.RecordBatch.from_arrays([out.column(f.name).cast(f.type) for f in expected], schema=expected)
    return out
