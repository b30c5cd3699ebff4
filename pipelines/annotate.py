"""`assay annotate`: run scorers over every docs shard, one work unit per shard.

Scorer outputs go to `annotations/<scorer>/part-NNNNN.parquet` (extractors: `triples/<name>/`),
numbered like the docs shard they describe. The manifest records each scorer's version; when
it changes, the old outputs are stale and are removed and recomputed.

An `s3://` root is annotated in place through fsspec: each output file is one PUT of the whole
object (a store without rename still replaces an object whole), and the manifest, written last,
commits the set; unit records and logs stay in the local folder `local_state_dir(root)` (under
$ASSAY_CACHE). Corpus-level scorers (dedup), whose stages rename intermediate files, run on a
local mirror of the root and upload their outputs (`assay.corpora.storage`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from assay.corpora import progress, storage
from assay.corpora.atomic import sweep_temporaries, write_json_atomic
from assay.corpora.catalog import ensure_catalog, refresh_catalog
from assay.corpora.manifest import (
    load_manifest,
    local_state_dir,
    require_root,
    save_manifest,
    tool_versions,
)
from assay.pipelines.executor import ExecutorConfig, WorkUnitsFailed, run_units
from assay.scorers.base import check_scored, input_columns, is_extractor
from assay.scorers.registry import make_scorer

_SCORER_CACHE: dict[tuple, Any] = {}  # one model load per worker process, not per shard


def _scorer(spec: str, root: str, settings: dict):
    key = (spec, root, json.dumps(settings, sort_keys=True))
    if key not in _SCORER_CACHE:
        _SCORER_CACHE[key] = make_scorer(spec, root, **settings)
    return _SCORER_CACHE[key]


def is_corpus_level(scorer) -> bool:
    """A scorer whose outputs need the whole corpus (dedup): planned by `assay.pipelines.dedup`."""
    return bool(getattr(scorer, "corpus_level", False))


def parquet_rows(path: Path | str) -> int:
    import pyarrow.parquet as pq

    with storage.open_read(path) as f:
        return pq.ParquetFile(f).metadata.num_rows


def _existing(root: Path | str):
    """`exists(path)` for output files: a local root asks the file system; a URL root lists
    annotations/ and triples/ once (one request per page, not one per shard and scorer)."""
    if not isinstance(root, str):
        return lambda p: p.exists()
    fs, inner = storage.url_fs(root)
    fs.invalidate_cache(inner)  # worker processes wrote since this process last listed
    found = set()
    for sub in ("annotations", "triples"):
        try:
            found.update(fs.find(f"{inner}/{sub}"))
        except FileNotFoundError:
            pass
    prefix = root[: len(root) - len(inner)]  # "s3://"
    return lambda p: p[len(prefix) :] in found


def output_schemas(scorer) -> dict[str, pa.Schema]:
    """Folder name -> schema of every table a scorer writes (an extractor may write several)."""
    schema = scorer.output_schema()
    if isinstance(schema, dict):
        return schema
    if is_extractor(scorer):
        return {scorer.name: schema}
    return {scorer.name: pa.schema([("id", pa.string()), *schema])}


def output_paths(root: Path | str, scorer, part: str) -> dict[str, Path | str]:
    """Output file per folder; URL strings for a URL root."""
    base = storage.sub(storage.as_root(root), "triples" if is_extractor(scorer) else "annotations")
    return {name: storage.sub(base, name, part) for name in output_schemas(scorer)}


def _input_batches(root: Path | str, shard: str, columns: list[str], batch_size: int):
    """Docs batches with the columns a scorer asks for. Columns that other annotation sets hold
    are joined by id: annotation files keep their docs shard's row order, and that is checked,
    so a set written for another docs shard (or a stale one) is an error, not a silent shift."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    remote = isinstance(root, str)
    docs_file = pq.ParquetFile(storage.open_read(storage.sub(root, shard)) if remote else root / shard)
    doc_cols = [c for c in columns if c in docs_file.schema_arrow.names]
    extra = [c for c in columns if c not in doc_cols]
    extra_tables: list[tuple[Path | str, pa.Table]] = []
    if extra:
        if "id" not in doc_cols:
            doc_cols = ["id", *doc_cols]
        part = Path(shard).name
        if remote:
            fs, inner = storage.url_fs(storage.sub(root, "annotations"))
            prefix = root[: len(root) - len(storage.url_fs(root)[1])]
            folders = sorted(prefix + d for d in fs.ls(inner, detail=False)) if fs.exists(inner) else []
        else:
            folders = sorted((root / "annotations").glob("*"))
        for folder in folders:
            f = storage.sub(folder, part) if remote else folder / part
            if storage.exists(f):
                data = storage.url_fs(f)[0].cat_file(storage.url_fs(f)[1]) if remote else None
                names = [
                    c for c in pq.read_schema(pa.BufferReader(data) if remote else f).names if c in extra
                ]
                if names:
                    src = pa.BufferReader(data) if remote else f
                    extra_tables.append((f, pq.read_table(src, columns=["id", *names])))
                    extra = [c for c in extra if c not in names]
        if extra:
            raise ValueError(f"columns {extra} are neither docs columns nor in any annotation set of {shard}")
    offset = 0
    for batch in docs_file.iter_batches(batch_size=batch_size, columns=doc_cols):
        for path, table in extra_tables:
            piece = table.slice(offset, batch.num_rows)
            if (
                piece.num_rows != batch.num_rows
                or not pc.all(
                    pc.equal(piece.column("id"), batch.column(batch.schema.get_field_index("id")))
                ).as_py()
            ):
                folder_name = str(path).rstrip("/").split("/")[-2]
                raise ValueError(
                    f"{path} does not describe {shard} row by row (its ids differ near row {offset}); "
                    f"re-run `assay annotate` for the set {folder_name}"
                )
            for name in table.column_names[1:]:
                batch = batch.append_column(name, piece.column(name).combine_chunks())
        offset += batch.num_rows
        yield batch


def annotate_unit(unit_index: int, unit: dict, root: str, specs: list[str], settings: dict, key: str) -> dict:
    """Score one docs shard with every scorer whose output for it is missing.

    The unit record says, per scorer that ran: documents scored, documents it could not score
    (`errors`, for scorers that count them) and seconds."""
    root_p = storage.as_root(root)
    # unit records stay local for a URL root (under $ASSAY_CACHE, see local_state_dir)
    record_path = local_state_dir(root) / "units" / f"annotate-{key}" / f"u{unit_index:05d}.json"
    if record_path.exists():
        return json.loads(record_path.read_text())
    shard = unit["shard"]
    part = Path(shard).name
    timings, docs, errors = {}, {}, {}
    for spec in specs:
        scorer = _scorer(spec, root, settings)
        outputs = output_paths(root_p, scorer, part)
        if all(storage.exists(p) for p in outputs.values()):
            continue
        if is_corpus_level(scorer):
            raise ValueError(
                f"{scorer.name} is corpus-level and its output for {shard} is missing; rerun annotate"
            )
        started = time.time()
        errors_before = getattr(scorer, "errors", 0)
        pieces: dict[str, list[pa.Table]] = {k: [] for k in outputs}
        n_docs = 0
        done_before = sum(docs.values())
        for batch in _input_batches(
            root_p, shard, list(input_columns(scorer)), settings.get("batch_size") or 2048
        ):
            n_docs += batch.num_rows
            progress.report(done_before + n_docs)
            if is_extractor(scorer):
                result = scorer.extract(batch)
                for k, table in result.items() if isinstance(result, dict) else [(scorer.name, result)]:
                    pieces[k].append(table)
            else:
                scored = check_scored(batch, scorer.score(batch), scorer)
                ids = batch.column(batch.schema.get_field_index("id"))
                pieces[scorer.name].append(pa.Table.from_batches([scored]).add_column(0, "id", ids))
        schemas = output_schemas(scorer)
        for k, path in outputs.items():
            table = pa.concat_tables(pieces[k]) if pieces[k] else schemas[k].empty_table()
            storage.write_table(table, path)
        timings[scorer.name] = round(time.time() - started, 3)
        docs[scorer.name] = n_docs
        errors[scorer.name] = int(getattr(scorer, "errors", 0) - errors_before)
    progress.report(sum(docs.values()), final=True)
    record = {"unit": unit_index, "shard": shard, "docs": docs, "errors": errors, "seconds": timings}
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
    root = storage.as_root(root)
    config = config or ExecutorConfig()
    _SCORER_CACHE.clear()  # a model retrained since the last call in this process must be reloaded
    manifest = load_manifest(require_root(root))
    shards = [s["name"] for s in manifest["shards"]]
    if not shards:
        raise ValueError(f"{root}: the corpus has no docs shards; run `assay ingest` first")
    settings = {"device": device, "batch_size": batch_size}
    scorers = [make_scorer(spec, root, **settings) for spec in specs]
    if isinstance(root, str) and any(is_corpus_level(s) for s in scorers):
        return _annotate_on_mirror(root, specs, config, device, batch_size, quiet)
    stale = []
    for spec, scorer in zip(specs, scorers):
        entry = manifest["annotations"].get(scorer.name)
        if entry and entry["version"] != scorer.version:
            for folder in {_parent(p) for p in output_paths(root, scorer, "x").values()}:
                storage.rmtree(folder)
            stale.append(scorer.name)
            entry = None
        if entry is None:
            manifest["annotations"][scorer.name] = {
                "spec": spec,
                "version": scorer.version,
                "kind": "extractor" if is_extractor(scorer) else "scorer",
                "columns": {k: v.names for k, v in output_schemas(scorer).items()},
                "shards": {},
            }
    save_manifest(root, manifest)
    # only this run's sets: another `assay annotate` on the root may be writing its own temporaries
    # (a URL root has none: its files are written whole, with no temporary name)
    for folder in {_parent(p) for s in scorers for p in output_paths(root, s, "x").values()}:
        if not isinstance(folder, str):
            sweep_temporaries(folder)
    units = [{"shard": s} for s in shards]
    blob = json.dumps([specs, [s.version for s in scorers], shards], sort_keys=True).encode()
    key = hashlib.sha256(blob).hexdigest()[:12]
    state = local_state_dir(root)  # ROOT/.assay, or a local folder for a URL root
    record_dir = state / "units" / f"annotate-{key}"
    # units an interrupted earlier run finished: resumed, not counted again in this run's record
    earlier = frozenset(p.name for p in record_dir.glob("u*.json")) if record_dir.exists() else frozenset()

    def count_done() -> int:
        return len(list(record_dir.glob("u*.json"))) if record_dir.exists() else 0

    started = time.time()
    label = "annotate " + ",".join(s.name for s in scorers)
    corpus_runs: dict[str, dict] = {}
    try:
        # corpus-level scorers first, as their own stages: the per-shard units then find them done
        for spec, scorer in zip(specs, scorers):
            if is_corpus_level(scorer) and _docs_to_score(root, manifest, [scorer]):
                from assay.pipelines.dedup import run_corpus_scorer

                corpus_runs[scorer.name] = run_corpus_scorer(root, spec, scorer, config, batch_size, quiet)
    except WorkUnitsFailed:
        manifest = load_manifest(root)
        manifest["runs"].append(
            _run_record(
                key, started, time.time() - started, config, scorers, record_dir, stale, corpus_runs, earlier
            )
            | {"status": "failed", "units_failed": None}
        )
        save_manifest(root, manifest)
        raise
    to_score = _docs_to_score(root, manifest, scorers)
    if to_score == 0 and not record_dir.exists() and not corpus_runs:  # complete: no executor to start
        ensure_catalog(root)  # an earlier run may have been killed while it refreshed the catalog
        return {
            "scorers": {
                s.name: {"version": s.version, "docs": 0, "seconds": 0.0, "docs_per_s": None, "errors": 0}
                for s in scorers
            },
            "stale_recomputed": stale,
            "docs": 0,
            "errors": 0,
            "seconds": 0.0,
        }
    try:
        seconds = (
            0.0
            if to_score == 0 and not record_dir.exists()
            else run_units(
                "assay.pipelines.annotate:annotate_unit",
                units,
                {"root": str(root), "specs": specs, "settings": settings, "key": key},
                state / "logs" / f"annotate-{key}",
                config,
                count_done,
                label,
                quiet=quiet,
                totals={"docs": to_score},
            )
        )
    except WorkUnitsFailed:
        # the run is recorded as failed (units that did not finish are its errors); rerun resumes
        manifest = load_manifest(root)
        manifest["runs"].append(
            _run_record(
                key, started, time.time() - started, config, scorers, record_dir, stale, corpus_runs, earlier
            )
            | {"status": "failed", "units_failed": len(units) - count_done()}
        )
        save_manifest(root, manifest)
        raise
    manifest = load_manifest(root)
    exists = _existing(root)
    for scorer in scorers:
        entry = manifest["annotations"][scorer.name]
        for s in shards:
            part = Path(s).name
            for sub, f in output_paths(root, scorer, part).items():
                entry_key = part if sub == scorer.name else f"{sub}/{part}"
                if entry_key not in entry["shards"] and exists(f):
                    entry["shards"][entry_key] = {"rows": parquet_rows(f), "sha256": storage.sha256(f)}
    seconds += sum(r["seconds"] for r in corpus_runs.values())
    run = _run_record(key, started, seconds, config, scorers, record_dir, stale, corpus_runs, earlier)
    manifest["runs"].append(run)
    save_manifest(root, manifest)
    shutil.rmtree(record_dir, ignore_errors=True)
    refresh_catalog(root)
    return {k: run[k] for k in ("scorers", "stale_recomputed", "docs", "errors", "seconds")}


def _annotate_on_mirror(
    url: str, specs: list[str], config: ExecutorConfig, device: str, batch_size: int | None, quiet: bool
) -> dict:
    """Corpus-level scorers (dedup) on an `s3://` root: their stages write intermediate files
    and rename them, so they run on a local mirror of the root's docs and annotation sets; the
    new annotation files are then uploaded whole and the manifest, written last, commits them
    (merged with whatever another writer committed meanwhile)."""
    from assay.corpora.storage import begin_mirror, publish_mirror

    mirror, base = begin_mirror(url, ("docs", "annotations"))
    summary = annotate(mirror, specs, config, device, batch_size, quiet)  # killed: resumes on the mirror
    publish_mirror(mirror, url, base)
    refresh_catalog(url)
    return summary


def _parent(path: Path | str) -> Path | str:
    return path.rsplit("/", 1)[0] if isinstance(path, str) else path.parent


def _docs_to_score(root: Path | str, manifest: dict, scorers: list) -> int:
    """Documents x scorers still to score: what the progress bar counts up to."""
    total = 0
    exists = _existing(root)
    for shard in manifest["shards"]:
        part = Path(shard["name"]).name
        missing = sum(not all(exists(p) for p in output_paths(root, s, part).values()) for s in scorers)
        total += shard["rows"] * missing
    return total


def _run_record(
    key,
    started,
    seconds,
    config,
    scorers,
    record_dir: Path,
    stale: list[str],
    corpus_runs: dict | None = None,
    earlier: frozenset[str] = frozenset(),
) -> dict:
    """What this run did, from its unit records: documents scored per scorer, their rate, errors.
    Records in ``earlier`` (units an interrupted run finished) are resumed, not counted again."""
    paths = sorted(record_dir.glob("u*.json")) if record_dir.exists() else []
    records = [json.loads(p.read_text()) for p in paths if p.name not in earlier]
    per_scorer = {}
    for scorer in scorers:
        done = sum(r["docs"].get(scorer.name, 0) for r in records)
        spent = sum(r["seconds"].get(scorer.name, 0.0) for r in records)
        per_scorer[scorer.name] = {
            "version": scorer.version,
            "docs": done,
            "seconds": round(spent, 3),
            "docs_per_s": round(done / spent, 1) if spent and done else None,
            "errors": sum(r["errors"].get(scorer.name, 0) for r in records),
        }
        if scorer.name in (corpus_runs or {}):  # planned in stages of its own (assay.pipelines.dedup)
            c = corpus_runs[scorer.name]
            per_scorer[scorer.name].update(
                docs=c["docs"],
                seconds=c["seconds"],
                docs_per_s=round(c["docs"] / c["seconds"], 1) if c["seconds"] and c["docs"] else None,
                stages=c["stages"],
            )
    return {
        "stage": "annotate",
        "run": key,
        "status": "done",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "seconds": round(seconds, 3),
        "executor": config.kind,
        "workers": config.workers,
        "scorers": per_scorer,
        "stale_recomputed": stale,
        # documents this run scored with at least one scorer (a shard already done counts 0)
        "docs": max(
            sum(max(r["docs"].values(), default=0) for r in records),
            max((c["docs"] for c in (corpus_runs or {}).values()), default=0),
        ),
        "errors": sum(s["errors"] for s in per_scorer.values()),
        "units_resumed": len(earlier),
        "versions": tool_versions(),
    }
