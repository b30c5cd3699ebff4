"""`assay annotate`: run scorers over every docs shard, one work unit per shard.

Scorer outputs go to `annotations/<scorer>/part-NNNNN.parquet` (extractors: `triples/<name>/`),
numbered like the docs shard they describe. The manifest records each scorer's version; when
it changes, the old outputs are stale and are removed and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from corpora.atomic import sweep_temporaries, write_json_atomic
from corpora.catalog import refresh_catalog
from corpora.manifest import load_manifest, save_manifest, tool_versions
from corpora.shards import sha256_file, write_table_atomic
from pipelines.executor import ExecutorConfig, run_units
from scorers.base import check_scored
from scorers.registry import is_extractor, make_scorer

_SCORER_CACHE: dict[tuple, Any] = {}  # one model load per worker process, not per shard


def _scorer(spec: str, root: str, settings: dict):
    key = (spec, root, json.dumps(settings, sort_keys=True))
    if key not in _SCORER_CACHE:
        _SCORER_CACHE[key] = make_scorer(spec, root, **settings)
    return _SCORER_CACHE[key]


def output_folder(root: Path, scorer) -> Path:
    return root / ("triples" if is_extractor(scorer) else "annotations") / scorer.name


def _input_batches(root: Path, shard: str, columns: list[str], batch_size: int):
    """Docs batches with the columns a scorer asks for; columns that other annotation sets
    hold are joined positionally (annotation files keep their docs shard's row order)."""
    import pyarrow.parquet as pq

    docs_file = pq.ParquetFile(root / shard)
    doc_cols = [c for c in columns if c in docs_file.schema_arrow.names]
    extra = [c for c in columns if c not in doc_cols]
    extra_tables = []
    if extra:
        part = Path(shard).name
        for folder in sorted((root / "annotations").glob("*")):
            f = folder / part
            if f.exists():
                names = [c for c in pq.read_schema(f).names if c in extra]
                if names:
                    extra_tables.append(pq.read_table(f, columns=names))
                    extra = [c for c in extra if c not in names]
        if extra:
            raise ValueError(f"columns {extra} are neither docs columns nor in any annotation set of {shard}")
    offset = 0
    for batch in docs_file.iter_batches(batch_size=batch_size, columns=doc_cols):
        for t in extra_tables:
            for name in t.column_names:
                batch = batch.append_column(
                    name, t.column(name).slice(offset, batch.num_rows).combine_chunks()
                )
        offset += batch.num_rows
        yield batch


def annotate_unit(unit_index: int, unit: dict, root: str, specs: list[str], settings: dict, key: str) -> dict:
    """Score one docs shard with every scorer whose output for it is missing."""
    root_p = Path(root)
    record_path = root_p / ".assay" / "units" / f"annotate-{key}" / f"u{unit_index:05d}.json"
    if record_path.exists():
        return json.loads(record_path.read_text())
    shard = unit["shard"]
    part = Path(shard).name
    timings = {}
    rows = 0
    for spec in specs:
        scorer = _scorer(spec, root, settings)
        out = output_folder(root_p, scorer) / part
        if out.exists():
            continue
        started = time.time()
        columns = list(getattr(scorer, "input_columns", ("id", "text")))
        pieces = []
        for batch in _input_batches(root_p, shard, columns, settings.get("batch_size") or 2048):
            if is_extractor(scorer):
                pieces.append(scorer.extract(batch))
            else:
                scored = check_scored(batch, scorer.score(batch), scorer)
                ids = batch.column(batch.schema.get_field_index("id"))
                pieces.append(pa.Table.from_batches([scored]).add_column(0, "id", ids))
        rows = sum(p.num_rows for p in pieces) if not is_extractor(scorer) else rows
        if pieces:
            table = pa.concat_tables(pieces)
        else:
            schema = scorer.output_schema()
            table = (
                schema.empty_table()
                if is_extractor(scorer)
                else pa.schema([("id", pa.string()), *schema]).empty_table()
            )
        write_table_atomic(table, out)
        timings[scorer.name] = round(time.time() - started, 3)
    record = {"unit": unit_index, "shard": shard, "rows": rows, "seconds": timings}
    write_json_atomic(record_path, record)
    return record


def annotate(
    root: str | Path,
    specs: list[str],
    config: ExecutorConfig | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    quiet: bool = False,
) -> dict:
    """Run the scorers over the corpus; recomputes stale annotation sets, skips finished shards."""
    root = Path(root)
    config = config or ExecutorConfig()
    manifest = load_manifest(root)
    shards = [s["name"] for s in manifest["shards"]]
    if not shards:
        raise ValueError(f"{root}: the corpus has no docs shards; run `assay ingest` first")
    settings = {"device": device, "batch_size": batch_size}
    scorers = [make_scorer(spec, root, **settings) for spec in specs]
    stale = []
    for spec, scorer in zip(specs, scorers):
        entry = manifest["annotations"].get(scorer.name)
        if entry and entry["version"] != scorer.version:
            shutil.rmtree(output_folder(root, scorer), ignore_errors=True)
            stale.append(scorer.name)
            entry = None
        if entry is None:
            manifest["annotations"][scorer.name] = {
                "spec": spec,
                "version": scorer.version,
                "kind": "extractor" if is_extractor(scorer) else "scorer",
                "columns": [f.name for f in scorer.output_schema()],
                "shards": {},
            }
    save_manifest(root, manifest)
    sweep_temporaries(root / "annotations")
    sweep_temporaries(root / "triples")
    units = [{"shard": s} for s in shards]
    blob = json.dumps([specs, [s.version for s in scorers], shards], sort_keys=True).encode()
    key = hashlib.sha256(blob).hexdigest()[:12]
    record_dir = root / ".assay" / "units" / f"annotate-{key}"

    def count_done() -> int:
        return len(list(record_dir.glob("u*.json"))) if record_dir.exists() else 0

    started = time.time()
    seconds = run_units(
        "pipelines.annotate:annotate_unit",
        units,
        {"root": str(root), "specs": specs, "settings": settings, "key": key},
        root / ".assay" / "logs" / f"annotate-{key}",
        config,
        count_done,
        "annotate " + ",".join(s.name for s in scorers),
        quiet=quiet,
    )
    records = [json.loads(p.read_text()) for p in sorted(record_dir.glob("u*.json"))]
    manifest = load_manifest(root)
    n_docs = sum(s["rows"] for s in manifest["shards"])
    per_scorer = {}
    for scorer in scorers:
        entry = manifest["annotations"][scorer.name]
        folder = output_folder(root, scorer)
        for s in shards:
            f = folder / Path(s).name
            if Path(s).name not in entry["shards"] and f.exists():
                import pyarrow.parquet as pq

                entry["shards"][Path(s).name] = {
                    "rows": pq.ParquetFile(f).metadata.num_rows,
                    "sha256": sha256_file(f),
                }
        spent = sum(r["seconds"].get(scorer.name, 0.0) for r in records)
        per_scorer[scorer.name] = {
            "version": scorer.version,
            "seconds": round(spent, 3),
            "docs_per_s": round(n_docs / spent, 1) if spent else None,
        }
    manifest["runs"].append(
        {
            "stage": "annotate",
            "run": key,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "seconds": round(seconds, 3),
            "executor": config.kind,
            "workers": config.workers,
            "scorers": per_scorer,
            "stale_recomputed": stale,
            "docs": n_docs,
            "errors": 0,
            "versions": tool_versions(),
        }
    )
    save_manifest(root, manifest)
    shutil.rmtree(record_dir, ignore_errors=True)
    refresh_catalog(root)
    return {"scorers": per_scorer, "stale_recomputed": stale, "docs": n_docs, "seconds": round(seconds, 3)}
