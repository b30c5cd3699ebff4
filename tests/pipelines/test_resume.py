"""kill -9 in the middle of ingest / annotate, rerun, and get exactly the uninterrupted result."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from assay.corpora.manifest import load_manifest
from assay.pipelines.annotate import annotate
from assay.pipelines.ingest import ingest

N_FILES = 120


@pytest.fixture(scope="module")
def many_inputs(tmp_path_factory) -> Path:
    """Real text (sample speeches) spread over many small files: many work units."""
    src = tmp_path_factory.mktemp("inputs")
    records = [json.loads(line) for line in gzip.open(REPO / "sample/speeches/state_union.jsonl.gz")]
    for i in range(N_FILES):
        chunk = records[i * 4 : i * 4 + 4] or records[:4]
        (src / f"part{i:03d}.jsonl").write_text(
            "".join(json.dumps({**r, "id": f"{i}-{r['id']}"}) + "\n" for r in chunk)
        )
    return src


def _run_and_kill(args: list[str], marker_dir: Path, pattern: str, after: int) -> None:
    """Start the CLI in its own process group and SIGKILL the group once `after` units are done."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "assay.pipelines.cli", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            done = len(list(marker_dir.glob(pattern))) if marker_dir.exists() else 0
            if done >= after:
                os.killpg(proc.pid, signal.SIGKILL)
                break
            if proc.poll() is not None:
                pytest.fail("the run finished before it could be killed; make the workload bigger")
            time.sleep(0.01)
        else:
            pytest.fail("the run made no progress")
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _published(root: Path) -> list[tuple[str, int, str]]:
    return [(s["name"], s["rows"], s["sha256"]) for s in load_manifest(root)["shards"]]


def test_ingest_killed_then_resumed_equals_uninterrupted(tmp_path, many_inputs):
    clean = tmp_path / "clean"
    ingest([str(many_inputs)], clean, quiet=True)

    root = tmp_path / "killed"
    _run_and_kill(
        ["ingest", str(many_inputs), "--root", str(root)], root / ".assay" / "units", "*/u*.json", 10
    )
    assert not (root / "manifest.json").exists() or not load_manifest(root)["shards"]
    summary = ingest([str(many_inputs)], root, quiet=True)
    assert summary["docs"] == sum(r for _, r, _ in _published(clean))
    assert _published(root) == _published(clean)
    assert not list(root.rglob("*.tmp-assay"))
    assert not (root / "docs" / ".staging").exists()


def test_annotate_killed_then_resumed_equals_uninterrupted(tmp_path, many_inputs):
    roots = {}
    for name in ("clean", "killed"):
        roots[name] = tmp_path / name
        ingest([str(many_inputs)], roots[name], quiet=True)
    annotate(roots["clean"], ["stats"], quiet=True)

    root = roots["killed"]
    _run_and_kill(
        ["annotate", "--root", str(root), "--scorer", "stats"],
        root / "annotations" / "stats",
        "part-*.parquet",
        10,
    )
    import pyarrow.parquet as pq

    before = sum(
        pq.read_metadata(f).num_rows for f in (root / "annotations" / "stats").glob("part-*.parquet")
    )
    summary = annotate(root, ["stats"], quiet=True)
    # the rerun's record counts what it scored, not the units the killed run had finished
    total = sum(s["rows"] for s in load_manifest(root)["shards"])
    assert 0 < before < total and summary["docs"] == total - before
    clean_sets = load_manifest(roots["clean"])["annotations"]["stats"]["shards"]
    resumed_sets = load_manifest(root)["annotations"]["stats"]["shards"]
    assert resumed_sets == clean_sets and len(resumed_sets) == N_FILES
    assert not list(root.rglob("*.tmp-assay"))
