"""Scorer specs users type (`--scorer heuristics`, `--scorer fasttext:model.bin`) -> objects.

A spec is resolved, in this order, as

* `NAME[:ARG]` — a scorer built into Assay (`SCORERS` below);
* `datatrove:ClassName[:k=v,...]` — any datatrove filter, run per document (`datatrove_filter`);
* `NAME[:ARG]` — a scorer another package registers under the entry-point group `assay.scorers`
  (``[project.entry-points."assay.scorers"] myscore = "mypkg.scoring:MyScorer"``);
* `module.path:ClassName[:ARG]` — a class importable from the environment.

ARG is everything after the name (it may hold more colons). A class with a
`from_spec(arg, root, **settings)` classmethod receives it; any other class is called with the
settings its constructor accepts and takes no ARG. The contract is in `assay.scorers.base`.
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from assay.scorers.base import accepted_settings, check_protocol, is_extractor

SCORERS: dict[str, str] = {
    "stats": "assay.scorers.stats:StatsScorer",
    "heuristics": "assay.scorers.heuristics:HeuristicsScorer",
    "language": "assay.scorers.language:LanguageScorer",
    "fasttext": "assay.scorers.fasttext_classifier:FastTextClassifierScorer",
    "facts": "assay.scorers.facts:FactMentionExtractor",
    "triples": "assay.scorers.triples_spacy:SpacyTripleExtractor",
    "cluster": "assay.scorers.cluster:ClusterScorer",
    "datatrove": "assay.scorers.datatrove_filter:DatatroveFilterScorer",
    "embed": "assay.scorers.embed:EmbeddingScorer",
    "lm_loss": "assay.scorers.lm_loss:LMLossScorer",
    "betr": "assay.scorers.betr:BetrScorer",
    "contamination": "assay.scorers.contamination:ContaminationScorer",
    "preselect": "assay.scorers.preselect:PreselectScorer",
    "qurating": "assay.scorers.qurating:QuRatingScorer",
    "rater": "assay.scorers.rater:RaterScorer",
    "dataman": "assay.scorers.dataman:DataManScorer",
    "meta_rater": "assay.scorers.meta_rater:MetaRaterScorer",
    "exact_dup": "assay.scorers.exact_dup:ExactDupScorer",
    "minhash": "assay.scorers.minhash:MinHashScorer",
}

ENTRY_POINT_GROUP = "assay.scorers"

__all__ = [
    "SCORERS",
    "ENTRY_POINT_GROUP",
    "available",
    "is_extractor",
    "make_scorer",
    "parse_spec",
    "resolve",
]


def parse_spec(spec: str) -> tuple[str, str | None]:
    name, _, arg = spec.partition(":")
    return name.strip(), (arg.strip() or None)


def plugin_scorers() -> dict[str, str]:
    """Scorers other installed packages register: name -> "module:attr"."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> dict[str, str]:
    """Every scorer name `--scorer` accepts without a module path: built-in, then plugins."""
    return {**plugin_scorers(), **SCORERS}


def _import(target: str, spec: str) -> Any:
    module, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise ValueError(f"--scorer {spec}: cannot import {module} ({exc})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"--scorer {spec}: {module} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def resolve(spec: str) -> tuple[Any, str | None]:
    """The class (or factory) a spec names and the argument to give it."""
    name, arg = parse_spec(spec)
    known = available()
    if name in known:
        return _import(known[name], spec), arg
    if "." in name or _is_module(name):
        attr, _, rest = (arg or "").partition(":")
        if not attr:
            raise ValueError(f"--scorer {spec}: give the class too, as {name}:ClassName[:ARG]")
        return _import(f"{name}:{attr}", spec), (rest.strip() or None)
    raise ValueError(
        f"unknown scorer {name!r}; known: {', '.join(sorted(known))} "
        "(or module.path:ClassName for a scorer from another package)"
    )


def make_scorer(spec: str, root: str | Path = ".", **settings: Any):
    """Build the scorer or extractor a spec names; settings (device, batch_size) pass through."""
    cls, arg = resolve(spec)
    if hasattr(cls, "from_spec"):
        scorer = cls.from_spec(arg, Path(root), **settings)
    elif arg is not None:
        raise ValueError(f"--scorer {spec}: {getattr(cls, '__name__', cls)} takes no argument (got {arg!r})")
    else:
        scorer = cls(**accepted_settings(cls, settings))
    return check_protocol(scorer, spec)
