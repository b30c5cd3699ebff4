"""`assay ingest`: plan work units, run them on an executor, publish shards and the manifest."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from assay.corpora.atomic import sweep_temporaries
from assay.corpora.catalog import refresh_catalog
from assay.corpora.ingest import (
    IngestOptions,
    expand_inputs,
    finalize,
    plan_units,
    run_key,
    unit_record_path,
)
from assay.corpora.manifest import load_manifest, save_manifest
from assay.pipelines.executor import ExecutorConfig, run_units


def ingest(
    inputs: list[str],
    root: str | Path,
    options: IngestOptions | None = None,
    config: ExecutorConfig | None = None,
    append: bool = False,
    quiet: bool = False,
) -> dict:
    """Ingest inputs into the corpus root; resumes a killed run with the same inputs and options."""
    root = Path(root)
    options = options or IngestOptions()
    config = config or ExecutorConfig()
    root.mkdir(parents=True, exist_ok=True)
    files = expand_inputs(inputs)
    units = plan_units(files, options)
    key = run_key(units, options)
    manifest = load_manifest(root)
    done_runs = {r.get("run") for r in manifest["runs"] if r.get("stage") == "ingest"}
    if key in done_runs:
        return {"already_done": True, "run": key, **_totals_for(manifest, key)}
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

    run_units(
        "assay.corpora.ingest:ingest_unit_task",
        units,
        {"root": str(root), "key": key, "options": asdict(options)},
        root / ".assay" / "logs" / f"ingest-{key}",
        config,
        count_done,
        "ingest",
        quiet=quiet,
    )
    seconds = time.time() - started
    run_info = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "seconds": round(seconds, 3),
        "executor": config.kind,
        "workers": config.workers,
        "inputs": files,
        "options": asdict(options),
    }
    summary = finalize(root, key, units, options, run_info)
    manifest = load_manifest(root)
    run = manifest["runs"][-1]
    run["seconds_total"] = round(time.time() - started, 3)
    run["docs_per_s"] = round(summary["docs"] / max(run["seconds_total"], 1e-9), 1)
    run["errors"] = 0
    save_manifest(root, manifest)
    refresh_catalog(root)
    return {"already_done": False, "run": key, **summary, "seconds": run["seconds_total"]}


def _totals_for(manifest: dict, key: str) -> dict:
    run = next(r for r in manifest["runs"] if r.get("run") == key)
    inputs = [i for i in manifest["inputs"] if i["path"] in set(run.get("inputs", []))]
    return {
        "inputs": inputs,
        "records_read": run["records_read"],
        "docs": run["docs"],
        "quarantined": run["quarantined"],
    }
