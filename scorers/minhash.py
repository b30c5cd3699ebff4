"""`minhash`: fuzzy duplicates by MinHash + LSH, a corpus-level scorer (Broder 1997; datatrove's defaults).

    assay annotate --scorer minhash                          # bands=14,rows=8,ngram=5,seed=1
    assay annotate --scorer minhash:bands=20,rows=5,ngram=5

Writes `annotations/minhash/`: `dup_cluster` (the smallest `id` in the document's cluster, so it
names the cluster whatever the shard or batch order), `dup_cluster_size` (1 for a unique document)
and `dup_is_first` (true for exactly one document per cluster: the one whose id is `dup_cluster`).
Ids compare as strings (code point order, which is also DuckDB's byte order for UTF-8).

Two documents are candidates when all `rows` MinHash values of one of the `bands` bands agree;
clusters are the connected components of that candidate graph (no pairwise Jaccard check, as in
datatrove). With 14 x 8 a pair at Jaccard 0.8 is caught with probability 1-(1-0.8^8)^14 = 0.92,
at 0.7 with 0.56, at 0.5 with 0.05.

Shingles follow datatrove's recipe: text lowercased, every run of digits (with one decimal part)
replaced by `0`, Unicode punctuation and symbols replaced by spaces, whitespace collapsed,
diacritics removed (NFD, combining marks dropped), then split on whitespace; a shingle is
`ngram` consecutive words. A document with fewer than `ngram` words has no shingles and is never
a fuzzy duplicate (exact_dup catches short copies).

Hashing is Assay's own and vectorised over an Arrow batch (bench/dedup.py compares it with
datatrove's, datasketch's and rensa's): each distinct word of the batch is hashed once
(xxh64), a shingle hash mixes its words' hashes (64 bits, of which the high 32 are kept), and
permutation k maps x to `a_k * x + b_k mod 2^32` (odd `a_k`, both drawn from `seed`): a bijection
of 32-bit values, computed for all permutations at once. A band key is a 64-bit mix of its
`rows` values. Outputs depend only on the document's text and the options.

The scorer itself only computes band keys; `assay.pipelines.dedup` plans the corpus-level work
(signatures per shard, bucket joins per band, connected components, annotation per shard).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

DEFAULTS = {"bands": 14, "rows": 8, "ngram": 5, "seed": 1}

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_SHINGLE_CHUNK = 8192  # shingles per (permutations x chunk) uint32 block: 112 x 8k x 4 B = 3.5 MB


def mix64(x: np.ndarray) -> np.ndarray:
    """A 64-bit finaliser (splitmix64's): every input bit affects every output bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def normalise(texts: pa.Array) -> pa.Array:
    """The text shingles are cut from (see the module docstring); Arrow kernels, no Python loop."""
    import pyarrow.compute as pc

    t = pc.utf8_lower(texts)
    t = pc.replace_substring_regex(t, r"\p{Nd}+(?:[.,]\p{Nd}+)?", "0")
    t = pc.replace_substring_regex(t, r"[\p{P}\p{S}]", " ")
    t = pc.utf8_normalize(t, form="NFD")
    t = pc.replace_substring_regex(t, r"\p{Mn}+", "")
    return t


def word_hashes(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(hash of every normalised word, flat; offsets of each document's words) for a string array.

    The normalisation never joins across whitespace, so it runs once per distinct raw token of
    the batch (~10x fewer than tokens) and each token's words are spliced back in place."""
    import pyarrow.compute as pc
    import xxhash

    raw = pc.utf8_split_whitespace(texts)
    if isinstance(raw, pa.ChunkedArray):
        raw = raw.combine_chunks()
    raw_offsets = np.asarray(raw.offsets, dtype=np.int64)
    flat = raw.values.slice(raw_offsets[0], raw_offsets[-1] - raw_offsets[0])
    raw_offsets = raw_offsets - raw_offsets[0]
    if len(flat) == 0:
        return np.zeros(0, dtype=np.uint64), raw_offsets
    enc = pc.dictionary_encode(flat)
    words = pc.utf8_split_whitespace(normalise(enc.dictionary))  # distinct token -> its words
    values = words.values.slice(words.offsets[0].as_py(), len(words.values))
    keep = np.asarray(pc.not_equal(pc.utf8_length(values), 0), dtype=bool)  # runs of spaces split to ""
    kept_before = np.concatenate([[0], np.cumsum(keep)])
    word_offsets = kept_before[np.asarray(words.offsets, dtype=np.int64) - words.offsets[0].as_py()]
    hash_word = xxhash.xxh64_intdigest
    vocab = np.fromiter((hash_word(w) for w in values.filter(pa.array(keep)).to_pylist()), dtype=np.uint64)
    token = np.asarray(enc.indices, dtype=np.int64)
    n_words = np.diff(word_offsets)[token]  # words each token of the batch becomes (0 for "--")
    ends = np.cumsum(n_words)
    starts = ends - n_words
    src = np.repeat(word_offsets[:-1][token] - starts, n_words) + np.arange(ends[-1] if len(ends) else 0)
    doc_offsets = np.concatenate([[0], ends])[raw_offsets]
    return vocab[src], doc_offsets


def shingle_hashes(w: np.ndarray, offsets: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """(hash of every `ngram`-word window inside a document, flat; offsets per document)."""
    counts = np.diff(offsets)
    per_doc = np.maximum(counts - ngram + 1, 0)
    n_windows = len(w) - ngram + 1
    if n_windows <= 0 or not per_doc.any():
        return np.zeros(0, dtype=np.uint64), np.zeros(len(counts) + 1, dtype=np.int64)
    # words are already random 64-bit hashes: a polynomial over them and one final mix suffice
    h = w[:n_windows].copy()
    with np.errstate(over="ignore"):
        for j in range(1, ngram):
            h *= _GOLDEN
            h += w[j : j + n_windows]
        h = mix64(h)
    # keep windows that start in a document and end in the same one
    doc_of = np.repeat(np.arange(len(counts)), counts)[:n_windows]
    pos = np.arange(n_windows) - offsets[:-1][doc_of]
    keep = pos < per_doc[doc_of]
    out_offsets = np.concatenate([[0], np.cumsum(per_doc)]).astype(np.int64)
    return h[keep], out_offsets


def permutations(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` permutations of 32-bit values, x -> a*x + b mod 2^32 (a bijection since `a` is odd)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**31, size=n, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = rng.integers(0, 2**32, size=n, dtype=np.uint32)
    return a, b


def minhash(shingles: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(documents x permutations) uint32 minima; a document without shingles gets all 0xFFFFFFFF.

    Shingle hashes are cut to their high 32 bits and permuted in uint32 arithmetic, laid out
    permutations x shingles so that the per-document minimum runs along contiguous memory: 5x
    faster than 64-bit arithmetic with shingles as rows (bench/dedup.py --part kernel)."""
    n_docs = len(offsets) - 1
    out = np.full((n_docs, len(a)), np.iinfo(np.uint32).max, dtype=np.uint32)
    counts = np.diff(offsets)
    docs = np.flatnonzero(counts)
    if len(docs) == 0:
        return out
    x = (shingles >> np.uint64(32)).astype(np.uint32)
    buf = np.empty((len(a), _SHINGLE_CHUNK), dtype=np.uint32)
    a_col, b_col = a[:, None], b[:, None]
    start = 0
    while start < len(docs):
        # a chunk of whole documents holding at most _SHINGLE_CHUNK shingles (or one long document)
        lo = offsets[docs[start]]
        end = int(np.searchsorted(offsets[docs + 1], lo + _SHINGLE_CHUNK, side="right"))
        end = max(end, start + 1)
        chunk_docs = docs[start:end]
        hi = offsets[chunk_docs[-1] + 1]
        v = buf[:, : hi - lo] if hi - lo <= _SHINGLE_CHUNK else np.empty((len(a), hi - lo), dtype=np.uint32)
        np.multiply(a_col, x[None, lo:hi], out=v)
        np.add(v, b_col, out=v)
        out[chunk_docs] = np.minimum.reduceat(v, offsets[chunk_docs] - lo, axis=1).T
        start = end
    return out


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(documents x bands) int64: one 64-bit key per band of `rows` MinHash values."""
    s = sig.reshape(len(sig), bands, rows).astype(np.uint64)
    h = np.broadcast_to(np.arange(bands, dtype=np.uint64) * _GOLDEN, (len(sig), bands)).copy()
    with np.errstate(over="ignore"):
        for r in range(rows):
            h = mix64(h ^ (s[:, :, r] + np.uint64(r + 1) * _GOLDEN))
    return h.view(np.int64)


def _options(arg: str | None) -> dict[str, int]:
    opts = dict(DEFAULTS)
    for part in (arg or "").split(","):
        if not part.strip():
            continue
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or key not in DEFAULTS:
            raise ValueError(f"minhash option {part!r}: expected one of {', '.join(DEFAULTS)} as KEY=INTEGER")
        try:
            opts[key] = int(value)
        except ValueError:
            raise ValueError(f"minhash option {part!r}: {key} must be an integer") from None
    for key in ("bands", "rows", "ngram"):
        if opts[key] < 1:
            raise ValueError(f"minhash option {key} must be at least 1, not {opts[key]}")
    return opts


def corpus_fingerprint(root: Path) -> str:
    """A short hash of the docs shards a corpus-level result depends on ("none" outside a root)."""
    import hashlib
    import json

    from assay.corpora.manifest import load_manifest

    if not (Path(root) / "manifest.json").exists():
        return "none"
    shards = [[s["name"], s.get("rows"), s.get("sha256")] for s in load_manifest(root)["shards"]]
    return hashlib.sha256(json.dumps(shards).encode()).hexdigest()[:12]


@dataclass
class MinHashScorer:
    """Band keys per document; the clusters come from `assay.pipelines.dedup` over the whole corpus."""

    bands: int = 14
    rows: int = 8
    ngram: int = 5
    seed: int = 1
    corpus: str = "none"  # fingerprint of the docs shards: new shards make the clusters stale

    name: ClassVar[str] = "minhash"
    corpus_level: ClassVar[bool] = True  # annotate hands it to assay.pipelines.dedup
    code_version: ClassVar[str] = "1"

    @classmethod
    def from_spec(cls, arg: str | None, root: Path, **settings: Any) -> MinHashScorer:
        return cls(**_options(arg), corpus=corpus_fingerprint(root))

    @property
    def version(self) -> str:
        return f"{self.code_version}-b{self.bands}r{self.rows}n{self.ngram}s{self.seed}-{self.corpus}"

    def output_schema(self) -> pa.Schema:
        return pa.schema(
            [("dup_cluster", pa.string()), ("dup_cluster_size", pa.int64()), ("dup_is_first", pa.bool_())]
        )

    def __post_init__(self) -> None:
        self._perm = permutations(self.bands * self.rows, self.seed)

    def signatures(self, texts: pa.Array) -> np.ndarray:
        """(documents x bands*rows) uint32 MinHash values (all 0xFFFFFFFF without shingles)."""
        w, offsets = word_hashes(texts)
        sh, sh_offsets = shingle_hashes(w, offsets, self.ngram)
        return minhash(sh, sh_offsets, *self._perm)

    def band_keys(self, texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(band keys, documents x bands int64; has_shingles, bool per document)."""
        sig = self.signatures(texts)
        has = ~np.all(sig == np.iinfo(np.uint32).max, axis=1)
        return band_keys(sig, self.bands, self.rows), has

    def score(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        raise ValueError(
            "minhash is corpus-level: its clusters need every shard; run it with `assay annotate --scorer minhash`"
        )
