"""`--executor ray` against a real 2-worker Ray cluster on 127.0.0.1 (started by conftest).

Ingest, annotate (stats + heuristics) and select give the same bytes as the local executor; a
worker killed with SIGKILL in the middle of a unit fails the run with one line, and the rerun
starts only the units that had not finished."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import SCORERS, VENV_BIN, digests, listening_off_loopback, run_cli, run_pipeline

pytestmark = pytest.mark.integration

RAY = ["--executor", "ray", "--workers", "2", "--executor-opt", "mem_per_cpu_gb=1"]


def test_ray_outputs_match_local_byte_for_byte(ray_cluster, reference, tmp_path):
    root = tmp_path / "root"
    # a relative --root: workers run in another directory and must still write here. The same
    # working directory as the reference: an input's manifest key is its path relative to it.
    cwd = reference["inputs"].parent
    seconds = run_pipeline(
        Path(os.path.relpath(root, cwd)), reference["inputs"], RAY, ray_cluster["env"], cwd
    )
    got = digests(root)
    assert set(got) == set(reference["digests"])
    assert len([k for k in got if k.startswith("annotations/")]) == 4 * len(SCORERS)
    assert got == reference["digests"]
    runs = json.loads((root / "manifest.json").read_text())["runs"]
    assert {r["stage"]: r["executor"] for r in runs} == {"ingest": "ray", "annotate": "ray"}
    assert listening_off_loopback(ray_cluster["pids"]()) == []
    print(f"ray {seconds}, local {reference['seconds']}")


def _unit_records(root: Path) -> set[str]:
    return {p.name for p in root.glob(".assay/units/annotate-*/u*.json")}


def test_ray_rerun_after_killed_worker_runs_only_missing_units(ray_cluster, reference, tmp_path):
    env = ray_cluster["env"]
    root = tmp_path / "root"
    cwd = reference["inputs"].parent  # input keys are relative to it, as in the reference
    shutil.copytree(reference["ingested"], root)  # ingest on Ray is the test above
    scorers = [a for s in SCORERS for a in ("--scorer", s)]
    # retries=0: Ray would otherwise rerun the killed unit itself, inside this same run
    args = ["annotate", "--root", str(root), *scorers, *RAY, "--executor-opt", "retries=0"]
    proc = subprocess.Popen(
        [str(VENV_BIN / "assay"), *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed = None
    deadline = time.time() + 120
    while killed is None and time.time() < deadline and proc.poll() is None:
        for started in root.glob(".assay/logs/annotate-*/started/u*.json"):
            try:
                record = json.loads(started.read_text())
            except ValueError:
                continue
            # still running (a finished unit adds its seconds, then its record): kill its worker
            if "seconds" not in record and started.name not in _unit_records(root):
                os.kill(record["pid"], signal.SIGKILL)
                killed = record["unit"]
                break
        time.sleep(0.05)
    out, err = proc.communicate(timeout=180)
    assert killed is not None, "no unit was seen running"
    assert proc.returncode != 0, out + err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "work units did not finish" in lines[0] and "WorkerCrashedError" in lines[0], (
        err
    )
    done_first = _unit_records(root)
    assert f"u{killed:05d}.json" not in done_first
    missing = 4 - len(done_first)
    assert missing >= 1

    res = run_cli(["annotate", "--root", str(root), *scorers, *RAY], env, cwd)
    assert res.returncode == 0, res.stderr[-2000:]
    rerun = sorted(p.name for p in root.glob(".assay/logs/annotate-*/started/u*.json"))
    print(f"killed unit {killed}; first run finished {len(done_first)}/4; rerun started {rerun}")
    assert len(rerun) == missing and f"u{killed:05d}.json" in rerun
    assert not set(rerun) & done_first
    assert digests(root, mixture=False) == reference["corpus_digests"]
