"""Word n-grams of a whole batch at once: hashing, the most frequent n-gram, repeated n-grams.

n-grams are compared by 64-bit hashes, never built as strings. datatrove needs two kinds of
identity: top n-grams compare ``" ".join(words)``, i.e. word sequences, hashed by combining
the words' hashes; repeated n-grams compare ``"".join(words)``, equal strings whatever the word
boundaries, hashed as a polynomial over the UTF-8 bytes, which two prefix arrays give for any
window. Distinct n-grams collide with probability about 2^-64 per pair.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import polars as pl
import pyarrow as pa

BASE = np.uint64(0x9E3779B97F4A7C15)  # odd, so invertible modulo 2^64
BASE_INV = np.uint64(pow(int(BASE), -1, 2**64))
MIX = np.uint64(0xC2B2AE3D27D4EB4F)  # combines word hashes into word-sequence hashes
SLICE_BYTES = 1 << 20  # bounds the per-byte scratch arrays


class WordHashes:
    """Hashes of the n-grams of a flat sequence of words (all documents of a batch, in order)."""

    def __init__(self, words: pl.Series):
        self.words = words
        self.n = len(words)

    @cached_property
    def _word_hash(self) -> np.ndarray:
        return self.words.hash(seed=0).to_numpy()

    @cached_property
    def _prefix(self) -> tuple[np.ndarray, np.ndarray]:
        """prefix[t]: sum over the bytes j before word t of (byte_j + 1) * BASE^j (mod 2^64);
        unshift[t]: BASE^-(byte offset of word t), which moves a window's hash to offset 0."""
        arr = self.words.to_arrow()
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        arr = arr.cast(pa.large_string())
        n = self.n
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
        data = np.frombuffer(arr.buffers()[2], dtype=np.uint8) if n else np.zeros(0, np.uint8)
        prefix = np.zeros(n + 1, dtype=np.uint64)
        unshift = np.zeros(n, dtype=np.uint64)
        running, power, inverse = np.uint64(0), np.uint64(1), np.uint64(1)
        cuts = np.unique(np.searchsorted(offsets, np.arange(offsets[0], offsets[-1], SLICE_BYTES)))
        bounds = np.append(cuts[cuts < n], n)
        with np.errstate(over="ignore"):
            for t0, t1 in zip(bounds[:-1], bounds[1:]):
                lo, hi = offsets[t0], offsets[t1]
                pw = np.full(hi - lo, BASE, dtype=np.uint64)
                pw[0] = power
                np.cumprod(pw, out=pw)
                ipw = np.full(hi - lo, BASE_INV, dtype=np.uint64)
                ipw[0] = inverse
                np.cumprod(ipw, out=ipw)
                sums = np.cumsum((data[lo:hi].astype(np.uint64) + np.uint64(1)) * pw) + running
                prefix[t0 + 1 : t1 + 1] = sums[offsets[t0 + 1 : t1 + 1] - lo - 1]
                unshift[t0:t1] = ipw[offsets[t0:t1] - lo]
                running, power, inverse = sums[-1], pw[-1] * BASE, ipw[-1] * BASE_INV
        return prefix, unshift

    def strings(self, n: int) -> np.ndarray:
        """Hash of ``"".join(words[i:i+n])`` for every start i (n <= number of words)."""
        prefix, unshift = self._prefix
        with np.errstate(over="ignore"):
            return (prefix[n:] - prefix[:-n]) * unshift[: self.n - n + 1]

    def sequences(self, n: int) -> np.ndarray:
        """Hash of the word sequence ``words[i:i+n]`` (equal iff ``" ".join`` is equal)."""
        single = self._word_hash
        key = single[: self.n - n + 1].copy()
        with np.errstate(over="ignore"):
            for j in range(1, n):
                key = key * MIX + single[j : self.n - n + 1 + j]
        return key


def windows(doc: np.ndarray, n: int) -> np.ndarray:
    """Start indices of the n-word windows that stay inside one document (doc is grouped)."""
    if len(doc) < n:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(doc[: len(doc) - n + 1] == doc[n - 1 :])


def _in_document(keys: np.ndarray, starts: np.ndarray, doc: np.ndarray) -> np.ndarray:
    """Key of each window made unique to its document."""
    with np.errstate(over="ignore"):
        return keys[starts] ^ (doc[starts].astype(np.uint64) * MIX)


def _repeats(values: np.ndarray) -> np.ndarray:
    """True where a value occurs more than once. np.sort is far faster than a hash table or
    an argsort here; a bit table on the low bits then narrows the lookups to a few values."""
    ordered = np.sort(values)
    twice = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    out = np.zeros(len(values), dtype=bool)
    if len(twice) == 0:
        return out
    mask = np.uint64((1 << min(max(int(len(twice)).bit_length() + 4, 10), 22)) - 1)
    table = np.zeros(int(mask) + 1, dtype=bool)
    table[twice & mask] = True
    maybe = np.flatnonzero(table[values & mask])
    at = np.minimum(np.searchsorted(twice, values[maybe]), len(twice) - 1)
    out[maybe] = twice[at] == values[maybe]
    return out


def top_ngram(
    keys: np.ndarray, starts: np.ndarray, doc: np.ndarray, n_docs: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per document, the count of its most frequent n-gram and that n-gram's first start.

    Ties go to the n-gram seen first, as ``Counter.most_common`` does. A document without
    n-grams gets count 0 and start -1."""
    count = np.zeros(n_docs, dtype=np.int64)
    first = np.full(n_docs, -1, dtype=np.int64)
    if len(starts) == 0:
        return count, first
    # without a repeat, the top n-gram is the document's first, seen once
    d = doc[starts]
    lead = np.ones(len(starts), dtype=bool)
    lead[1:] = d[1:] != d[:-1]
    count[d[lead]] = 1
    first[d[lead]] = starts[lead]
    multi = _repeats(_in_document(keys, starts, doc))
    if multi.any():
        frame = pl.DataFrame({"doc": d[multi], "key": keys[starts[multi]], "start": starts[multi]})
        best = (
            frame.group_by("doc", "key")
            .agg(count=pl.len(), first=pl.col("start").min())
            .filter(pl.col("count") == pl.col("count").max().over("doc"))
            .group_by("doc")
            .agg(pl.col("count").first(), pl.col("first").min())
        )
        rows = best["doc"].to_numpy()
        count[rows] = best["count"].to_numpy()
        first[rows] = best["first"].to_numpy()
    return count, first


def repeated_chars(
    keys: np.ndarray, starts: np.ndarray, doc: np.ndarray, chars: np.ndarray, n: int, n_docs: int
) -> np.ndarray:
    """Per document, the characters in repeated n-grams, counted as datatrove's Gopher filter does:
    scan left to right; an n-gram seen before adds its length and the scan jumps past it.

    Only n-grams that occur at least twice in their document can change the scan, so the
    sequential part walks those alone (none, in most documents)."""
    out = np.zeros(n_docs, dtype=np.int64)
    if len(starts) == 0:
        return out
    cand = starts[_repeats(_in_document(keys, starts, doc))]
    if len(cand) == 0:
        return out
    splits = np.flatnonzero(np.diff(doc[cand])) + 1
    for pos, key, length in zip(
        np.split(cand, splits), np.split(keys[cand], splits), np.split(chars[cand], splits)
    ):
        seen: set[int] = set()
        resume, total = -1, 0
        for p, k, c in zip(pos.tolist(), key.tolist(), length.tolist()):
            if p < resume:
                continue
            if k in seen:
                total += c
                resume = p + n
            else:
                seen.add(k)
        out[doc[pos[0]]] = total
    return out
