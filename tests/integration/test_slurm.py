"""`--executor slurm` against a real single-node Slurm on 127.0.0.1 (started by conftest).

The job array runs every unit at once (no `%1` throttle), the jobs import the installed
`assay`, outputs are byte-identical to the local executor, a failed array task ends the
command with one line naming its log, and the rerun submits only the failed unit."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
from conftest import SCORERS, digests, listening_off_loopback, run_cli, run_pipeline

pytestmark = pytest.mark.integration


def slurm_args(cluster: dict, *extra: str) -> list[str]:
    opts = [
        f"partition={cluster['partition']}",
        "time=00:10:00",
        "poll_seconds=1",
        "mem_per_cpu_gb=1",
        *extra,
    ]
    return ["--executor", "slurm", "--workers", "0", *(a for o in opts for a in ("--executor-opt", o))]


def test_slurm_outputs_match_local_byte_for_byte(slurm_cluster, reference, tmp_path):
    root, cwd = tmp_path / "root", reference["inputs"].parent  # input keys are relative to the cwd
    seconds = run_pipeline(root, reference["inputs"], slurm_args(slurm_cluster), slurm_cluster["env"], cwd)
    assert digests(root) == reference["digests"]
    runs = json.loads((root / "manifest.json").read_text())["runs"]
    assert {r["stage"]: r["executor"] for r in runs} == {"ingest": "slurm", "annotate": "slurm"}
    # one array of 4 tasks with no concurrency cap, and no stats job left waiting on it
    script = next(root.glob(".assay/logs/annotate-*/launch_script.slurm")).read_text()
    assert re.search(r"^#SBATCH --array=0-3$", script, re.M), script
    queue = run_cli_raw(["squeue", "-h", "-t", "PENDING,RUNNING"], slurm_cluster["env"])
    assert queue.strip() == ""
    assert listening_off_loopback(slurm_cluster["pids"]) == []
    print(f"slurm {seconds}, local {reference['seconds']}")


def run_cli_raw(args: list[str], env: dict) -> str:
    import subprocess

    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60).stdout


def test_slurm_failed_task_is_reported_and_rerun_alone(slurm_cluster, reference, tmp_path):
    env, root, cwd = slurm_cluster["env"], tmp_path / "root", reference["inputs"].parent
    shutil.copytree(reference["ingested"], root)  # ingest on Slurm is the test above
    # one docs shard made unreadable: its annotate unit fails, the other three finish
    shard = root / "docs" / "part-00002.parquet"
    good = shard.read_bytes()
    shard.write_bytes(b"not a parquet file" * 100)
    scorers = [a for s in SCORERS for a in ("--scorer", s)]
    args = ["annotate", "--root", str(root), *scorers, *slurm_args(slurm_cluster)]
    t = time.time()
    res = run_cli(args, env, cwd)
    failed_after = time.time() - t
    assert res.returncode != 0
    lines = [line for line in res.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    line = lines[0]
    assert "1 of 4 work units did not finish (unit 2:" in line, line
    m = re.search(r"Slurm task (\d+_\d+) \(unit 2\) FAILED, log: (\S+\.out);", line)
    assert m, line
    assert "not a parquet file" in Path(m.group(2)).read_text()  # the task's own error is in its log
    records = {p.name for p in root.glob(".assay/units/annotate-*/u*.json")}
    assert records == {"u00000.json", "u00001.json", "u00003.json"}

    shard.write_bytes(good)
    res = run_cli(args, env, cwd)
    assert res.returncode == 0, res.stdout[-1000:] + res.stderr[-2000:]
    rerun = sorted(p.name for p in root.glob(".assay/logs/annotate-*/started/u*.json"))
    print(f"failure reported after {failed_after:.1f} s; rerun started {rerun}")
    assert rerun == ["u00002.json"]
    assert digests(root, mixture=False) == reference["corpus_digests"]


def test_slurm_wait_timeout_cancels_and_says_so(slurm_cluster, reference, tmp_path):
    env, root = slurm_cluster["env"], tmp_path / "root"
    # a wait shorter than any job: the command must stop waiting, cancel the array and say why
    args = [
        "ingest",
        str(reference["inputs"]),
        "--root",
        str(root),
        *slurm_args(slurm_cluster, "wait_timeout=1"),
    ]
    t = time.time()
    res = run_cli(args, env, tmp_path)
    assert res.returncode != 0 and time.time() - t < 60
    lines = [line for line in res.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "wait_timeout=1 s; cancelled" in lines[0], res.stderr
    time.sleep(1)
    assert run_cli_raw(["squeue", "-h", "-t", "PENDING,RUNNING"], env).strip() == ""
