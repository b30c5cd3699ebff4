"""Benchmark contamination: word n-grams a document shares with the examples of a targets set.

`--scorer contamination:NAME[:n=13,floor=0.2]` compares every document with every example of the
targets set NAME (`corpora.targets`). Text on both sides is normalised as datatrove's n-gram
decontamination normalises it (``simplify_text`` with its default ``TextNormConfig``: lowercase,
numbers -> "0", datatrove's punctuation list -> spaces, NFD with combining marks dropped), here
with vectorised string kernels, and split at whitespace into words. An example's n-grams are its
distinct runs of ``n`` consecutive words; a document "has" one when the same run occurs in it.

Columns (one row per document):

``contam_frac``        the largest fraction of one example's n-grams found in the document (0.0
                       when it shares none, and for a document of fewer than ``n`` words, which has
                       no n-grams: datatrove's rule, its filter passes such a document)
``contam_benchmark``, ``contam_example_id``  that example (the first in set order on a tie);
                       null when the document shares no n-gram with the set
``contam_matches``     every example with a fraction >= ``floor``, best first, as
                       ``list<struct<benchmark, example_id, frac>>``: what `assay contamination
                       report` counts, since one document may contain several examples

Examples shorter than ``n`` words have no n-grams and are never found (datatrove's index holds
nothing for them either); the report counts them. Words and n-grams are hashed to 64 bits (a
word hash, then a weighted sum of the ``n`` word hashes): the index is a sorted array of the set's
n-gram hashes with, per hash, the examples that hold it, plus a direct-mapped presence table
that settles most lookups with one array read. Memory is that of the set's n-grams; the corpus is
read once. Hash values never reach the output, so the result does not depend on them beyond
collisions (about one in 2^64 per pair).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from assay.corpora.targets import check_name, read_targets, targets_digest

DEFAULT_N = 13
DEFAULT_FLOOR = 0.2
MATCH_TYPE = pa.struct([("benchmark", pa.string()), ("example_id", pa.string()), ("frac", pa.float64())])
SCHEMA = pa.schema(
    [
        ("contam_frac", pa.float64()),
        ("contam_benchmark", pa.string()),
        ("contam_example_id", pa.string()),
        ("contam_matches", pa.list_(MATCH_TYPE)),
    ]
)

# datatrove.utils.text.PUNCTUATION (datatrove 0.6), which simplify_text maps to spaces; a test
# checks it still equals datatrove's. TERMINAL_PUNCTUATION is not part of that mapping.
PUNCTUATION = (
    "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"
    + "".join(map(chr, (x for a, b in ((0, 9), (11, 13), (13, 32), (127, 160)) for x in range(a, b))))
)
NUMBERS = r"\p{Nd}+([.,،٫⎖⎗⎘]{1}\p{Nd}+)?"  # datatrove's NUMBERS_PATTERN


def set_name(target_set: str, n: int = DEFAULT_N) -> str:
    """The annotation set a targets set and n write: ``contamination_NAME`` (13-grams) or ``…_nN``."""
    return f"contamination_{target_set}" if n == DEFAULT_N else f"contamination_{target_set}_n{n}"


def _class(chars: str, negate: bool = False) -> str:
    """A Rust-regex character class of exactly these code points."""
    return ("[^" if negate else "[") + "".join(f"\\x{{{ord(c):X}}}" for c in sorted(set(chars))) + "]"


@cache
def _patterns() -> tuple[str, str]:
    spaces = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())  # str.split()'s
    return _class(PUNCTUATION), _class(spaces, negate=True) + "+"


def normalise(texts):
    """datatrove's ``simplify_text`` (default config) of a polars string Series, whitespace aside:
    ``simplify_text(t).split() == normalise(...)[i].split()`` for every text."""
    punctuation, _ = _patterns()
    return (
        texts.str.to_lowercase()
        .str.replace_all(NUMBERS, "0")
        .str.replace_all(punctuation, " ")
        .str.normalize("NFD")
        .str.replace_all(r"\p{Mn}", "")
    )


def words(texts) -> tuple[Any, np.ndarray]:
    """Normalised words of every text, flattened (a polars Series), and the row of each word."""
    _, word = _patterns()
    lists = normalise(texts.fill_null("")).str.extract_all(word)
    lengths = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = lists.explode().drop_nulls()  # an empty list explodes to one null
    return flat, np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)


@cache
def _weights(n: int) -> np.ndarray:
    return np.random.default_rng(20_240_613).integers(0, 2**63, size=n, dtype=np.uint64) * 2 + 1


def ngram_hashes(texts, n: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every run of n consecutive words inside one text, and the text's row."""
    flat, rows = words(texts)
    if len(rows) < n:
        return np.empty(0, np.uint64), np.empty(0, np.int64)
    wh = flat.hash(seed=0).to_numpy()
    m = len(wh) - n + 1
    h = np.zeros(m, dtype=np.uint64)
    for k, w in enumerate(_weights(n)):
        h += wh[k : k + m] * w  # wraps modulo 2^64
    inside = rows[:m] == rows[n - 1 :]
    return h[inside], rows[:m][inside]


class NGramIndex:
    """The distinct n-grams of every example: a sorted hash array, the examples of each hash."""

    def __init__(self, texts, n: int):
        h, ex = ngram_hashes(texts, n)
        order = np.lexsort((ex, h))
        h, ex = h[order], ex[order]
        first = np.ones(len(h), dtype=bool)
        first[1:] = (h[1:] != h[:-1]) | (ex[1:] != ex[:-1])
        h, ex = h[first], ex[first]  # (hash, example) pairs, each once
        new = np.ones(len(h), dtype=bool)
        new[1:] = h[1:] != h[:-1]
        self.hashes = h[new]
        self.starts = np.append(np.flatnonzero(new), len(h))  # examples of hash g: ex[starts[g]:starts[g+1]]
        self.examples = ex
        self.grams = np.bincount(ex, minlength=len(texts)).astype(np.int64)  # distinct n-grams per example
        self.bits = max(16, int(np.ceil(np.log2(max(len(self.hashes), 1) * 16))))
        self.present = np.zeros(1 << self.bits, dtype=bool)
        self.present[self.hashes >> np.uint64(64 - self.bits)] = True

    def lookup(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions into ``h`` that are n-grams of the set, and their index into ``hashes``."""
        cand = np.flatnonzero(self.present[h >> np.uint64(64 - self.bits)])
        if not len(cand):
            return cand, cand
        idx = np.minimum(np.searchsorted(self.hashes, h[cand]), len(self.hashes) - 1)
        hit = self.hashes[idx] == h[cand]
        return cand[hit], idx[hit]


@dataclass
class ContaminationScorer:
    """Per document, the benchmark example it shares the largest fraction of n-grams with."""

    target_set: str
    digest: str  # the targets set's content hash: a new set gives a new version
    root: Path
    n: int = DEFAULT_N
    floor: float = DEFAULT_FLOOR
    input_columns: ClassVar[tuple[str, ...]] = ("id", "text")
    _index: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= self.n <= 64:
            raise ValueError(f"contamination:{self.target_set}: n={self.n}; use 1 to 64 words")
        if not 0 < self.floor <= 1:
            raise ValueError(f"contamination:{self.target_set}: floor={self.floor}; use a number in (0, 1]")
        self.name = set_name(self.target_set, self.n)
        self.version = f"1.n{self.n}.floor{self.floor:g}.{self.digest[:12]}"

    @classmethod
    def from_spec(cls, arg: str | None, root: Path, **settings: Any) -> ContaminationScorer:
        """``contamination:NAME`` or ``contamination:NAME:n=8,floor=0.1``."""
        if not arg:
            raise ValueError(
                "the contamination scorer needs a targets set: --scorer contamination:NAME "
                "(see `assay targets list`)"
            )
        name, _, opts = arg.partition(":")
        options: dict[str, Any] = {}
        for pair in filter(None, (p.strip() for p in opts.split(","))):
            key, _, value = pair.partition("=")
            try:
                options[key] = {"n": int, "floor": float}[key](value)
            except (KeyError, ValueError):
                raise ValueError(
                    f"contamination:{arg}: option {pair!r}; use n=WORDS and floor=FRACTION (e.g. n=8)"
                ) from None
        read_targets(root, check_name(name))  # a clear error when the set is missing
        return cls(name, targets_digest(root, name), Path(root), **options)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_index": None}  # rebuilt in each worker

    def output_schema(self) -> pa.Schema:
        return SCHEMA

    def index(self) -> tuple[NGramIndex, pa.Array, pa.Array]:
        """The set's n-gram index and its benchmark and example_id columns (built once per process)."""
        if self._index is None:
            import polars as pl

            targets = read_targets(self.root, self.target_set)
            if targets_digest(self.root, self.target_set) != self.digest:
                raise ValueError(
                    f"targets set {self.target_set!r} changed during the run; run `assay annotate` again"
                )
            index = NGramIndex(pl.from_arrow(targets.column("text")), self.n)
            benchmark, example_id = (targets.column(c).combine_chunks() for c in ("benchmark", "example_id"))
            self._index = (index, benchmark, example_id)
        return self._index

    def score(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        import polars as pl

        index, benchmark, example_id = self.index()
        n_docs = batch.num_rows
        h, rows = ngram_hashes(pl.from_arrow(batch.column(batch.schema.get_field_index("text"))), self.n)
        pos, gram = index.lookup(h)
        # each (document, n-gram) once, then every example holding that n-gram
        n_grams = max(len(index.hashes), 1)
        pairs = np.unique(rows[pos] * n_grams + gram)
        doc, gram = pairs // n_grams, pairs % n_grams
        lens = index.starts[gram + 1] - index.starts[gram]
        at = np.repeat(index.starts[gram] - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())
        n_ex = max(len(index.grams), 1)
        keys, found = np.unique(np.repeat(doc, lens) * n_ex + index.examples[at], return_counts=True)
        doc, ex = keys // n_ex, keys % n_ex
        frac = found / index.grams[ex]
        order = np.lexsort((ex, -frac, doc))  # per document: best first, then set order
        doc, ex, frac = doc[order], ex[order], frac[order]
        best = np.flatnonzero(np.r_[True, doc[1:] != doc[:-1]]) if len(doc) else doc
        contam_frac = np.zeros(n_docs)
        contam_frac[doc[best]] = frac[best]
        chosen = np.full(n_docs, -1)
        chosen[doc[best]] = ex[best]
        take = pa.array(chosen, mask=chosen < 0)
        keep = frac >= self.floor
        offsets = np.r_[0, np.cumsum(np.bincount(doc[keep], minlength=n_docs))].astype(np.int32)
        kept = pa.array(ex[keep])
        matches = pa.StructArray.from_arrays(
            [benchmark.take(kept), example_id.take(kept), pa.array(frac[keep])], fields=list(MATCH_TYPE)
        )
        columns = [
            pa.array(contam_frac),
            benchmark.take(take),
            example_id.take(take),
            pa.ListArray.from_arrays(pa.array(offsets), matches, type=SCHEMA.field("contam_matches").type),
        ]
        return pa.RecordBatch.from_arrays(columns, schema=SCHEMA)
