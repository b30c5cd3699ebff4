"""`exact_dup`: documents whose normalised text is identical, a corpus-level scorer.

    assay annotate --scorer exact_dup

Writes `annotations/exact_dup/`: `dup_exact_cluster` (the cluster's key: 32 hex digits of the
128-bit xxh3 hash of the normalised text) and `dup_exact_first` (true for exactly one document
per cluster: the one with the smallest `id`, ids compared as strings, so the choice does not
depend on shard or batch order).

Normalisation, in this order: Unicode NFKC (full-width and compatibility forms fold to their
plain letters), lowercase, every run of whitespace (spaces, tabs, newlines) collapsed to one
space, leading and trailing whitespace removed. Punctuation, digits and diacritics are kept:
"exact" means the same words and signs; near-copies are `minhash`'s job.

The scorer computes the keys; `assay.pipelines.dedup` finds the first document of each key over
the whole corpus (keys per shard, one grouping in DuckDB, annotation per shard).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from assay.scorers.minhash import corpus_fingerprint


def normalise(texts: pa.Array) -> pa.Array:
    """The text that is hashed (see the module docstring); Arrow kernels, no Python loop."""
    import pyarrow.compute as pc

    t = pc.utf8_normalize(texts, form="NFKC")
    t = pc.utf8_lower(t)
    t = pc.replace_substring_regex(t, r"\s+", " ")
    return pc.utf8_trim_whitespace(t)


def text_keys(texts: pa.Array) -> pa.Array:
    """32-hex-digit keys of the normalised texts (a null text hashes as the empty one)."""
    import xxhash

    digest = xxhash.xxh3_128_hexdigest
    norm = normalise(texts)
    return pa.array([digest((t or "").encode()) for t in norm.to_pylist()], type=pa.string())


@dataclass
class ExactDupScorer:
    corpus: str = "none"  # fingerprint of the docs shards: new shards make `first` stale

    name: ClassVar[str] = "exact_dup"
    corpus_level: ClassVar[bool] = True  # annotate hands it to assay.pipelines.dedup
    code_version: ClassVar[str] = "1"

    @classmethod
    def from_spec(cls, arg: str | None, root: Path, **settings: Any) -> ExactDupScorer:
        if arg:
            raise ValueError(f"--scorer exact_dup takes no options (got {arg!r})")
        return cls(corpus=corpus_fingerprint(root))

    @property
    def version(self) -> str:
        return f"{self.code_version}-{self.corpus}"

    def output_schema(self) -> pa.Schema:
        return pa.schema([("dup_exact_cluster", pa.string()), ("dup_exact_first", pa.bool_())])

    def keys(self, texts: pa.Array) -> pa.Array:
        return text_keys(texts)

    def score(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        raise ValueError(
            "exact_dup is corpus-level: its first documents need every shard; "
            "run it with `assay annotate --scorer exact_dup`"
        )
