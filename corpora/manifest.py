"""manifest.json: what a corpus root holds (shards, checksums, annotation versions, runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from assay.corpora.atomic import write_json_atomic

FORMAT = "assay-corpus/1"


def manifest_path(root: str | Path) -> Path:
    return Path(root) / "manifest.json"


def load_manifest(root: str | Path) -> dict[str, Any]:
    path = manifest_path(root)
    if not path.exists():
        return {"format": FORMAT, "inputs": [], "shards": [], "quarantine": [], "annotations": {}, "runs": []}
    with open(path) as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not an Assay corpus manifest (format {manifest.get('format')!r})")
    return manifest


def require_root(root: str | Path) -> Path:
    """The root as a Path, or a clear error when the folder is not a corpus root."""
    if not manifest_path(root).exists():
        raise FileNotFoundError(
            f"{root}: not a corpus root (no manifest.json); create one with `assay ingest INPUTS --root {root}`"
        )
    return Path(root)


def save_manifest(root: str | Path, manifest: dict[str, Any]) -> None:
    write_json_atomic(manifest_path(root), manifest)


def tool_versions() -> dict[str, str]:
    """Versions recorded with every run, so a result can be traced to the code that made it."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("assay", "datatrove", "pyarrow", "duckdb", "polars"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out
