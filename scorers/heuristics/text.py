"""Vectorised text primitives shared by the heuristic signals.

The reference filters are written with Python's ``str`` methods (``isspace``, ``isalpha``,
``splitlines``, ``strip``). Rust regex classes (``\\s``, ``\\p{L}``) differ from them on a few
code points, so the character classes here are built from Python's own predicates: the
vectorised kernels then agree with ``str`` character for character.
"""

from __future__ import annotations

import sys
from functools import cache, lru_cache

import numpy as np
import polars as pl


@lru_cache(maxsize=64)
def char_class(chars: str | frozenset[str], negate: bool = False) -> str:
    """A Rust-regex character class matching exactly ``chars`` (every code point escaped)."""
    codes = sorted({ord(c) for c in chars})
    parts = []
    i = 0
    while i < len(codes):
        j = i
        while j + 1 < len(codes) and codes[j + 1] == codes[j] + 1:
            j += 1
        a, b = codes[i], codes[j]
        parts.append(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}")
        i = j + 1
    return ("[^" if negate else "[") + "".join(parts) + "]"


@cache
def python_chars(predicate: str) -> str:
    """Every code point for which ``str.<predicate>()`` is true, as one string (cached)."""
    test = getattr(str, predicate)
    return "".join(chr(c) for c in range(sys.maxunicode + 1) if test(chr(c)))


@cache
def python_class(predicate: str, negate: bool = False) -> str:
    """Regex class for ``str.<predicate>`` (``isspace``, ``isalpha``, ``isupper``, ``isnumeric``)."""
    return char_class(python_chars(predicate), negate)


def whitespace() -> str:
    """The characters ``str.split()`` and ``str.strip()`` treat as whitespace."""
    return python_chars("isspace")


# str.splitlines() boundaries (Python docs, "str.splitlines"): \r\n counts as one break.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def explode(series: pl.Series, name: str) -> tuple[pl.Series, np.ndarray]:
    """Flatten a list column: the values, and for each value the row it came from.

    Rows whose list is empty contribute nothing (polars would emit a null there).
    """
    lengths = series.list.len().fill_null(0).to_numpy().astype(np.int64)
    values = series.explode()
    if len(values) != int(lengths.sum()):  # empty lists exploded to nulls: drop them
        values = values.filter(np.repeat(lengths > 0, np.maximum(lengths, 1)))
    rows = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    return values.alias(name), rows


def positions(rows: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """For grouped, ordered ``rows``: each element's index within its row, and each row's size."""
    counts = np.bincount(rows, minlength=n_rows)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return np.arange(len(rows)) - starts[rows], counts


def per_row(rows: np.ndarray, n_rows: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Sum (or count, without weights) of elements per row."""
    return np.bincount(rows, weights=weights, minlength=n_rows)


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den as float64, NaN where den is 0 (the reference would divide by zero there)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def splitlines(texts: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """``str.splitlines()`` of every text, flattened: (lines, row of each line)."""
    unified = texts.str.replace_all("\r\n", "\n", literal=True).str.replace_all(char_class(LINE_BREAKS), "\n")
    pieces = unified.str.split("\n")
    lines, rows = explode(pieces, "line")
    # splitlines() has no empty last line after a final break (and none at all for "").
    ends = np.cumsum(pieces.list.len().fill_null(0).to_numpy().astype(np.int64)) - 1
    last = np.zeros(len(lines), dtype=bool)
    last[ends[ends >= 0]] = True
    drop = last & (lines.str.len_bytes().to_numpy() == 0)
    if drop.any():
        keep = ~drop
        lines, rows = lines.filter(keep), rows[keep]
    return lines, rows


def split_newlines(texts: pl.Series) -> tuple[pl.Series, np.ndarray, np.ndarray]:
    """``text.split("\\n")`` flattened: (pieces, row of each piece, index of the piece in its row)."""
    pieces, rows = explode(texts.str.split("\n"), "piece")
    index, _ = positions(rows, len(texts))
    return pieces, rows, index


def repeated(values: pl.Series, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For grouped values: (value already seen earlier in its row, value occurs more than once
    in its row). Exact string comparison, not hashes."""
    frame = pl.DataFrame({"row": rows, "value": values})
    marks = frame.select(
        seen=~pl.struct("row", "value").is_first_distinct(),
        multi=pl.struct("row", "value").is_duplicated(),
    )
    return marks["seen"].to_numpy(), marks["multi"].to_numpy()


def first_failure(rules: list[tuple[str, np.ndarray]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """A filter's decision from its rules, given in the filter's order as (reason, fails): keep
    where no rule fails, and the reason of the first failing rule (None where kept)."""
    failed = np.zeros(n, dtype=bool)
    reason = np.full(n, None, dtype=object)
    for name, fails in rules:
        reason[fails & ~failed] = name
        failed |= fails
    return ~failed, reason
