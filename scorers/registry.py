"""Scorer names users type (`--scorer heuristics`, `--scorer fasttext:model.bin`) -> objects.

A spec is `NAME` or `NAME:ARG`. Classes with a `from_spec(arg, root, **settings)` classmethod
take the argument (a model path, a fact set, k=...); the others take settings only.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

SCORERS: dict[str, str] = {
    "stats": "assay.scorers.stats:StatsScorer",
    "heuristics": "assay.scorers.heuristics:HeuristicsScorer",
    "language": "assay.scorers.language:LanguageScorer",
    "fasttext": "assay.scorers.fasttext_classifier:FastTextClassifierScorer",
    "facts": "assay.scorers.facts:FactMentionExtractor",
    "triples": "assay.scorers.triples_spacy:SpacyTripleExtractor",
    "cluster": "assay.scorers.cluster:ClusterScorer",
}


def parse_spec(spec: str) -> tuple[str, str | None]:
    name, _, arg = spec.partition(":")
    return name.strip(), (arg.strip() or None)


def make_scorer(spec: str, root: str | Path = ".", **settings: Any):
    """Build the scorer or extractor a spec names; settings (device, batch_size) pass through."""
    name, arg = parse_spec(spec)
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; known: {', '.join(sorted(SCORERS))}")
    module, attr = SCORERS[name].split(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as exc:
        raise ValueError(f"scorer {name!r} is not available in this installation ({exc})") from None
    if hasattr(cls, "from_spec"):
        return cls.from_spec(arg, Path(root), **settings)
    if arg is not None:
        raise ValueError(f"scorer {name!r} takes no argument (got {spec!r})")
    accepted = getattr(cls, "__dataclass_fields__", {})
    return cls(**{k: v for k, v in settings.items() if k in accepted})


def is_extractor(scorer: Any) -> bool:
    return getattr(scorer, "kind", "scorer") == "extractor"
