"""`datatrove:ClassName[:k=v,...]`: any datatrove filter as two annotation columns.

Every document is offered to the filter's ``filter_batch`` as a datatrove ``Document`` (text,
id, and metadata = ``url``, ``source`` and the fields of ``meta``), and the answer becomes
``<name>_keep`` (bool) and ``<name>_reason`` (the reason string datatrove returns with a drop,
``"dropped"`` when it gives none, null when kept). Nothing is removed: the columns sit next to
Assay's own, so one SQL query can compare datatrove's decision with any other signal.

``name`` defaults to the class name in snake case without ``Filter`` (``URLFilter`` -> ``url``,
``GopherQualityFilter`` -> ``gopher_quality``); ``name=...`` in the options overrides it.
Option values are parsed as YAML scalars or lists (``max_avg_word_length=10``,
``languages=[en,fr]``); two prefixes reach outside the spec:

* ``lines:PATH`` — the lines of a local file as a list (a local bad-words or blocklist),
* ``py:module:attr`` — a Python object, e.g. ``LambdaFilter`` with ``filter_function=py:mymod:keep``.

A filter that raises on one document gives that document a null ``_keep`` and the reason
``error: <exception>``; such documents are counted in ``errors`` (the run record shows them).
Filters that draw random numbers (``SamplerFilter``, ``keep_fraction > 0``) are refused: their
answer would depend on which documents came before, and Assay's annotations may not.
"""

from __future__ import annotations

import hashlib
import importlib
import re
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

RANDOM_FILTERS = {"SamplerFilter"}


def snake_name(class_name: str) -> str:
    base = (
        class_name[: -len("Filter")]
        if class_name.endswith("Filter") and class_name != "Filter"
        else class_name
    )
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", base)
    return words.lower()


def split_options(arg: str) -> list[str]:
    """`a=1,b=[x,y],c=py:m:f` -> items, splitting on commas outside brackets."""
    items, depth, current = [], 0, []
    for ch in arg:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    return [i.strip() for i in items if i.strip()]


def _value(text: str, identity: list[str]) -> Any:
    import yaml

    if text.startswith("lines:"):
        path = Path(text[len("lines:") :]).expanduser()
        if not path.is_file():
            raise ValueError(f"datatrove filter option {text!r}: no such file")
        data = path.read_bytes()
        identity.append(hashlib.sha256(data).hexdigest())  # the list's content, not its path, is the version
        return [line.strip() for line in data.decode("utf-8").splitlines() if line.strip()]
    if text.startswith("py:"):
        module, _, attr = text[len("py:") :].partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"datatrove filter option {text!r}: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _filter_class(class_name: str):
    import datatrove.pipeline.filters as filters
    from datatrove.pipeline.filters.base_filter import BaseFilter

    if "." in class_name:
        module, _, attr = class_name.rpartition(".")
        cls = getattr(importlib.import_module(module), attr, None)
    else:
        cls = getattr(filters, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseFilter)):
        known = sorted(n for n in dir(filters) if n.endswith("Filter"))
        raise ValueError(
            f"datatrove:{class_name} is not a datatrove filter; datatrove has {', '.join(known)}"
        )
    return cls


class DatatroveFilterScorer:
    """Runs one datatrove ``BaseFilter`` per document and records its decision."""

    input_columns = ("id", "text", "url", "source", "meta")

    def __init__(self, filter_obj: Any, name: str | None = None, identity: str | None = None):
        from importlib.metadata import version

        cls_name = type(filter_obj).__name__
        if cls_name in RANDOM_FILTERS or (getattr(filter_obj, "keep_fraction", 0) or 0) > 0:
            raise ValueError(
                f"datatrove:{cls_name} draws random numbers, so a document's answer would depend on its "
                "neighbours; sample with a selection recipe (strategy: uniform) instead"
            )
        self.filter = filter_obj
        self.name = name or snake_name(cls_name)
        blob = f"{version('datatrove')}|{type(filter_obj).__module__}.{cls_name}|{identity or ''}"
        self.version = "dt-" + hashlib.sha256(blob.encode()).hexdigest()[:12]
        self.errors = 0

    @classmethod
    def from_spec(cls, arg: str | None, root: Path, **settings: Any) -> DatatroveFilterScorer:
        if not arg:
            raise ValueError("datatrove needs a filter class: --scorer datatrove:URLFilter[:k=v,...]")
        class_name, _, options = arg.partition(":")
        filter_cls = _filter_class(class_name.strip())
        kwargs, identity, name = {}, [arg], None
        for item in split_options(options):
            key, sep, text = item.partition("=")
            if not sep:
                raise ValueError(f"datatrove:{class_name}: option {item!r} is not key=value")
            if key.strip() == "name":
                name = text.strip()
                continue
            kwargs[key.strip()] = _value(text.strip(), identity)
        try:
            filter_obj = filter_cls(**kwargs)
        except TypeError as exc:
            raise ValueError(f"datatrove:{class_name}: {exc}") from None
        return cls(filter_obj, name=name, identity="|".join(identity))

    def output_schema(self) -> pa.Schema:
        return pa.schema([(f"{self.name}_keep", pa.bool_()), (f"{self.name}_reason", pa.string())])

    def _documents(self, batch: pa.RecordBatch) -> list:
        from datatrove.data import Document

        cols = {name: batch.column(name).to_pylist() for name in batch.schema.names}
        n = batch.num_rows
        ids, texts = cols["id"], cols["text"]
        urls, sources, metas = (cols.get(c, [None] * n) for c in ("url", "source", "meta"))
        docs = []
        for i in range(n):
            metadata = orjson.loads(metas[i]) if metas[i] else {}
            if urls[i] is not None:
                metadata["url"] = urls[i]
            if sources[i] is not None:
                metadata["source"] = sources[i]
            docs.append(Document(text=texts[i] or "", id=ids[i], metadata=metadata))
        return docs

    def _one(self, doc) -> tuple[bool | None, str | None]:
        try:
            return _decision(self.filter.filter(doc))
        except Exception as exc:  # one bad document must not sink the shard; it is counted
            self.errors += 1
            return None, f"error: {type(exc).__name__}: {exc}"[:500]

    def score(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        docs = self._documents(batch)
        try:
            answers = [_decision(r) for r in self.filter.filter_batch(docs)]
        except Exception:  # find the document that raised, one at a time
            answers = [self._one(doc) for doc in docs]
        keep = [a[0] for a in answers]
        reason = [a[1] for a in answers]
        return pa.RecordBatch.from_arrays(
            [pa.array(keep, pa.bool_()), pa.array(reason, pa.string())], schema=self.output_schema()
        )


def _decision(result: Any) -> tuple[bool, str | None]:
    keep, reason = result if isinstance(result, tuple) else (result, None)
    keep = bool(keep)
    return keep, None if keep else (reason or "dropped")
