"""The contract every scorer and extractor follows — Assay's own and those from other packages.

A **scorer** writes one annotation set, ``annotations/<name>/part-NNNNN.parquet``: ``id`` plus
its columns, one row per document. An **extractor** writes side tables under ``triples/``
with any number of rows per document, each carrying ``doc_id``. Neither knows of shards,
executors, the catalog or the CLI: ``assay.pipelines`` brings those.

Everything the pipeline relies on is listed here; nothing else is read from a scorer.

Required of both:

``name: str``
    The folder it writes (and the prefix of its columns when two sets share a column name).
``version: str``
    Changes whenever the outputs would change (code, settings, model file). A new version marks
    the old annotations stale; they are removed and recomputed.
``output_schema() -> pa.Schema``
    The columns it returns, without ``id``. An extractor may return ``{table_name: schema}``
    to write several side tables (``triples/<table_name>/``).

Required of a scorer: ``score(batch: pa.RecordBatch) -> pa.RecordBatch`` with the same rows in
the same order. Required of an extractor: ``kind = "extractor"`` and
``extract(batch) -> pa.Table`` (or ``{table_name: pa.Table}``), every row with ``doc_id``.

Optional:

``input_columns: tuple[str, ...]``
    The columns ``score`` reads; default ``("id", "text")``. A column that is not a docs column
    is read from the annotation set that holds it and joined by ``id`` (a mismatch is an error).
``from_spec(arg: str | None, root: Path, **settings) -> scorer`` (classmethod)
    Builds the scorer from the text after the first ``:`` of ``--scorer NAME:ARG`` (a model
    path, ``k=v`` options...). Without it the class is called with the settings its constructor
    accepts, and a spec argument is an error.

Settings the pipeline passes (to ``from_spec``, or to the constructor when it accepts them):
``device`` ("auto" | "cpu" | "cuda") and ``batch_size`` (None: the scorer's default).

Purity: a document's outputs must be a function of that document (and the version) alone,
never of which other documents share its batch or shard. Scorers are pickled to worker
processes: keep loaded models out of the pickled state (load them lazily in the worker).
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

DEFAULT_INPUT_COLUMNS: tuple[str, ...] = ("id", "text")


@runtime_checkable
class Scorer(Protocol):
    """One annotation set: ``name`` is the folder under ``annotations/`` it writes."""

    name: str
    version: str

    def output_schema(self) -> pa.Schema: ...

    def score(self, batch: pa.RecordBatch) -> pa.RecordBatch: ...


@runtime_checkable
class Extractor(Protocol):
    """A side table (triples, fact mentions): ``name`` is the folder under ``triples/``."""

    name: str
    version: str
    kind: str  # always "extractor"; lets pipelines tell the two apart without isinstance games

    def output_schema(self) -> pa.Schema | dict[str, pa.Schema]: ...

    def extract(self, batch: pa.RecordBatch) -> pa.Table | dict[str, pa.Table]: ...


def is_extractor(scorer: Any) -> bool:
    return getattr(scorer, "kind", "scorer") == "extractor"


def input_columns(scorer: Any) -> tuple[str, ...]:
    return tuple(getattr(scorer, "input_columns", None) or DEFAULT_INPUT_COLUMNS)


def check_protocol(scorer: Any, spec: str) -> Any:
    """A clear error when an object (typically from another package) misses part of the contract."""
    missing = [a for a in ("name", "version") if not isinstance(getattr(scorer, a, None), str)]
    method = "extract" if is_extractor(scorer) else "score"
    missing += [m for m in ("output_schema", method) if not callable(getattr(scorer, m, None))]
    if missing:
        kind = "an extractor" if is_extractor(scorer) else "a scorer"
        raise ValueError(
            f"--scorer {spec}: {type(scorer).__name__} is not {kind}: it lacks {', '.join(missing)} "
            "(the contract is in assay.scorers.base)"
        )
    if not scorer.name or "/" in scorer.name or scorer.name.startswith("."):
        raise ValueError(f"--scorer {spec}: name {scorer.name!r} cannot be a folder name")
    return scorer


def accepted_settings(cls: type, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings a constructor takes by name (dataclass fields or keyword parameters)."""
    fields = getattr(cls, "__dataclass_fields__", None)
    if fields is not None:
        return {k: v for k, v in settings.items() if k in fields and fields[k].init}
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(settings)
    return {k: v for k, v in settings.items() if k in params}


def check_scored(batch: pa.RecordBatch, out: pa.RecordBatch, scorer: Scorer) -> pa.RecordBatch:
    """Fail loudly when a scorer breaks the same-rows contract or its declared schema."""
    if out.num_rows != batch.num_rows:
        raise ValueError(f"scorer {scorer.name!r} returned {out.num_rows} rows for {batch.num_rows}")
    expected = scorer.output_schema()
    if not out.schema.equals(expected, check_metadata=False):
        missing = [f.name for f in expected if f.name not in out.schema.names]
        if missing:
            raise ValueError(f"scorer {scorer.name!r} did not return its columns {missing}")
        out = pa.RecordBatch.from_arrays([out.column(f.name).cast(f.type) for f in expected], schema=expected)
    return out
