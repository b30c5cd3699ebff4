"""Word segmentation identical to the one the reference filters use for English.

datatrove's Gopher and FineWeb filters split text into words with spaCy's blank English
tokenizer (``spacy.blank("en")``) and drop whitespace tokens. spaCy cuts the text at whitespace
into chunks and tokenises each chunk on its own: it peels prefix and suffix marks, splits
infixes (hyphens between letters, between numbers), and applies special cases ("don't" ->
"do", "n't"; "Mr."; ":)"). Most chunks of real text are a plain word, or a word or number with
a few marks around it; their tokens follow from the chunk's shape and are computed here with
vectorised string kernels. Every other chunk (URLs, units, contractions, emoticons, unusual
scripts) is deduplicated within the batch and handed to spaCy itself in one call. The result
is spaCy's tokenisation exactly, at a fraction of the per-document cost.

One subtlety makes a chunk's tokens depend on its text: spaCy matches its special cases on the
token sequence of the whole text, across single spaces, and a match across a space (":(" then
")" reads as the emoticon ":()") wins over a shorter one inside a chunk (":(") and leaves that
chunk's tokens unmerged. So a chunk is tokenised together with the chunk one space before or
after it, in the same text, where a special case could span that space; and every unit handed
to spaCy is cut off from the next by a newline, which no match crosses. A text's words never
depend on the other texts of its batch.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import polars as pl
import pyarrow as pa

from assay.scorers.heuristics.text import char_class, explode, python_chars, python_class, whitespace

# Marks spaCy's English rules always split off the start (prefix) or the end (suffix) of a
# chunk, whatever their neighbours (spaCy lang/char_classes.py: LIST_PUNCT, LIST_QUOTES). A final
# "." is split only after a lower-case letter, a digit or two capitals; other rules (units,
# currencies, "%", ellipses) are left to spaCy.
PREFIX_MARKS = "([{\"'“‘„«»¿¡#*&"
SUFFIX_MARKS = ",;:!?)]}\"'”’“‘»«…"
POSSESSIVES = ("'s", "'S", "’s", "’S")
SEP = "\x00"  # joins tokens when matching special-case token sequences; never inside a fast chunk
# Joins the units handed to spaCy in one call. Not a space, which spaCy drops, so that its
# special-case matcher would run from one unit into the next (another document's, say): a
# newline stays a token of its own, and no multi-token special case holds one (checked in
# ``_matcher_patterns``), so no match crosses it.
CHUNK_SEP = "\n"


@lru_cache(maxsize=1)
def english():
    """spaCy's blank English pipeline: its tokenizer is the one datatrove loads for "en"."""
    import spacy  # heavy import, only when a batch needs it

    nlp = spacy.blank("en")
    # Lexical attributes (shape, like_num, ...) never change how text is split; skipping them
    # halves the cost of each new token string.
    nlp.vocab.lex_attr_getters = {}
    return nlp


@lru_cache(maxsize=1)
def _matcher_patterns() -> dict[str, list[str]]:
    """Each special-case string and the token sequence spaCy's special-case matcher looks for:
    the string as the prefix/suffix/infix rules alone split it."""
    from spacy.tokenizer import Tokenizer

    tok = english().tokenizer
    affix_only = Tokenizer(
        english().vocab,
        rules={},
        prefix_search=tok.prefix_search,
        suffix_search=tok.suffix_search,
        infix_finditer=tok.infix_finditer,
        token_match=tok.token_match,
        url_match=tok.url_match,
    )
    patterns = {key: [t.text for t in affix_only(key)] for key in tok.rules}
    for key, plain in patterns.items():
        if len(plain) > 1 and CHUNK_SEP in plain:
            raise RuntimeError(
                f"spaCy special case {key!r} holds {CHUNK_SEP!r}: CHUNK_SEP no longer separates units"
            )
    return patterns


@lru_cache(maxsize=1)
def _special_cases() -> tuple[pl.Series, list[str]]:
    """All special-case strings, and the token sequences of those whose special tokens differ
    from what the prefix/suffix/infix rules alone would give ("Mr." stays whole, "a." too,
    "Im" -> "I", "m"): a fast-path chunk that holds one of those sequences goes to spaCy."""
    from spacy.symbols import ORTH

    changed = []
    for key, tokens in english().tokenizer.rules.items():
        plain = _matcher_patterns()[key]
        if plain != [t[ORTH] for t in tokens]:
            changed.append(SEP + SEP.join(plain) + SEP)
    return pl.Series(list(english().tokenizer.rules), dtype=pl.String), changed


@lru_cache(maxsize=1)
def _pattern_cuts() -> tuple[pl.DataFrame, np.ndarray]:
    """Every cut of a multi-token matcher pattern between two of its tokens: ``left`` and
    ``right``, the text before and after the cut, and ``last``, ``first``, the characters on
    either side of it. A match across the space between two chunks cuts its pattern there.
    Also a 256 x 256 table of the (last, first) pairs as UTF-8 bytes, for a first sieve."""
    cuts = [
        (plain[j - 1][-1], plain[j][0], "".join(plain[:j]), "".join(plain[j:]))
        for plain in _matcher_patterns().values()
        for j in range(1, len(plain))
    ]
    table = np.zeros((256, 256), dtype=bool)
    for last, first, _, _ in cuts:
        table[last.encode()[-1], first.encode()[0]] = True
    return pl.DataFrame(cuts, schema=["last", "first", "left", "right"], orient="row").unique(), table


@lru_cache(maxsize=1)
def _patterns() -> dict[str, str]:
    alpha = python_class("isalpha")
    ascii_letters = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    other_alpha = char_class(frozenset(python_chars("isalpha")) - ascii_letters)
    number = "[0-9]+(?:[,.:][0-9]+)*"
    # spaCy splits a hyphen between two letters (ASCII here) and between two numbers
    hyphenated = f"{alpha}*[A-Za-z](?:-[A-Za-z](?:{alpha}*[A-Za-z])?)*-[A-Za-z]{alpha}*"
    core = f"{hyphenated}|{alpha}+|{number}(?:-{number})*"
    pre, suf = char_class(PREFIX_MARKS), char_class(SUFFIX_MARKS)
    poss = "|".join(POSSESSIVES)
    return {
        "gap_chunk": python_class("isspace") + "*" + python_class("isspace", negate=True) + "+",
        "plain": f"^{alpha}+$",
        "shaped": f"^({pre}?)({core})((?:{poss})?)((?:{suf}|\\.)*)$",
        # a "." spaCy would not split: after a lone capital or a non-ASCII letter, or "..."
        "kept_period": f"(?:^|[^A-Z])[A-Z]\\.|{other_alpha}\\.|\\.\\.",
    }


def _chunks(texts: pl.Series) -> tuple[pl.Series, np.ndarray, np.ndarray]:
    """Whitespace-separated chunks of every text, the row of each, and whether spaCy puts a
    whitespace token before it (any leading whitespace, or a gap other than one space)."""
    pieces, rows = explode(texts.str.extract_all(_patterns()["gap_chunk"]), "piece")
    chunks = pieces.str.strip_chars_start(whitespace())
    gap = (pieces.str.len_chars() - chunks.str.len_chars()).to_numpy()
    first = np.ones(len(rows), dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    single_space = (gap == 1) & pieces.str.starts_with(" ").to_numpy()
    return chunks, rows, (gap > 0) & (first | ~single_space)


def _edge_bytes(chunks: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """First and last UTF-8 byte of every (non-empty) chunk, read off the Arrow buffers."""
    if len(chunks) == 0:
        return np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.uint8)
    arr = chunks.to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_string())
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
    return data[offsets[:-1]], data[offsets[1:] - 1]


def _joined(chunks: pl.Series, rows: np.ndarray, ws_before: np.ndarray) -> np.ndarray:
    """Whether each chunk must be tokenised together with the chunk before it: one space apart
    in the same text, and a special-case pattern could be matched across that space. The test
    is on text and never misses such a match: the pattern's tokens before the cut, joined, end
    the chunk before the space or hold all of it (the match began earlier), and likewise after."""
    joined = np.zeros(len(chunks), dtype=bool)
    cuts, byte_pairs = _pattern_cuts()
    first_byte, last_byte = _edge_bytes(chunks)
    after_space = np.flatnonzero(~ws_before[1:] & (rows[1:] == rows[:-1])) + 1
    after_space = after_space[byte_pairs[last_byte[after_space - 1], first_byte[after_space]]]
    if len(after_space) == 0:
        return joined
    pairs = pl.DataFrame(
        {
            "i": after_space,
            "last": chunks.gather(after_space - 1).str.slice(-1),
            "first": chunks.gather(after_space).str.slice(0, 1),
        }
    ).join(cuts, on=["last", "first"])
    if pairs.height == 0:
        return joined
    x = chunks.gather(pairs["i"] - 1).alias("x")
    y = chunks.gather(pairs["i"]).alias("y")
    left, right = pl.col("left"), pl.col("right")
    hits = pairs.with_columns(x, y).filter(
        (pl.col("x").str.ends_with(left) | left.str.ends_with(pl.col("x")))
        & (pl.col("y").str.starts_with(right) | right.str.starts_with(pl.col("y")))
    )
    joined[hits["i"].to_numpy()] = True
    return joined


def _shaped_tokens(chunks: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """Tokens of word/number chunks with marks around them (prefix, core pieces split at
    hyphens, possessive, one token per suffix mark) and, per chunk, whether the rule-based
    tokens hold a special case, so that spaCy must decide."""
    parts = chunks.str.extract_groups(_patterns()["shaped"]).struct.unnest()
    pre, core, poss, marks = (pl.col(name) for name in parts.columns)
    tokens = pl.concat_list(
        pre.str.extract_all("(?s).+"),
        core.str.extract_all("[^-]+|-"),
        poss.str.extract_all("(?s).+"),
        marks.str.extract_all("(?s)."),
    )
    _, changed = _special_cases()
    out = parts.select(tokens=tokens).with_columns(
        special=(pl.lit(SEP) + pl.col("tokens").list.join(SEP) + pl.lit(SEP)).str.contains_any(changed)
    )
    return out["tokens"], out["special"].to_numpy()


def _spacy_tokens(chunks: pl.Series) -> tuple[np.ndarray, np.ndarray, pl.Series]:
    """spaCy's tokens of ``chunks`` (a chunk, or chunks one space apart, each): for each token the
    index of its entry in ``chunks``, its offset there, and the token. Each distinct entry is
    tokenised once, all in one call, joined by ``CHUNK_SEP``, whose tokens are dropped."""
    from spacy.attrs import IDX, LENGTH

    if len(chunks) == 0:
        return (
            np.zeros(0, dtype=np.int64),
            np.zeros(0, dtype=np.int64),
            pl.Series("word", [], dtype=pl.String),
        )
    _matcher_patterns()  # checks that CHUNK_SEP separates them
    frame = pl.DataFrame({"chunk": chunks})
    uniq = frame.unique(maintain_order=True).with_row_index("u")
    inverse = frame.join(uniq, on="chunk", how="left", maintain_order="left")["u"].to_numpy()
    uniq_chunks = uniq["chunk"]
    ulen = uniq_chunks.str.len_chars().to_numpy().astype(np.int64)
    ustart = np.concatenate(([0], np.cumsum(ulen + 1)[:-1]))
    nlp = english()
    with nlp.memory_zone():  # frees the lexemes of this batch's strings afterwards
        text = CHUNK_SEP.join(uniq_chunks.to_list())
        arr = nlp.tokenizer(text).to_array([IDX, LENGTH]).astype(np.int64)
    tok_u = np.searchsorted(ustart, arr[:, 0], side="right") - 1
    # a separator token starts where its chunk ends (chunks hold no whitespace)
    inside = arr[:, 0] - ustart[tok_u] < ulen[tok_u]
    arr, tok_u = arr[inside], tok_u[inside]
    # every occurrence of a distinct chunk receives that chunk's tokens
    per_u = np.bincount(tok_u, minlength=len(uniq_chunks))
    first_tok = np.concatenate(([0], np.cumsum(per_u)[:-1]))
    reps = per_u[inverse]
    occ = np.repeat(np.arange(len(chunks)), reps)
    within = np.arange(int(reps.sum())) - np.repeat(np.cumsum(reps) - reps, reps)
    src = first_tok[inverse][occ] + within
    start = arr[src, 0] - ustart[tok_u[src]]
    words = chunks.gather(occ).str.slice(pl.Series(start), pl.Series(arr[src, 1]))
    return occ, start, words


def _spacy_chunk_tokens(
    chunks: pl.Series, idx: np.ndarray, joined: np.ndarray
) -> tuple[np.ndarray, pl.Series]:
    """spaCy's tokens of the chunks ``idx`` (each joined chunk with the one before it, which
    ``idx`` holds too): (chunk of each token, token)."""
    picked = chunks.gather(idx)
    unit = np.cumsum(~joined)[idx]
    unit_start = np.ones(len(idx), dtype=bool)
    unit_start[1:] = unit[1:] != unit[:-1]
    units = picked.filter(unit_start)
    together = ~(unit_start & np.append(unit_start[1:], True))  # chunks in units of two or more
    if together.any():
        multi = (
            pl.DataFrame({"unit": unit[together], "chunk": picked.filter(together)})
            .group_by("unit", maintain_order=True)
            .agg(pl.col("chunk").str.join(" "))
        )
        at = np.searchsorted(unit[unit_start], multi["unit"].to_numpy())
        units = units.scatter(at, multi["chunk"])
    occ, start, words = _spacy_tokens(units)
    # offsets of the chunks in their units laid end to end, one character apart: a token's
    # offset there falls in its chunk (no token spans a space)
    width = picked.str.len_chars().to_numpy().astype(np.int64) + 1
    pos = np.cumsum(width) - width
    of = np.searchsorted(pos, pos[unit_start][occ] + start, side="right") - 1
    return idx[of], words


def split_words(texts: pl.Series, with_gaps: bool = False) -> pl.DataFrame:
    """spaCy English words of every text, in order, whitespace tokens dropped.

    Columns: ``row`` (index into ``texts``), ``word``, and with ``with_gaps`` also
    ``ws_before``: spaCy puts a whitespace token right before this word.
    """
    chunks, rows, ws_before = _chunks(texts.fill_null(""))
    keys, _ = _special_cases()
    pats = _patterns()
    # a chunk whose tokens may depend on a neighbour goes to spaCy with that neighbour
    joined = _joined(chunks, rows, ws_before)
    with_neighbour = joined.copy()
    with_neighbour[:-1] |= joined[1:]
    plain = (chunks.str.contains(pats["plain"]) & ~chunks.is_in(keys.implode())).to_numpy() & ~with_neighbour
    shaped = chunks.str.contains(pats["shaped"]) & ~chunks.str.contains(pats["kept_period"])
    shaped_idx = np.flatnonzero(shaped.to_numpy() & ~plain & ~with_neighbour)
    shaped_tokens, special = _shaped_tokens(chunks.gather(shaped_idx))
    shaped_idx, shaped_tokens = shaped_idx[~special], shaped_tokens.filter(~special)
    shaped_words, shaped_of = explode(shaped_tokens, "word")
    rest = np.ones(len(chunks), dtype=bool)
    rest[plain] = False
    rest[shaped_idx] = False
    spacy_of, spacy_words = _spacy_chunk_tokens(chunks, np.flatnonzero(rest), joined)
    # each chunk's tokens come from one source, in order: a stable sort by chunk restores text order
    cid = np.concatenate([np.flatnonzero(plain), shaped_idx[shaped_of], spacy_of])
    words = pl.concat([chunks.filter(plain), shaped_words, spacy_words.alias("chunk")]).alias("word")
    order = np.argsort(cid, kind="stable")
    cid = cid[order]
    out = pl.DataFrame({"row": rows[cid], "word": words.gather(order)})
    if with_gaps:
        first_in_chunk = np.ones(len(cid), dtype=bool)
        first_in_chunk[1:] = cid[1:] != cid[:-1]
        out = out.with_columns(ws_before=pl.Series(ws_before[cid] & first_in_chunk))
    return out
