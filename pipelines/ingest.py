"""`assay ingest`: plan work units, run them on an executor, publish shards and the manifest."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from assay.corpora.atomic import disk_full_is_clear, sweep_temporaries
from assay.corpora.catalog import ensure_catalog, refresh_catalog
from assay.corpora.ingest import IngestOptions, finalize, plan_units, run_key, unit_record_path
from assay.corpora.inputs import expand_inputs
from assay.corpora.manifest import load_manifest, save_manifest
from assay.corpora.storage import is_url
from assay.pipelines.executor import ExecutorConfig, WorkUnitsFailed, run_units


def ingest(
    inputs: list[str],
    root: str | Path,
    options: IngestOptions | None = None,
    config: ExecutorConfig | None = None,
    append: bool = False,
    quiet: bool = False,
) -> dict:
    """Ingest inputs into the corpus root; resumes a killed run with the same inputs and options.

    The summary lists, per input, records read = docs + quarantined, and under `skipped` the
    files that folders or globs matched but Assay cannot read. A full disk is one DiskFull line;
    freeing space and calling again resumes.
    """
    if is_url(root):
        return _ingest_to_url(inputs, str(root).rstrip("/"), options, config, append, quiet)
    with disk_full_is_clear(root):
        return _ingest(inputs, Path(root), options, config, append, quiet)


def _ingest_to_url(
    inputs: list[str],
    url: str,
    options: IngestOptions | None,
    config: ExecutorConfig | None,
    append: bool,
    quiet: bool,
) -> dict:
    """Ingest into an `s3://` root. Staging needs renames, which an object store lacks, so the
    run happens on a local mirror of the root (its docs shards, for the duplicate-id check of
    `--append`); the new shards are then uploaded, each one whole PUT, and the manifest written
    last commits them: a reader of the root sees the corpus before the run or after it.

    A killed run resumes: the mirror keeps its staging and unit records, and a run that finished
    locally but was killed while uploading is published by the next call, not ingested again
    (both as long as nobody committed to the root in between; else the run starts afresh)."""
    from assay.corpora.storage import begin_mirror, publish_mirror

    mirror, base = begin_mirror(url, ("docs",), fresh_ok=True)
    with disk_full_is_clear(mirror), _errors_name(mirror, url):
        # a failed run publishes nothing: its record stays on the mirror with the staging it resumes
        summary = _ingest(inputs, mirror, options, config, append, quiet, catalog=False)
        publish_mirror(mirror, url, base)
    refresh_catalog(url)
    return summary


def _ingest(
    inputs: list[str],
    root: Path,
    options: IngestOptions | None,
    config: ExecutorConfig | None,
    append: bool,
    quiet: bool,
    catalog: bool = True,
) -> dict:
    options = options or IngestOptions()
    config = config or ExecutorConfig()
    found = expand_inputs(inputs, options.id_prefix)
    files = [f.path for f in found.files]
    if (config.workers > 1 or config.kind != "local") and any(f.startswith("memory://") for f in files):
        # fsspec's memory filesystem lives in this process; worker processes see it empty
        raise ValueError("memory:// inputs can only be read with --executor local --workers 1")
    units = plan_units(found.files, options)
    key = run_key(units, options)
    root.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(root)
    done_runs = {r.get("run") for r in manifest["runs"] if r.get("stage") == "ingest" and _finished(r)}
    if key in done_runs:
        if catalog:
            ensure_catalog(root)  # the run may have been killed while it refreshed the catalog
        return {"already_done": True, "run": key, **_totals_for(manifest, key), "skipped": found.skipped}
    pending = sorted((root / "docs" / ".staging").glob("*")) if (root / "docs" / ".staging").exists() else []
    if manifest["shards"] and not append and not any(p.name == key for p in pending):
        raise ValueError(
            f"{root} already holds a corpus from other inputs; use a new --root, or --append to add these inputs"
        )
    sweep_temporaries(root)
    started = time.time()
    record_dir = unit_record_path(root, key, 0).parent

    def count_done() -> int:
        return len(list(record_dir.glob("u*.json"))) if record_dir.exists() else 0

    _share_bytes(units)
    pending_bytes = sum(
        u["bytes_share"] for i, u in enumerate(units) if not unit_record_path(root, key, i).exists()
    )
    try:
        run_units(
            "assay.corpora.ingest:ingest_unit_task",
            units,
            {"root": str(root), "key": key, "options": asdict(options)},
            root / ".assay" / "logs" / f"ingest-{key}",
            config,
            count_done,
            "ingest",
            quiet=quiet,
            totals={"bytes": pending_bytes},
        )
    except WorkUnitsFailed:
        # recorded as a failed run (its unfinished units are its errors); rerunning resumes it
        manifest = load_manifest(root)
        manifest["runs"].append(
            {
                "stage": "ingest",
                "run": key,
                "status": "failed",
                "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
                "seconds": round(time.time() - started, 3),
                "errors": len(units) - count_done(),
            }
        )
        save_manifest(root, manifest)
        raise
    seconds = time.time() - started
    run_info = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "seconds": round(seconds, 3),
        "executor": config.kind,
        "workers": config.workers,
        "inputs": files,
        "skipped": found.skipped,
        "options": asdict(options),
    }
    summary = finalize(root, key, units, options, run_info)
    manifest = load_manifest(root)
    run = manifest["runs"][-1]
    run["seconds_total"] = round(time.time() - started, 3)
    run["docs_per_s"] = round(summary["docs"] / max(run["seconds_total"], 1e-9), 1)
    run["errors"] = len(units) - count_done()  # 0: finalize needs every unit
    save_manifest(root, manifest)
    if catalog:
        refresh_catalog(root)
    return {
        "already_done": False,
        "run": key,
        **summary,
        "skipped": found.skipped,
        "seconds": run["seconds_total"],
    }


@contextmanager
def _errors_name(mirror: Path, url: str):
    """A user error raised on the mirror names the root the user gave, not the local copy."""
    try:
        yield
    except (ValueError, FileNotFoundError) as exc:
        if str(mirror) not in str(exc):
            raise
        raise type(exc)(str(exc).replace(str(mirror), url)) from None


def _totals_for(manifest: dict, key: str) -> dict:
    run = next(r for r in manifest["runs"] if r.get("run") == key and _finished(r))
    inputs = [i for i in manifest["inputs"] if i["path"] in set(run.get("inputs", []))]
    return {
        "inputs": inputs,
        "records_read": run["records_read"],
        "docs": run["docs"],
        "quarantined": run["quarantined"],
    }


def _share_bytes(units: list[dict]) -> None:
    """Each unit's part of its file's bytes (a Parquet file split by row groups shares its size,
    a JSONL byte range has its length), so the progress bar's bytes add up to the inputs' size."""
    per_path: dict[str, int] = {}
    for u in units:
        per_path[u["path"]] = per_path.get(u["path"], 0) + 1
    for u in units:
        if "byte_range" in u:
            u["bytes_share"] = u["byte_range"][1] - u["byte_range"][0]
        else:
            u["bytes_share"] = int(u.get("bytes", 0)) // per_path[u["path"]]


def _finished(run: dict) -> bool:
    return run.get("status", "done") == "done"
