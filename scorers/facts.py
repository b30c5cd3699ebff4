"""Fact mentions: which subjects and objects of a fact set occur in each document.

`--scorer facts:NAME` reproduces the SMI paper's test (arXiv 2502.04066, code ``search/``):
``(" " + subj) in text`` and ``(" " + obj) in text``, case-sensitive, one count per document.
All distinct search strings are matched in one pass per document by a multi-literal engine
(Hyperscan in literal mode; pyahocorasick where Hyperscan is not installed). Both report
*overlapping* matches, so " Africa" is found inside " South Africa" exactly as ``in`` finds it;
SINGLEMATCH makes Hyperscan report each pattern at most once per document. Matching runs on the
UTF-8 bytes of the Arrow text column, sliced per document without decoding: a UTF-8 pattern
occurs in the bytes exactly when it occurs in the string.

`--scorer facts:NAME:word` also requires the character after the match to be a non-word
character (not ``str.isalnum()`` and not ``_``) or the end of the text; the leading space already
bounds the left side. Candidates from the same engine are checked occurrence by occurrence.

Output (the layout is described in `corpora.facts`): one row per document with at least one
pattern, ``doc_id`` and the sorted pattern ids.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from assay.corpora.facts import (
    MATCH_MODES,
    MENTION_SCHEMA,
    check_name,
    load_fact_set,
    mention_table_name,
    pattern_strings,
)

ENGINES = ("hyperscan", "aho")


def default_engine() -> str:
    try:
        import hyperscan  # noqa: F401
    except ImportError:
        return "aho"
    return "hyperscan"


class HyperscanMatcher:
    """All patterns at once, literal mode, each reported at most once per scanned block.

    Compiling 13k patterns takes about half a second; with `cache` (a file path) the compiled
    database is saved once and loaded by later processes in about a millisecond. A database
    from another CPU or Hyperscan version fails to load and is simply compiled again.
    """

    def __init__(self, patterns: list[str], cache: Path | None = None):
        import hyperscan

        self.db = self._load(cache) if cache is not None and cache.exists() else None
        if self.db is None:
            self.db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            self.db.compile(
                expressions=[p.encode() for p in patterns],
                ids=list(range(len(patterns))),
                flags=[hyperscan.HS_FLAG_SINGLEMATCH] * len(patterns),
                literal=True,
            )
            if cache is not None:
                from assay.corpora.atomic import write_bytes_atomic

                write_bytes_atomic(cache, hyperscan.dumpb(self.db))
        self._hits: list[int] = []
        self._on_match = lambda pid, start, end, flags, ctx: self._hits.append(pid)

    @staticmethod
    def _load(cache: Path):
        import hyperscan

        try:
            db = hyperscan.loadb(cache.read_bytes(), hyperscan.HS_MODE_BLOCK)
            db.scratch = hyperscan.Scratch(db)
            return db
        except (hyperscan.error, OSError):
            return None

    def find(self, data) -> list[int]:
        """Ids of the patterns that occur in `data` (bytes-like UTF-8); valid until the next call."""
        self._hits.clear()
        self.db.scan(data, match_event_handler=self._on_match)
        return self._hits


class AhoMatcher:
    """pyahocorasick over the decoded text; `iter` reports overlapping occurrences."""

    def __init__(self, patterns: list[str]):
        import ahocorasick

        self.automaton = ahocorasick.Automaton()
        for i, p in enumerate(patterns):
            self.automaton.add_word(p, i)
        self.automaton.make_automaton()

    def find(self, data) -> list[int]:
        return list({pid for _, pid in self.automaton.iter(bytes(data).decode("utf-8"))})


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def word_bounded(text: str, pattern: str) -> bool:
    """Does `pattern` occur in `text` followed by a non-word character or the end of the text?"""
    start = text.find(pattern)
    while start >= 0:
        end = start + len(pattern)
        if end == len(text) or not _is_word_char(text[end]):
            return True
        start = text.find(pattern, start + 1)
    return False


def utf8_slices(text: pa.Array) -> tuple[list[int], memoryview, np.ndarray]:
    """Offsets, data buffer and validity of a string column, for per-document byte slices."""
    if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
        text = text.cast(pa.large_string())  # e.g. string_view: re-laid out once per batch
    width = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets = np.frombuffer(text.buffers()[1], dtype=width)[text.offset : text.offset + len(text) + 1]
    data = text.buffers()[2]
    valid = text.is_valid().to_numpy(zero_copy_only=False)
    return offsets.tolist(), memoryview(data if data is not None else b""), valid


@dataclass
class FactMentionExtractor:
    """Documents x fact patterns, one row per document with a mention (see module doc)."""

    fact_set: str
    patterns: list[str]
    match: str = "substring"
    engine: str = field(default_factory=default_engine)
    cache_dir: Path | None = None  # where a compiled Hyperscan database may be kept
    kind: ClassVar[str] = "extractor"
    input_columns: ClassVar[tuple[str, ...]] = ("id", "text")
    _matcher: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.match not in MATCH_MODES:
            raise ValueError(f"facts:{self.fact_set}:{self.match}: match mode must be one of {MATCH_MODES}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine {self.engine!r}: use one of {ENGINES}")
        digest = hashlib.sha256(json.dumps(self.patterns).encode()).hexdigest()
        self.version = f"1.{digest[:12]}"  # new facts -> new version -> annotate recomputes
        self._digest = digest
        self.name = mention_table_name(self.fact_set, self.match)

    @classmethod
    def from_spec(cls, arg: str | None, root: Path, **settings: Any) -> FactMentionExtractor:
        """`facts:NAME` (the paper's substring test) or `facts:NAME:word` (word-bounded)."""
        if not arg:
            raise ValueError(
                "the facts extractor needs a fact set: --scorer facts:NAME (see `assay facts list`)"
            )
        name, _, match = arg.partition(":")
        facts = load_fact_set(root, check_name(name))
        cache_dir = Path(root) / ".assay" / "cache"
        return cls(name, pattern_strings(facts), match=match or "substring", cache_dir=cache_dir)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_matcher": None}  # compiled engines do not pickle; rebuilt lazily

    def output_schema(self) -> pa.Schema:
        return MENTION_SCHEMA

    def matcher(self):
        if self._matcher is None:
            if self.engine == "aho":
                self._matcher = AhoMatcher(self.patterns)
            else:
                import hyperscan

                key = f"hyperscan-{hyperscan.__version__}-{self._digest[:24]}.db"
                self._matcher = HyperscanMatcher(
                    self.patterns, self.cache_dir / key if self.cache_dir else None
                )
        return self._matcher

    def extract(self, batch: pa.RecordBatch) -> pa.Table:
        text = batch.column(batch.schema.get_field_index("text"))
        offsets, data, valid = utf8_slices(text)
        find = self.matcher().find
        rows, lists = [], []
        for i in range(len(text)):
            if not valid[i]:
                continue
            found = find(data[offsets[i] : offsets[i + 1]])
            if found and self.match == "word":
                doc = bytes(data[offsets[i] : offsets[i + 1]]).decode("utf-8")
                found = [p for p in found if word_bounded(doc, self.patterns[p])]
            if found:
                rows.append(i)
                lists.append(sorted(found))
        ids = batch.column(batch.schema.get_field_index("id")).take(pa.array(rows, pa.int64()))
        return pa.table([ids.cast(pa.string()), pa.array(lists, pa.list_(pa.int32()))], schema=MENTION_SCHEMA)
