"""Word lists, phrases and character sets of the heuristic rule sets, each with its source.

Where the reference is datatrove or spaCy, the set is read from the installed package rather
than retyped, so the scorer stays in step with the filters it reproduces.
"""

from __future__ import annotations

import string
import unicodedata
from functools import lru_cache

# Gopher (Rae et al. 2021, "Scaling Language Models", App. A.1.1): a document must contain at
# least two of these English stop words.
GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
# Gopher A.1.1: lines starting with a bullet point, ending with an ellipsis.
GOPHER_BULLETS = ("•", "-")
GOPHER_ELLIPSES = ("...", "…")

# C4 (Raffel et al. 2020, §2.2) as in TensorFlow Datasets c4_utils.py: lines kept must end in a
# terminal mark; these phrases mark boilerplate lines; citations are removed first.
C4_END_MARKS = (".", "?", "!", '"', "'")
C4_POLICY_PHRASES = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)
C4_CITATION = r"\[\d*\]|\[edit\]|\[citation needed\]"

# RedPajama-Data v2 (togethercomputer/RedPajama-Data, app/src/core): normalisation removes
# ASCII punctuation; a line "ends with a terminal punctuation mark" when it ends in one of these.
RP_PUNCTUATION = string.punctuation
RP_TERMINAL_MARKS = (".", "!", "?", "”")
RP_SENTENCE = r"\b[^.!?]+[.!?]*"


@lru_cache(maxsize=1)
def datatrove_punctuation() -> tuple[frozenset[str], frozenset[str]]:
    """(symbols that do not make a word, terminal punctuation) as datatrove defines them."""
    from datatrove.utils.text import PUNCTUATION_SET, TERMINAL_PUNCTUATION

    return frozenset(PUNCTUATION_SET), frozenset(TERMINAL_PUNCTUATION)


@lru_cache(maxsize=1)
def sentence_end_chars() -> frozenset[str]:
    """Characters after which spaCy's sentencizer starts a new sentence."""
    from spacy.pipeline.sentencizer import Sentencizer

    return frozenset(Sentencizer.default_punct_chars)


@lru_cache(maxsize=1)
def unicode_punctuation() -> str:
    """Characters of Unicode category P*: a token made only of these is punctuation to spaCy."""
    return "".join(chr(c) for c in range(0x110000) if unicodedata.category(chr(c)).startswith("P"))
