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
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import polars as pl

from assay.scorers.heuristics.text import char_class, explode, python_chars, python_class, whitespace

# Marks spaCy's English rules always split off the start (prefix) or the end (suffix) of a
# chunk, whatever their neighbours (spaCy lang/char_classes.py: LIST_PUNCT, LIST_QUOTES). A final
# "." is split only after a lower-case letter, a digit or two capitals; other rules (units,
# currencies, "%", ellipses) are left to spaCy.
PREFIX_MARKS = "([{\"'“‘„«»¿¡#*&"
SUFFIX_MARKS = ",;:!?)]}\"'”’“‘»«…"
POSSESSIVES = ("'s", "'S", "’s", "’S")
SEP = "\x00"  # joins tokens when matching special-case token sequences; never inside a fast chunk


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
def _special_cases() -> tuple[pl.Series, list[str]]:
    """All special-case strings, and the token sequences of those whose special tokens differ
    from what the prefix/suffix/infix rules alone would give ("Mr." stays whole, "a." too,
    "Im" -> "I", "m"): a fast-path chunk that holds one of those sequences goes to spaCy."""
    from spacy.symbols import ORTH
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
    changed = []
    for key, tokens in tok.rules.items():
        plain = [t.text for t in affix_only(key)]
        if plain != [t[ORTH] for t in tokens]:
            changed.append(SEP + SEP.join(plain) + SEP)
    return pl.Series(list(tok.rules), dtype=pl.String), changed


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
        "chunk": python_class("isspace", negate=True) + "+",
        "gap_chunk": python_class("isspace") + "*" + python_class("isspace", negate=True) + "+",
        "plain": f"^{alpha}+$",
        "shaped": f"^({pre}?)({core})((?:{poss})?)((?:{suf}|\\.)*)$",
        # a "." spaCy would not split: after a lone capital or a non-ASCII letter, or "..."
        "kept_period": f"(?:^|[^A-Z])[A-Z]\\.|{other_alpha}\\.|\\.\\.",
    }


def _chunks(texts: pl.Series, with_gaps: bool) -> tuple[pl.Series, np.ndarray, np.ndarray | None]:
    """Whitespace-separated chunks of every text, the row of each, and whether spaCy puts a
    whitespace token before it (any leading whitespace, or a gap other than one space)."""
    pats = _patterns()
    if not with_gaps:
        chunks, rows = explode(texts.str.extract_all(pats["chunk"]), "chunk")
        return chunks, rows, None
    pieces, rows = explode(texts.str.extract_all(pats["gap_chunk"]), "piece")
    chunks = pieces.str.strip_chars_start(whitespace())
    gap = (pieces.str.len_chars() - chunks.str.len_chars()).to_numpy()
    first = np.ones(len(rows), dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    single_space = (gap == 1) & pieces.str.starts_with(" ").to_numpy()
    return chunks, rows, (gap > 0) & (first | ~single_space)


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


def _spacy_tokens(chunks: pl.Series) -> tuple[np.ndarray, pl.Series]:
    """spaCy's tokens of ``chunks``: (chunk index of each token, token). Each distinct chunk is
    tokenised once; they are joined by single spaces, which spaCy splits on and drops."""
    from spacy.attrs import IDX, LENGTH

    if len(chunks) == 0:
        return np.zeros(0, dtype=np.int64), pl.Series("word", [], dtype=pl.String)
    frame = pl.DataFrame({"chunk": chunks})
    uniq = frame.unique(maintain_order=True).with_row_index("u")
    inverse = frame.join(uniq, on="chunk", how="left", maintain_order="left")["u"].to_numpy()
    uniq_chunks = uniq["chunk"]
    ulen = uniq_chunks.str.len_chars().to_numpy().astype(np.int64)
    ustart = np.concatenate(([0], np.cumsum(ulen + 1)[:-1]))
    nlp = english()
    with nlp.memory_zone():  # frees the lexemes of this batch's strings afterwards
        arr = nlp.tokenizer(" ".join(uniq_chunks.to_list())).to_array([IDX, LENGTH]).astype(np.int64)
    tok_u = np.searchsorted(ustart, arr[:, 0], side="right") - 1
    # every occurrence of a distinct chunk receives that chunk's tokens
    per_u = np.bincount(tok_u, minlength=len(uniq_chunks))
    first_tok = np.concatenate(([0], np.cumsum(per_u)[:-1]))
    reps = per_u[inverse]
    occ = np.repeat(np.arange(len(chunks)), reps)
    within = np.arange(int(reps.sum())) - np.repeat(np.cumsum(reps) - reps, reps)
    src = first_tok[inverse][occ] + within
    start = pl.Series(arr[src, 0] - ustart[tok_u[src]])
    words = chunks.gather(occ).str.slice(start, pl.Series(arr[src, 1]))
    return occ, words


def split_words(texts: pl.Series, with_gaps: bool = False) -> pl.DataFrame:
    """spaCy English words of every text, in order, whitespace tokens dropped.

    Columns: ``row`` (index into ``texts``), ``word``, and with ``with_gaps`` also
    ``ws_before``: spaCy puts a whitespace token right before this word.
    """
    chunks, rows, ws_before = _chunks(texts.fill_null(""), with_gaps)
    keys, _ = _special_cases()
    pats = _patterns()
    plain = (chunks.str.contains(pats["plain"]) & ~chunks.is_in(keys.implode())).to_numpy()
    shaped = chunks.str.contains(pats["shaped"]) & ~chunks.str.contains(pats["kept_period"])
    shaped_idx = np.flatnonzero(shaped.to_numpy() & ~plain)
    shaped_tokens, special = _shaped_tokens(chunks.gather(shaped_idx))
    shaped_idx, shaped_tokens = shaped_idx[~special], shaped_tokens.filter(~special)
    shaped_words, shaped_of = explode(shaped_tokens, "word")
    rest = np.ones(len(chunks), dtype=bool)
    rest[plain] = False
    rest[shaped_idx] = False
    rest_idx = np.flatnonzero(rest)
    spacy_of, spacy_words = _spacy_tokens(chunks.gather(rest_idx))
    # each chunk's tokens come from one source, in order: a stable sort by chunk restores text order
    cid = np.concatenate([np.flatnonzero(plain), shaped_idx[shaped_of], rest_idx[spacy_of]])
    words = pl.concat([chunks.filter(plain), shaped_words, spacy_words.alias("chunk")]).alias("word")
    order = np.argsort(cid, kind="stable")
    cid = cid[order]
    out = pl.DataFrame({"row": rows[cid], "word": words.gather(order)})
    if with_gaps:
        first_in_chunk = np.ones(len(cid), dtype=bool)
        first_in_chunk[1:] = cid[1:] != cid[:-1]
        out = out.with_columns(ws_before=pl.Series(ws_before[cid] & first_in_chunk))
    return out
