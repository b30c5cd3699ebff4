"""Assay: annotate LLM pretraining corpora, query them with SQL, select mixtures, forecast accuracy.

The code lives in four subpackages — ``assay.corpora`` (data plane), ``assay.scorers``,
``assay.pipelines`` (orchestration and CLI) and ``assay.predictors``. The names below are the
public entry points; they are imported on first use so ``import assay`` stays cheap.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("assay")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

# public name -> "module:attribute"
_EXPORTS: dict[str, str] = {
    "ingest": "assay.pipelines.ingest:ingest",
    "annotate": "assay.pipelines.annotate:annotate",
    "select": "assay.pipelines.select:select",
    "forecast": "assay.pipelines.forecast:forecast",
    "parse_recipe": "assay.pipelines.recipe:parse_recipe",
    "ExecutorConfig": "assay.pipelines.executor:ExecutorConfig",
    "make_scorer": "assay.scorers.registry:make_scorer",
    "Scorer": "assay.scorers.base:Scorer",
    "Extractor": "assay.scorers.base:Extractor",
    "open_catalog": "assay.corpora.catalog:open_catalog",
    "run_query": "assay.corpora.catalog:run_query",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'assay' has no attribute {name!r}")
    module, attr = target.split(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
